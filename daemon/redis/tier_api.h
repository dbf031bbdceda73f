// daemon/redis/tier_api.h — the seam between the daemon's engine and the Redis
// tier: the few calls the engine makes (TierApi) and the hooks the tier calls
// back to change the table (TableHooks). redis::Tier implements it on real
// links; the engine's unit tests implement it with a fake that answers on
// command (tests/daemon_units/test_engine_redis.cc).
//
// Every call names the key it is about (or the prefix, for CLEAR), never a
// connection: on Redis Cluster (cluster.h) the tier routes each call to the
// part of the key's master (slot = CRC16(redis key) mod 16384), each part
// with its own data and invalidation links, behind this same interface:
//   - TableHooks::drop_slots (the repair after missed invalidations, repair.h)
//     works by slot: a part passes its master's slots only, and its drop_all
//     and suspend become drop_slots of those slots; drop_all and suspend
//     stay for the whole table on one server;
//   - TierStatus sums the parts (worst link state, masters in `master`, the
//     cluster's own counters in `cluster`);
//   - GET_MANY stays one get() per key: each part pipelines its keys on its link.
// The engine never asks which link or slot a key is on.
//
// All calls and callbacks run on the loop thread. A call that returns false
// (or Lookup::unavailable) never calls back; every other callback runs once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "redis/atomics.h"
#include "redis/config.h"
#include "redis/invalidation.h"
#include "redis/link.h"
#include "redis/read_through.h"
#include "redis/repair.h"
#include "redis/sentinel.h"
#include "redis/write_behind.h"

namespace nearcache::redis {

// What the tier may do to the local table (the daemon's engine implements them).
struct TableHooks {
  std::function<void(std::string_view key)> drop;   // remove one local entry
  std::function<void(const char* why)> drop_all;    // remove every local entry
  // A value read from Redis (or from this host's queue) to store locally:
  // no write-behind, no lease wake-up beyond what a local SET does.
  std::function<void(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms)> install;
  // Redis has no such key (read_through.h, negative entries): remember that
  // locally until expiry_ms, unless this host's bound on them is reached.
  std::function<void(std::string_view key, uint64_t expiry_ms)> install_negative;
  // The value just installed was read from Redis (not from this host's
  // queue): a restarted daemon may adopt it (shm kItemSynced).
  std::function<void(std::string_view key)> synced;
  // Redis acknowledged the SET this host queued for `key` with `item_id`
  // (TierApi::set): if the key still holds that item, a restarted daemon may
  // adopt it (shm Writer::mark_synced(key, id)).
  std::function<void(std::string_view key, uint64_t item_id)> acked;
  // Redis refused the lease fill this host queued for `key` with `item_id`
  // (TierApi::fill): if the key still holds that item, drop it.
  std::function<void(std::string_view key, uint64_t item_id)> fill_refused;
  // Remove every local entry whose Redis key (prefix + key) is in a slot
  // marked true (slots.h: kSlots entries), then serve again (repair.h).
  std::function<void(const std::vector<bool>& slots)> drop_slots;
  // true: invalidations are down past redis_stale_grace_ms — serve nothing
  // from the table (readers nor the daemon: GET/GET_MANY/HAS_KEY/LEASE ask
  // Redis), delete nothing; false: serve again.
  std::function<void(bool on)> suspend;
};

// Redis Cluster (cluster.h); enabled = false on one server.
struct ClusterStatus {
  bool enabled = false;
  uint64_t masters = 0, slots_covered = 0;
  uint64_t moved_total = 0, ask_total = 0, retried_total = 0;  // write-behind redirections (write_behind.h)
  uint64_t redirect_replies_total = 0;  // MOVED / ASK error replies on the data links
  uint64_t refreshes_total = 0, slots_moved_total = 0;
  uint64_t lost_in_shutdown_total = 0;  // writes redirected to an unknown master while draining
};

struct TierStatus {
  LinkStatus data, invalidation;
  bool coherent = false;
  bool degraded = false;  // Redis unreachable and redis_down = local
  QueueStats queue;
  ReadStats reads;
  InvalidationStats inval;
  AtomicStats atomics;
  RepairStats repair;
  uint64_t local_flushes_total = 0;     // drop_all calls
  uint64_t local_decisions_total = 0;   // atomic ops decided on this host while Redis was down
  std::string url;                      // masked
  // With Sentinel (sentinel.h): the Sentinels' view, and the data link's
  // current server ("" without Sentinel or before the first answer).
  SentinelStatus sentinel;
  std::string master;  // Redis Cluster: the masters serving slots, "host:port,..."
  ClusterStatus cluster;
};

class TierApi {
 public:
  virtual ~TierApi() = default;

  // ---- after the local table applied a write (the reply may go out at once)
  // item_id names the local item the SET wrote (0: none); TableHooks::acked gets it back.
  virtual Enqueued set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                       uint64_t item_id) = 0;
  // The SET that ends a lease this host holds, conditional on the key's slot
  // counter still being `expected` (write_behind.h, Lease fills); refused:
  // drop the local copy at once. A tier without conditional fills stores it.
  virtual Enqueued fill(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                        uint64_t item_id, int64_t expected) {
    (void)expected;
    return set(key, value, flags, expiry_ms, item_id);
  }
  // What a lease decided on this host (Redis did not decide it) is
  // conditional on: the key's slot counter in the last snapshot (repair.h).
  virtual int64_t fill_base(std::string_view key) {
    (void)key;
    return kFillRefuse;
  }
  virtual Enqueued del(std::string_view key) = 0;
  virtual Enqueued touch(std::string_view key, uint64_t expiry_ms) = 0;
  virtual Enqueued clear(std::string_view prefix) = 0;
  // DELETE_PATTERN: every key matching redis_prefix + `pattern` (a glob; SCAN MATCH + UNLINK).
  virtual Enqueued clear_match(std::string_view pattern) = 0;

  // ---- a local miss (GET, GET_MANY per key, HAS_KEY, TOUCH): read through
  virtual Lookup get(std::string_view key, Fetched* now, FetchFn done) = 0;

  // ---- decided in Redis; false = Redis unreachable now: apply down_policy()
  virtual bool add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) = 0;
  virtual bool incr(std::string_view key, __int128 delta, AtomicFn cb) = 0;
  virtual bool lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb) = 0;
  virtual bool release(std::string_view key, uint64_t token, AtomicFn cb) = 0;
  // SET XX (ok / not_found) and PTTL (ok, number = ms, -1 none, -2 missing).
  virtual bool replace(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                       AtomicFn cb) = 0;
  virtual bool pttl(std::string_view key, AtomicFn cb) = 0;
  // Locks, decided in Redis only (atomics.h: LockOp).
  virtual bool lock(LockOp op, std::string_view name, std::string_view token, uint64_t ms, uint64_t max_ms,
                    AtomicFn cb) = 0;
  // Polls another host's lease until a value, the lease, or deadline_ms; an id for cancel_wait.
  virtual uint64_t wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms,
                              AtomicFn cb) = 0;
  virtual void cancel_wait(uint64_t id) = 0;
  // This host wrote the key: lease waits on it poll Redis now.
  virtual void wake_lease_waiters(std::string_view key) = 0;

  // The daemon decided an atomic operation locally because Redis was down.
  virtual void note_local_decision() = 0;
  virtual TierStatus status() const = 0;
  // redis_wait_ms, redis_down, redis_prefix, ... as validated.
  virtual const Config& config() const = 0;
  DownPolicy down_policy() const { return config().down; }
};

}  // namespace nearcache::redis
