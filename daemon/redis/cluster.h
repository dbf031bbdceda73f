// daemon/redis/cluster.h — the Redis tier on a Redis Cluster: one part per
// master (a redis::Tier of its own: data link, write-behind queue,
// read-through, atomics, invalidation link with CLIENT TRACKING BCAST on that
// master, heartbeat, repair), and every call routed to the part of its key's
// slot (CRC16 of prefix + key, {hash tags}; slots.h).
//
// Routing: a key goes to the part that still holds an operation of it
// (queued or in flight: after a redirection its later writes wait behind the
// redirected one), else to its slot's master in the map. The map (slot_map.h)
// comes from the Tier's control link (CLUSTER SHARDS, else CLUSTER SLOTS) at
// start, after every MOVED (at most every 100 ms), every second while a
// master is unreachable or a slot unserved, and every 10 s otherwise.
//
// Redirections of queued writes (write_behind.h): MOVED updates the slot's
// owner, schedules a refresh and hands the operation to that master's queue;
// ASK hands it over once, sent after ASKING; TRYAGAIN and CLUSTERDOWN retry
// with a bounded backoff. A read, INCR, LEASE or RELEASE answered MOVED is
// sent once more to the new master (an ADD too when the MOVED reached it:
// inside its MULTI, Redis reports EXECABORT); answered ASK (the slot
// migrating) they end as a miss / an error (counted; the map is refreshed):
// the client's next request goes to the right master.
//
// The table: a part's drop_all, suspension (grace over) and repair act on
// the slots its master serves only; a slot whose master changed in a new map
// has its local entries dropped (the new master's invalidations did not cover
// them). A master that no longer serves any slot hands its queued operations
// to the masters that do (a failover: the old master's queue goes to the
// promoted replica). CLEAR runs on every master (SCAN + UNLINK per node).
//
// Warm restart (set_restart, before the first map): every part's snapshots
// are collected into one set (a slot belongs to the latest snapshot of the
// master that served it) for the daemon to save. At the first map each part
// is seeded with the saved snapshot of the same home slot (where its marker,
// clear counter and proof key live: matched by slots, not by node, which a
// failover changes), its slots the saved one did not count marked unknown;
// a part without one, and slots no master serves, are dropped at once. A
// table that starts suspended stays so until every seeded part repaired
// (its own compare(): a master that cannot prove it holds the snapshot drops
// its slots, no more); parts not repaired within redis_stale_grace_ms have
// their slots dropped and the rest is served.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "redis/repair.h"
#include "redis/slot_map.h"
#include "redis/tier_api.h"

namespace nearcache::redis {

class Tier;

// One master's last snapshot (repair.h) as a warm restart keeps it: the slots
// that master served when it was taken (only their counters count) and the
// home slot its marker, clear counter and proof key live in.
struct MasterSnapshot {
  int home_slot = 0;
  std::vector<bool> owned;  // kSlots flags
  Snapshot snap;
  uint64_t mono_ms = 0;     // CLOCK_MONOTONIC ms when it was taken
};

// A warm restart on a cluster (the daemon, through Tier::set_cluster_restart).
struct ClusterRestart {
  std::vector<MasterSnapshot> saved;  // the previous daemon's, for the adopted table; {} = none
  uint64_t serve_until_ms = 0;        // CLOCK_MONOTONIC: adopted entries served until then; 0 = suspended
  // Every new snapshot of a part: the whole set, to save for the next daemon.
  std::function<void(const std::vector<MasterSnapshot>&)> on_snapshots;
};

class Cluster {
 public:
  // `make_part(master, home_slot, hooks)`: a started Tier for one master.
  using MakePart = std::function<std::unique_ptr<Tier>(const HostPort&, int home_slot, TableHooks)>;
  // `refresh()` asks the Tier's control link for a new map (apply() gets it).
  Cluster(uv_loop_t* loop, const Config& cfg, TableHooks hooks, MakePart make_part, std::function<void()> refresh);
  ~Cluster();

