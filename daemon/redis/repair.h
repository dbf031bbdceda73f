// daemon/redis/repair.h — what the table does when invalidations stop and
// start again: serve for a grace, then suspend (serve nothing that may be
// stale, delete nothing), and on reconnect drop only the slots whose write
// counters (slots.h) moved since the last snapshot taken while healthy.
// With a grace of 0 the table is dropped at the loss and suspended until
// invalidations flow again (what the host stores meanwhile is not served).
//
// Snapshot: tracking on (Invalidation says coherent), then a fence (a message
// through the invalidation link: invalidations sent before it are handled),
// then SET NX + GET of the flush marker, MGET of the 16384 slot counters in
// pages, GET of the clear counter, INFO replication (last: its offset covers
// every counter read), then a second fence: BCAST invalidations leave Redis at
// the end of its event-loop turn, PUBLISH at once, so a write counted in the
// snapshot has had its invalidation handled only after a message sent after
// the reply came back. Refreshed every 10 x heartbeat_ms while healthy.
//
// Comparison after a gap (compare()): possible only when the Redis answering
// now provably holds the snapshot's history — the same replication id at an
// offset not behind it, a promoted replica whose master_replid2 is the
// snapshot's id and whose second_repl_offset is past the snapshot's offset,
// or (a restart from its AOF or RDB, a failover) the snapshot's proof key
// still there — and the flush marker and clear counter are unchanged. Then every slot whose
// counter differs, or is missing on either side (allkeys-* eviction, never
// written), is dropped; otherwise everything is.
//
// Flush messages (FLUSHDB/FLUSHALL: CLIENT TRACKING does not say of which
// database): the marker is read back by value; only a missing or changed
// marker drops the table.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "redis/config.h"
#include "redis/invalidation.h"
#include "redis/link.h"

namespace nearcache::redis {

struct ReplPos {
  std::string replid, replid2;
  int64_t offset = -1, offset2 = -1;  // master_repl_offset, second_repl_offset
};
// Fields of INFO replication; false when master_replid or the offset is missing.
bool parse_replication(std::string_view info, ReplPos* out);

struct Snapshot {
  ReplPos repl;
  std::vector<int64_t> slots;  // kSlots counters, -1 = missing
  int64_t clears = -1;         // clear counter, -1 = missing (never cleared)
  std::string marker;          // the flush marker's epoch, "" = none
  // Proof of history: a key of this host's own (a random name) written after
  // the counters were read. A Redis that holds it holds every write before it
  // (an AOF or RDB after a restart, a replica's stream after a failover keep
  // a prefix of the history), so the counters compare when the replication
  // id cannot. `holds` is what the read found of the previous snapshot's.
  std::string proof;           // the key written, "" = none
  std::string proof_checked;   // the previous snapshot's proof, looked up
  bool holds = false;          // ... and present
};

enum class Verdict { nothing, slots, all };
// What to drop after a gap between `before` and `after` (slots dropped: *drop).
Verdict compare(const Snapshot* before, const Snapshot& after, std::vector<bool>* drop, size_t* dropped,
                std::string* why);

struct RepairStats {
  uint64_t snapshots_total = 0, snapshot_us_last = 0;
  uint64_t repairs_total = 0, repairs_full_total = 0, slots_dropped_total = 0;
  uint64_t suspensions_total = 0, flush_ignored_total = 0;
  bool suspended = false;
};

class Repair {
 public:
  struct Hooks {
    std::function<void(const char* why)> drop_all;
    std::function<void(const std::vector<bool>& slots)> drop_slots;
    std::function<void(bool on)> suspend;
    std::function<void()> invalidate_reads;  // in-flight reads must not install
    // Redis Cluster: the slots this master serves now (kSlots flags). Set, the
    // snapshot reads only their counters (one GET each: MGET of keys in
    // several slots is CROSSSLOT) and counts the others as 0.
    std::function<std::vector<bool>()> owned_slots;
  };
  Repair(uv_loop_t* loop, Link* data, Invalidation* inval, const Config& cfg, Hooks h);
  ~Repair();
  Repair(const Repair&) = delete;
  Repair& operator=(const Repair&) = delete;

  // From Invalidation's handlers.
  void lost();
  void coherent();
  void flush();
  void close(std::function<void()> closed);

  RepairStats stats() const;
  // The counter of `slot` in the last snapshot taken while invalidations
  // flowed (what a lease decided on this host is conditional on,
  // write_behind.h): a value, kFillMissing, or kFillRefuse (no snapshot, or
  // a slot this cluster part did not read).
  int64_t base_counter(uint32_t slot) const;

  // Warm restart (the daemon, before the tier starts): `before` is the last
  // snapshot the previous daemon took while the adopted table was coherent;
  // the first repair compares with it. The restart is a gap that began no
  // later than that snapshot: with serve_ms > 0 (what is left of
  // redis_stale_grace_ms since it was taken) the table is served meanwhile
  // and suspended when serve_ms pass before the repair; with 0 it starts
  // suspended.
  void seed(Snapshot before, uint64_t serve_ms);
  // The tier turned out to be a Redis Cluster, whose parts repair: the seed
  // and its grace timer go (cluster.h takes the table's suspension over).
  void unseed();
  // Called with every snapshot taken while healthy (the daemon persists it).
  void set_on_snapshot(std::function<void(const Snapshot&)> fn) { on_snapshot_ = std::move(fn); }

 private:
  using SnapFn = std::function<void(std::optional<Snapshot>)>;
  void snapshot(SnapFn done);
  void read(uint64_t gen, SnapFn done);
  void healthy(Snapshot s);
  void check_marker();
  void suspend_table(const char* why);  // once per gap: readers and the daemon stop serving the table
  void resume_table();
  std::string new_epoch() const;
  static void on_grace(uv_timer_t* t);
  static void on_refresh(uv_timer_t* t);

  uv_loop_t* loop_;
  Link* data_;
  Invalidation* inval_;
  Config cfg_;
  Hooks h_;
  std::vector<std::string> counter_keys_;
  std::string clear_key_, marker_key_;
  std::optional<Snapshot> base_;
  std::string marker_;     // the epoch this host last saw in the marker
  uint64_t gen_ = 0;       // coherence periods: a snapshot of an older one is void
  bool gap_ = true;        // invalidations may have been missed since base_
  bool reading_ = false;
  bool ever_coherent_ = false;
  bool closing_ = false;
  int open_timers_ = 0;
  uv_timer_t grace_, refresh_;
  std::function<void()> closed_;
  std::function<void(const Snapshot&)> on_snapshot_;
  RepairStats st_;
};

}  // namespace nearcache::redis
