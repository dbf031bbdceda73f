// daemon/engine/engine.h — the dispatcher: decodes request frames from a Session,
// executes them against the table (shm::Writer), the leases and the pending
// clears, and appends replies to the Session (through protocol/reply.h). It
// does no I/O; the server (server.h) moves bytes and runs its timers, and
// tests and the fuzzer drive it directly.
//
// engine.cc has the ops, engine_redis.cc what they do with the Redis tier,
// which the engine sees only as redis::TierApi (redis/tier_api.h); the
// requests waiting for Redis and the write tracking are RedisWaits
// (redis_waits.h).
//
// Single-threaded: everything runs on the loop thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <msgpack.hpp>

#include "engine/hit_window.h"
#include "engine/key_stats.h"
#include "engine/leases.h"
#include "engine/locks.h"
#include "engine/redis_waits.h"
#include "protocol/metrics.h"
#include "config/options.h"
#include "protocol/protocol.h"
#include "protocol/session.h"

namespace nearcache::shm {
class Writer;
class HitSource;
class Reader;
class TableView;
struct Item;
}

namespace nearcache::daemon {

struct EngineHooks {
  std::function<void(Session*)> dirty;     // the session has replies to send
  std::function<void()> work_pending;      // clears are pending: call clear_work() soon
  std::function<void()> deadlines_changed; // re-arm the timer for next_deadline()
  // A session's blocking request (Session::blocked) completed: call feed() on
  // it soon (from the loop, not from inside the Redis callback).
  std::function<void(Session*)> resume;
};

// Counters the server keeps and STATUS shows.
struct ServerCounters {
  uint64_t connections_total = 0, refused_total = 0, slow_clients_total = 0;
  uint64_t bytes_received_total = 0, bytes_sent_total = 0;
  double loop_lag_max_ms = 0;
};

class Engine {
 public:
  Engine(shm::Writer* writer, const Config& cfg, EngineHooks hooks = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void set_hooks(EngineHooks hooks) { hooks_ = std::move(hooks); }
  // How HITS takes the file descriptor the session's peer sent (SCM_RIGHTS)
  // that nothing claimed yet: -1 when there is none; the caller then owns it.
  void set_fd_source(std::function<int(Session*)> take_fd) { take_fd_ = std::move(take_fd); }
  // The Redis tier (daemon/redis/README.md; redis::Tier, or a fake in tests):
  // nullptr = none. Create it with table_hooks(), which act on this engine's table.
  void set_tier(redis::TierApi* tier);
  redis::TierApi* tier() const { return tier_; }
  redis::TableHooks table_hooks();
  // Applies the reloadable limits of `cfg` (max_ttl_ms, max_outstanding, ...).
  void configure(const Config& cfg);
  const Config& config() const { return cfg_; }

  // Sessions are registered while connected; detach() ends their leases and waits.
  void attach(Session* s);
  void detach(Session* s);
  Session* session(uint64_t id) const;
  const std::unordered_map<uint64_t, Session*>& sessions() const { return sessions_; }

  // Executes every complete frame in s->in; stops at a framing error (after
  // its reply, with s->closing set), when s->closing/kill is set, or when a
  // request blocks the session (s->blocked; hooks.resume says when to go on).
  void feed(Session* s);
  // Answers [nil, code, message] and marks the session closing (NOT_ALLOWED...).
  void refuse(Session* s, Code code, const std::string& message);

  // Lease deadlines and Redis waits (redis_wait_ms) up to now.
  void on_deadlines();
  uint64_t next_deadline() const;
  // CLEAR work is bounded per loop turn for all pending CLEARs together: the
  // loop calls clear_work once a turn, which works on every pending CLEAR at
  // once (one pass over the table serves them all) for at most `budget_us`,
  // and refills the first-slice budget. True when no clear is pending.
  bool clear_work(uint64_t budget_us);
  // CLEARs and SCANs share the pass (a SCAN is a visit: shm/writer.h).
  bool clears_pending() const { return !pending_clears_.empty() || visits_running(); }
  // Work CLEARs may do at once, before the loop's next clear_work(), so that a
  // small table clears within the turn (0: none). Shared by every CLEAR
  // received until then: a write of 256 CLEARs gets it once, not 256 times.
  void set_clear_first_slice_us(uint64_t us) { clear_first_slice_us_ = clear_first_slice_left_us_ = us; }
  // The microsecond clock CLEAR budgets are measured with; tests may replace it.
  void set_slice_clock(uint64_t (*clock_us)()) { slice_clock_ = clock_us; }

  // SIGTERM: finish pending clears, answer waiters (leases, Redis) SHUTTING_DOWN,
  // release the leases held in Redis; later requests are answered
  // SHUTTING_DOWN and their connections closed.
  void begin_shutdown();
  bool stopping() const { return stopping_; }

  // Hit regions (op HITS; shm/hits.h): reads at most `max_regions` of them,
  // round robin, into the table's frequencies and reader counters. The loop
  // calls it from a timer. Returns the regions read.
  size_t poll_hits(size_t max_regions);
  size_t hit_regions() const { return regions_.size(); }

  ServerCounters& counters() { return counters_; }
  void collect(MetricValue out[kMetricCount]) const;

  // Clock (CLOCK_MONOTONIC ms); tests may replace it.
  uint64_t now_ms() const { return clock_(); }
  void set_clock(uint64_t (*clock)()) { clock_ = clock; }
  shm::Writer* writer() const { return w_; }

 private:
  struct Args;
  struct PendingClear {
    uint64_t session, req, clear_id;
  };
  // A SCAN in progress (its cursor is its visit's id): the keys the visit
  // found and no SCAN returned yet, and the request waiting for them.
  struct Scan {
    uint64_t session = 0;           // the connection that began it (its scans end with it)
    uint64_t asker = 0, req = 0;    // the request waiting for keys
    uint32_t count = 0;
    bool waiting = false;
    std::deque<std::string> keys;
  };

  void dispatch(Session* s, const unsigned char* frame, size_t len);
  void execute(Session* s, uint32_t op, uint64_t id, Args& a);
  void op_hello(Session* s, uint64_t id, Args& a);
  void op_get(Session* s, uint64_t id, Args& a);
  void op_get_many(Session* s, uint64_t id, Args& a);
  enum class StoreIf { always, absent, present };  // SET, ADD, REPLACE
  void op_store(Session* s, uint64_t id, Args& a, StoreIf when);
  void op_ttl(Session* s, uint64_t id, Args& a);
  void op_set_many(Session* s, uint64_t id, Args& a);
  void op_delete(Session* s, uint64_t id, Args& a);
  void op_delete_many(Session* s, uint64_t id, Args& a);
  void op_touch(Session* s, uint64_t id, Args& a);
  void op_incr(Session* s, uint64_t id, Args& a, bool decr);
  void op_has_key(Session* s, uint64_t id, Args& a);
  void op_clear(Session* s, uint64_t id, Args& a);
  void op_delete_pattern(Session* s, uint64_t id, Args& a);
  void op_scan(Session* s, uint64_t id, Args& a);
  // A clear the table began (clear_id): answered when complete.
  void start_clear(Session* s, uint64_t id, uint64_t clear_id);
  // Runs the first slice (shared budget) of the clears and visits, and asks the loop for more.
  void first_slice();
  // Answers the scan's waiting request if it has `count` keys or is complete.
  bool answer_scan(uint64_t cursor);
  void finish_scans();
  bool visits_running() const;
  void op_lease(Session* s, uint64_t id, Args& a);
  void op_lock(Session* s, uint64_t id, Args& a, redis::LockOp op);
  void lock_local(Session* s, uint64_t id, const Decided& d);
  // A lock Redis answered (on_atomic).
  void lock_answered(Session* s, uint64_t id, const Decided& d, const redis::AtomicResult& r);
  void op_release(Session* s, uint64_t id, Args& a);
  void op_status(Session* s, uint64_t id, Args& a);
  void op_hits(Session* s, uint64_t id, Args& a);
  // Reads one region; false when it cannot be read any more (then dropped).
  bool poll_region(shm::HitSource* src, size_t max_samples);
  // A lookup in the table for a request (GET, GET_MANY): counted in key_stats_.
  bool table_get(std::string_view key, shm::Item* it);
  // Samples the ring entries of one region read into key_stats_ (key_stats.h);
  // `hits` is the region's hit counter's growth over the same read.
  void sample_hits(const std::vector<uint32_t>& ways, size_t max_samples, uint64_t hits);
  void key_stats_status(msgpack::packer<OutBuffer>& pk);

  // Replies (their bytes: protocol/reply.h). An error is counted, logged, and
  // closes the connection when its code says so; `detail` follows the status name.
  void error(Session* s, const uint64_t* id, Code c, std::string_view detail);
  void error_text(Session* s, const uint64_t* id, Code c, const std::string& message);
  void incr_error(Session* s, uint64_t id, Code c, bool decr);
  void reply_value(Session* s, uint64_t id, std::string_view value, uint8_t flags, uint64_t expiry, bool with_meta);
  void mark_dirty(Session* s);
  // A GET_MANY reply grew past max_output_bytes (reply::entries dropped it):
  // the client is closed (counted slow).
  void get_many_too_large(Session* s);

  bool expiry_arg(Session* s, uint64_t id, Args& a, size_t i, uint64_t* expiry);
  void after_store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry);
  void apply_events(const std::vector<Leases::Event>& ev);
  // Steps every pending clear for at most budget_us; returns the time used.
  uint64_t clear_slice(uint64_t budget_us);
  void finish_clears();
  void lease_local(Session* s, uint64_t id, std::string_view key, uint64_t lease_ms, uint64_t wait_ms);
  void incr_local(Session* s, uint64_t id, std::string_view key, int64_t delta, bool decr);
  bool add_local(Session* s, uint64_t id, std::string_view key, std::string_view value, uint8_t flags,
                 uint64_t expiry);
  void replace_local(Session* s, uint64_t id, std::string_view key, std::string_view value, uint8_t flags,
                     uint64_t expiry);
  void ttl_local(Session* s, uint64_t id, std::string_view key);
  // The local table's part of a store that succeeded: write tracking, the
  // queue for Redis, lease waiters. fill: the SET ends the caller's lease
  // (what it is conditional on in Redis, redis/write_behind.h: Lease fills).
  void stored(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry,
              const int64_t* fill = nullptr);

