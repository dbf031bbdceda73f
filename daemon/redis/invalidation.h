// daemon/redis/invalidation.h — other hosts' writes remove keys from this
// host's table.
//
// Mechanism: CLIENT TRACKING on the data connection, in BCAST mode for the
// key prefix, with NOLOOP and REDIRECT to a second connection of our own that
// is SUBSCRIBEd to __redis__:invalidate (RESP2: hiredis 0.14 has no RESP3).
// Redis then sends every change to a key under the prefix — SET, DEL,
// UNLINK, EXPIRE, expiry, eviction, FLUSHDB (as a null: flush-all) — made by
// any other connection, with NOLOOP leaving out those made on our own data
// connection, where all of this host's writes go.
//
// Why not keyspace notifications (notify-keyspace-events + PSUBSCRIBE
// __keyspace@db__:prefix*): they need a server setting the operator may not
// control (and that other applications would also pay for), they cannot leave
// out this host's own writes (each would evict the fresh value it just
// wrote), and Redis sends one message per event instead of batching keys.
// Tracking needs Redis 6 or later.
//
// Coherence: coherent() is true while tracking is known to be in effect:
// both connections up, CLIENT TRACKING acknowledged for the current pair,
// and the heartbeat healthy (the data connection PUBLISHes to a private
// channel the invalidation connection also subscribes to, every
// heartbeat_ms; nothing heard for 3 periods = the invalidation path is
// broken, e.g. a half-open TCP connection, and that connection is
// restarted). on_lost() is called whenever coherence ends (invalidations may
// have been missed for any key), on_coherent() whenever it (re)starts; what
// the table does about the gap is the repair's (repair.h).
//
// fence(cb): a message published on the data connection now, cb(true) once
// it arrived on the invalidation connection: every invalidation Redis sent
// before it has been handled. cb(false) when coherence ends first.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "redis/config.h"
#include "redis/link.h"

namespace nearcache::redis {

struct InvalidationStats {
  uint64_t keys_total = 0;        // invalidated keys received (under the prefix)
  uint64_t flush_all_total = 0;   // flush-all messages (FLUSHDB/FLUSHALL)
  uint64_t lost_total = 0;        // times coherence was lost
  uint64_t established_total = 0; // times tracking was (re)established
  uint64_t heartbeat_misses_total = 0;
  bool coherent = false;
};

class Invalidation {
 public:
  struct Handlers {
    std::function<void(std::string_view key)> key;     // a local key (prefix removed)
    std::function<void()> flush_all;                   // everything under the prefix
    std::function<void(const std::string& why)> lost;  // coherence ended
    std::function<void()> coherent;                    // coherence (re)started
  };

  // `data` is the connection whose writes must not come back (NOLOOP) and on
  // which tracking is enabled; Invalidation makes its own subscriber link to `ep`.
  Invalidation(uv_loop_t* loop, Link* data, const Endpoint& ep, const Config& cfg, Handlers h);
  ~Invalidation();
  Invalidation(const Invalidation&) = delete;
  Invalidation& operator=(const Invalidation&) = delete;

  void start();
  void close(std::function<void()> closed);

  bool coherent() const { return coherent_; }
  void fence(std::function<void(bool ok)> cb);
  InvalidationStats stats() const;
  Link& link() { return *sub_; }
  const Link& link() const { return *sub_; }

 private:
  void on_message(const struct redisReply* m);
  void try_track();
  void lose(const std::string& why);
  static void on_beat(uv_timer_t* t);

  uv_loop_t* loop_;
  Link* data_;
  Config cfg_;
  Handlers h_;
  std::unique_ptr<Link> sub_;
  std::string hb_channel_;
  long long sub_id_ = -1;              // CLIENT ID of the subscriber connection
  bool sub_ready_ = false;
  bool coherent_ = false;
  bool tracking_sent_ = false;         // CLIENT TRACKING in flight
  uint64_t tracked_data_gen_ = 0;      // data connection on which tracking is on (0 = none)
  uint64_t tracked_sub_gen_ = 0;
  uint64_t last_beat_ = 0;
  int data_up_id_, data_down_id_;
  uv_timer_t beat_;
  std::function<void()> closed_;
  int closing_ = 0;
  std::string last_error_;
  InvalidationStats st_;
  size_t confirmations_ = 0;
  Link::Done setup_done_;
  uint64_t next_fence_ = 1;
  std::unordered_map<uint64_t, std::function<void(bool)>> fences_;
  void fail_fences();
};

}  // namespace nearcache::redis
