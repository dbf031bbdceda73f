// daemon/redis/tier.h — the Redis tier as the daemon sees it: one object that
// owns the data link, the write-behind queue, the read-through, the atomic
// operations and the invalidation listener, and wires them together:
//
//   - every local write (set/del/touch/clear) is queued and makes an
//     in-flight read-through of the key stale (a read never installs a value
//     older than this host's own write);
//   - an invalidation from another host drops the local entry, makes the
//     in-flight read stale and wakes lease waiters of the key;
//   - when invalidations stop, in-flight reads go stale and the table is
//     served for redis_stale_grace_ms, then suspended; when they start again
//     the repair (repair.h) drops the slots written meanwhile (drop_slots),
//     or everything (drop_all) when it cannot prove what changed;
//   - with Sentinel (sentinel.h), both links ask it for the master before
//     every attempt, and a link left on an old master is closed when the
//     Sentinels name a new one (so both end on one server);
//   - with Redis Cluster (redis_cluster = auto or on, cluster.h), a control
//     link asks the seeds (redis_url's node, redis_cluster_seeds, then the
//     masters known) INFO cluster and the slot map; on a cluster node every
//     call goes to a Cluster of one Tier per master (the operations queued
//     meanwhile are handed to it), else the tier runs on its own links. Until
//     the seed answered, writes queue and reads miss, as with Redis down.
//
// The tier never touches the table: the daemon gives it TableHooks. What the
// engine calls is TierApi (tier_api.h, the seam a fake tier implements in the
// engine's tests); the rest (start, shutdown, set_password, the parts) is for
// main.cc and the tier's own tests. All calls and callbacks run on the loop
// thread. See daemon/redis/README.md for where each call hooks into the daemon.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "redis/atomics.h"
#include "redis/cluster.h"
#include "redis/config.h"
#include "redis/invalidation.h"
#include "redis/link.h"
#include "redis/read_through.h"
#include "redis/repair.h"
#include "redis/scripts.h"
#include "redis/sentinel.h"
#include "redis/tier_api.h"
#include "redis/write_behind.h"

namespace nearcache::redis {

class Tier final : public TierApi {
 public:
  // Validates cfg (see config.h); nullptr with *err set when it is wrong.
  static std::unique_ptr<Tier> create(uv_loop_t* loop, const Config& cfg, TableHooks hooks, std::string* err);
  ~Tier() override;

  void start();
  // SIGTERM: flushes the queue for at most drain_timeout_ms, then closes both
  // links; done(operations that did not reach Redis) runs when every handle is
  // closed (the Tier may then be destroyed).
  void shutdown(std::function<void(uint64_t left)> done);
  // The same with an explicit deadline (CLOCK_MONOTONIC ms).
  void shutdown_until(uint64_t deadline_ms, std::function<void(uint64_t left)> done);

  // ---- after the local table applied a write (the reply may go out at once)
  Enqueued set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
               uint64_t item_id) override;
  Enqueued fill(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, uint64_t item_id,
                int64_t expected) override;
  int64_t fill_base(std::string_view key) override;
  Enqueued del(std::string_view key) override;
  Enqueued touch(std::string_view key, uint64_t expiry_ms) override;
  Enqueued clear(std::string_view prefix) override;
  Enqueued clear_match(std::string_view pattern) override;

  // ---- a local miss (GET, GET_MANY per key, LEASE before taking a lease)
  Lookup get(std::string_view key, Fetched* now, FetchFn done) override;

