// daemon/server/repair_file.h — the last slot-counter snapshot (redis/repair.h)
// kept in a small file next to the segment, so that a restarted daemon can
// reconcile the table it adopts instead of dropping it: the snapshot belongs
// to one table generation and one key prefix, and is written (atomically:
// a temporary file renamed over the name) every time the repair takes one
// while invalidations flow. Only the daemon's user can read or write it.
//
// Two versions: 1 holds one server's snapshot (Redis or Sentinel: every
// slot), 2 the set of a Redis Cluster's masters (each with the slots it
// served and their counters only; cluster.h, MasterSnapshot). One file for
// the set, not one per master: one rename replaces it whole, so the
// snapshots never mix two moments of the set, and there is nothing to name
// by node (ids and addresses change with a failover) or to clean up after.
#pragma once

#include <cstdint>
#include <string>

#include "redis/cluster.h"
#include "redis/repair.h"

namespace nearcache::daemon {

struct SavedSnapshot {
  uint64_t generation = 0;  // the table the snapshot was taken for
  std::string prefix;       // the Redis key prefix its counters count
  redis::Snapshot snap;  // one server (version 1)
  // Redis Cluster (version 2, written when this is not empty; snap unused).
  std::vector<redis::MasterSnapshot> masters;
  // CLOCK_MONOTONIC ms when it was saved (invalidations flowed then; the
  // oldest of the masters' snapshots); 0 = unknown (a file of an older
  // build): a restart then starts suspended.
  uint64_t saved_mono_ms = 0;
  uint64_t file_age_ms = 0;  // load: how old the file is by the wall clock (its mtime)
};

// How long a restarted daemon may still serve the table it adopts before the
// repair (redis_stale_grace_ms less the snapshot's age, by both clocks); 0:
// start suspended.
uint64_t adopted_serve_ms(const SavedSnapshot& s, uint64_t now_mono_ms, uint64_t stale_grace_ms);

// "<segment>.repair" for a segment file, "<socket>.repair" for a POSIX shm name.
std::string repair_file_path(const std::string& segment, bool posix_shm, const std::string& socket);
// Returns false with *why (the file is missing, unreadable, not ours or corrupt).
bool load_repair_file(const std::string& path, SavedSnapshot* out, std::string* why);
bool save_repair_file(const std::string& path, const SavedSnapshot& s, std::string* why);

}  // namespace nearcache::daemon