  // An error reply a part's data link got (MOVED / ASK outside the queue: counted, map refreshed).
  void error_reply(std::string_view error);
  // Warm restart: before the first apply().
  void set_restart(ClusterRestart r);
  // A slot map (the first one makes the parts, and seeds them: set_restart).
  void apply(const SlotMap& map);
  // An operation queued before the cluster existed (the Tier's own queue).
  void adopt(HandedOp&& op);
  // The slots the master of part `t` serves (its repair's counters).
  std::vector<bool> owned_by(const Tier* t) const;
  // The masters known (for the control link's seeds).
  std::vector<HostPort> masters() const;

  Enqueued set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, uint64_t item_id);
  Enqueued fill(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, uint64_t item_id,
                int64_t expected);
  // The counter in the snapshot of the part serving the key's slot (kFillRefuse: none).
  int64_t fill_base(std::string_view key);
  Enqueued del(std::string_view key);
  Enqueued touch(std::string_view key, uint64_t expiry_ms);
  Enqueued clear(std::string_view prefix);
  Enqueued clear_match(std::string_view pattern);
  bool replace(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb);
  bool pttl(std::string_view key, AtomicFn cb);
  bool lock(LockOp op, std::string_view name, std::string_view token, uint64_t ms, uint64_t max_ms, AtomicFn cb);
  Lookup get(std::string_view key, Fetched* now, FetchFn done);
  bool add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb);
  bool incr(std::string_view key, __int128 delta, AtomicFn cb);
  bool lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb);
  bool release(std::string_view key, uint64_t token, AtomicFn cb);
  uint64_t wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms, AtomicFn cb);
  void cancel_wait(uint64_t id);
  void wake_lease_waiters(std::string_view key);
  void set_password(const std::string& password);
  void set_tls(std::shared_ptr<const TlsClient> tls);

  // Sums of the parts (links: the worst state; masters in `master`).
  void add_status(TierStatus* s) const;
  ClusterStatus status() const;

  // Drains every part (in parallel) until deadline_ms, closes them; done(left).
  void shutdown(uint64_t deadline_ms, std::function<void(uint64_t left)> done);

 private:
  struct Part;
  Part* route(std::string_view key);
  Part* part_for(const HostPort& m, int home_slot);
  std::vector<bool> owned(const Part* p) const;
  void drop_owned(Part* p, const char* why);
  void redirected(HandedOp&& op, const Redirect& rd);
  void moved_slot(uint32_t slot, Part* to);
  bool atomic(std::string_view key, const std::function<bool(Part*, AtomicFn)>& op, AtomicFn cb);
  void schedule_refresh(uint64_t in_ms);
  bool serves_slots(const Part& p) const;  // some slot of the map is this part's
  static void on_refresh(uv_timer_t* t);
  // Warm restart: seed the parts (first map), a part's first repair, its snapshots.
  void seed_parts();
  void repaired(Part* p);
  void snapshot_taken(Part* p, const Snapshot& s);
  static void on_restart_timeout(uv_timer_t* t);

  uv_loop_t* loop_;
  Config cfg_;
  TableHooks hooks_;
  MakePart make_part_;
  std::function<void()> refresh_;
  std::vector<std::unique_ptr<Part>> parts_;
  std::vector<int> owner_;  // kSlots: index into parts_, -1 = never served
  uv_timer_t refresh_timer_, restart_timer_;
  uint64_t last_refresh_ = 0;
  ClusterRestart restart_;
  bool seeding_ = false;               // set_restart with a saved set: the first apply seeds
  size_t waiting_ = 0;                 // seeded parts whose repair the suspended table waits for
  std::vector<MasterSnapshot> snaps_;  // the set saved for the next daemon
  bool closing_ = false;
  std::function<void()> timer_closed_;
  uint64_t next_wait_ = 1;
  std::unordered_map<uint64_t, std::pair<Part*, uint64_t>> waits_;  // cluster wait id -> part, its id
  ClusterStatus st_;
};

}  // namespace nearcache::redis