  // ---- the Redis tier (engine_redis.cc); the waits and write tracking are
  // waits_ (redis_waits.h)
  void expire_waits(uint64_t now);
  void cancel_waits(uint64_t session);
  // Hooks for the tier.
  bool install(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry);
  // install, and marked synced: the value is one Redis decided (ADD, INCR, LEASE).
  void install_decided(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry);
  void install_negative(std::string_view key, uint64_t expiry);
  // With a tier: the key has a negative entry (Redis has no such key), so a
  // local miss is definite; counted as a negative hit.
  bool negative_hit(std::string_view key);
  void drop(std::string_view key);
  void drop_all(const char* why);
  void drop_slots(const std::vector<bool>& slots);
  // Invalidations down past redis_stale_grace_ms: the table is kept, not served.
  void suspend(bool on);
  // After a local write: queue it for Redis (a dropped SET also drops the local
  // entry; fill: a lease fill, and a refused one does too).
  void queue_store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry,
                   const int64_t* fill = nullptr);
  // Redis refused a lease fill: drop the key if it still holds that item.
  void fill_refused(std::string_view key, uint64_t item_id);
  // The largest value SET and SET_MANY accept: value_limit, or the relay
  // bound with a Redis tier (redis/config.h); ADD keeps value_limit.
  uint64_t set_value_limit() const;
  void store_redis_only(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry);
  void wake_pollers(std::string_view key);
  void redis_read(Session* s, uint64_t id, WaitKind kind, std::string_view key, uint64_t expiry);
  void read_done(Session* s, uint64_t id, WaitKind kind, std::string_view key, uint64_t expiry,
                 const redis::Fetched* hit);
  void get_many_redis(Session* s, uint64_t id, const msgpack::object_array& keys);
  void reply_many(Session* s, uint64_t id, const ManyResults& r);
  // ADD, REPLACE, INCR/DECR, TTL, LEASE: sent to Redis (waits_.start), answered in
  // on_atomic/on_lease, or decided by atomic_down when Redis cannot take it.
  void decide_in_redis(Session* s, uint64_t id, const std::shared_ptr<Decided>& d);
  void on_atomic(uint64_t wid, const std::shared_ptr<Decided>& d, const redis::AtomicResult& r);
  void on_lease(uint64_t wid, const std::shared_ptr<Decided>& d, const redis::AtomicResult& r);
  // A LEASE that waited on another host's lease in Redis got neither it nor a value.
  void lease_timeout(Session* s, uint64_t id);
  // Redis did not decide (down, timed out): redis_down says what to do.
  void atomic_down(Session* s, uint64_t id, const Decided& d, const std::string& why);
  void redis_status(msgpack::packer<OutBuffer>& pk);