  // ---- decided in Redis; false = Redis unreachable now: apply down_policy()
  bool add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) override;
  bool incr(std::string_view key, __int128 delta, AtomicFn cb) override;
  bool lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb) override;
  bool release(std::string_view key, uint64_t token, AtomicFn cb) override;
  bool replace(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) override;
  bool pttl(std::string_view key, AtomicFn cb) override;
  bool lock(LockOp op, std::string_view name, std::string_view token, uint64_t ms, uint64_t max_ms,
            AtomicFn cb) override;
  uint64_t wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms, AtomicFn cb) override;
  void cancel_wait(uint64_t id) override;

  // redis_password_file changed (SIGHUP): both links use it from their next connection.
  void set_password(const std::string& password);
  // SIGHUP with Sentinel: reads redis_sentinel_password_file (`path`) again,
  // used from the next connection to a Sentinel; false + *err (the previous
  // password stays) when it does not load. Without Sentinel: true.
  bool reload_sentinel_password(const std::string& path, std::string* err);
  // SIGHUP: reads the redis_tls_* certificate and key files again (rediss://
  // only); both links use them from their next connection. false + *err
  // (the previous ones stay) when they do not load.
  bool reload_tls(std::string* err);
  // New TLS context for every link (reload_tls, the cluster's parts).
  void set_tls(std::shared_ptr<const TlsClient> tls);
  // The TLS context the redis_tls_* options describe.
  static std::shared_ptr<const TlsClient> tls_client(const Config& cfg, std::string* err);

  // Warm restart on a Redis Cluster (the daemon, before start()): handed to
  // the cluster when the seed says cluster (cluster.h, Cluster::set_restart).
  void set_cluster_restart(ClusterRestart r) { cluster_restart_ = std::move(r); }

  // ---- the rest of TierApi (tier_api.h)
  void wake_lease_waiters(std::string_view key) override;
  void note_local_decision() override { local_decisions_++; }
  TierStatus status() const override;
  const Config& config() const override { return cfg_; }

  // The parts, for tests and for the daemon's finer needs.
  Link& data() { return *link_; }
  Invalidation& invalidation() { return *inval_; }
  WriteBehind& queue() { return *queue_; }
  ReadThrough& reads() { return *reads_; }
  Atomics& atomics() { return *atomics_; }
  Repair& repair() { return *repair_; }
  Sentinels* sentinels() { return sentinels_.get(); }  // nullptr without Sentinel
  Cluster* cluster() { return cluster_.get(); }         // nullptr unless on a Redis Cluster

 private:
  // A cluster's part (cluster.h): its master's slots, and the data link's error replies.
  struct PartOf {
    std::function<std::vector<bool>()> owned_slots;
    std::function<void(std::string_view error)> error_reply;
  };
  Tier(uv_loop_t* loop, const Config& cfg, const Endpoint& ep, TableHooks hooks, std::unique_ptr<Sentinels> s,
       PartOf part = {});
  void make_control(const std::vector<HostPort>& seeds);
  void read_map(Link& l, Link::Done done);
  void cluster_found(const SlotMap& map);
  std::unique_ptr<Tier> make_part(const HostPort& m, int home_slot, TableHooks hooks);
  void drop_all(const char* why);
  void master_moved(const HostPort& m, bool from_switch);

  uv_loop_t* loop_;
  Config cfg_;
  Endpoint ep_;
  TableHooks hooks_;
  std::unique_ptr<Sentinels> sentinels_;  // before the links: they ask it
  std::unique_ptr<Link> link_;
  std::unique_ptr<Scripts> scripts_;
  std::unique_ptr<WriteBehind> queue_;
  std::unique_ptr<ReadThrough> reads_;
  std::unique_ptr<Atomics> atomics_;
  std::unique_ptr<Invalidation> inval_;
  std::unique_ptr<Repair> repair_;
  // Redis Cluster: the control link (seeds, slot maps) and, once found, the cluster.
  std::unique_ptr<Link> control_;
  std::vector<HostPort> seeds_;
  size_t next_seed_ = 0;
  bool deciding_ = false;  // the control link has not said single server or cluster yet
  bool control_closing_ = false, control_closed_ = false;  // one server: the control link is closed
  std::function<void()> control_wait_;                    // shutdown waiting for that close
  std::shared_ptr<const TlsClient> tls_;
  std::unique_ptr<Cluster> cluster_;
  ClusterRestart cluster_restart_;
  uint64_t local_flushes_ = 0, local_decisions_ = 0;
  bool started_ = false, closing_ = false;
};

}  // namespace nearcache::redis