  shm::Writer* w_;
  Config cfg_;
  EngineHooks hooks_;
  std::function<int(Session*)> take_fd_;
  std::unordered_map<uint64_t, Session*> sessions_;
  Leases leases_;
  Locks locks_;  // without a Redis tier
  std::vector<PendingClear> pending_clears_;
  std::map<uint64_t, Scan> scans_;           // by cursor
  std::vector<uint64_t> orphan_visits_;      // of closed sessions' scans: taken when done
  struct Decoder;
  std::unique_ptr<Decoder> dec_;
  ServerCounters counters_;
  redis::TierApi* tier_ = nullptr;
  RedisWaits waits_;
  uint64_t redis_lease_timeouts_ = 0;  // LEASEs that waited on Redis and timed out
  uint64_t redis_only_sets_ = 0;        // SETs of values over value_limit sent to Redis only (store_redis_only)
  uint64_t negative_hits_ = 0;          // misses answered from a negative entry (negative_hit)
  uint64_t negative_skipped_ = 0;       // negative entries not installed: redis_negative_max reached
  uint64_t (*clock_)();
  uint64_t started_ms_;
  mutable HitWindow hit_window_;  // STATUS's recent hit ratio: collect() samples it
  bool stopping_ = false;
  bool suspended_ = false;  // TableHooks::suspend: lookups skip the table
  uint64_t clear_first_slice_us_ = 500, clear_first_slice_left_us_ = 500;
  uint64_t (*slice_clock_)();
  uint64_t requests_total_ = 0, errors_total_ = 0, lease_sets_ = 0;
  // Registered hit regions by session id (one per connection at most).
  std::map<uint64_t, std::unique_ptr<shm::HitSource>> regions_;
  uint64_t regions_cursor_ = 0;     // poll_hits goes on from this session id
  std::vector<uint32_t> hit_ways_;  // scratch
  // Traffic by key and prefix (STATUS key_stats), and the read-only view of
  // the writer's own mapping that maps ring way indexes back to keys.
  KeyStats key_stats_;
  std::unique_ptr<shm::Reader> view_reader_;
  std::unique_ptr<shm::TableView> view_;
  std::string key_scratch_;
};

}  // namespace nearcache::daemon
