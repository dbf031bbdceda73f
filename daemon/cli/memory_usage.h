// daemon/cli/memory_usage.h — `nearcache memory`: entries and bytes of the
// table, in total and by key prefix (protocol/key_prefix.h).
//
// The CLI walks the segment itself, mapped read-only as every client maps it
// (shm/table_view.h), instead of asking the daemon: the daemon does no work
// at all (no slices to schedule, no loop time taken from requests, nothing to
// bound but the CLI's own memory), the walk cannot be used to slow the daemon
// down, and it works even when the daemon is too busy to answer. Every read
// is bounds-checked as shm/reader.cc's are. The price: the result is read
// bucket by bucket while the daemon goes on writing, not a snapshot (an entry
// the writer moves during the walk can be counted twice or not at all), and
// the caller needs read access to the segment (segment_mode/segment_group),
// as any client does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "reader.h"

namespace nearcache::daemon {

struct PrefixUsage {
  std::string prefix;  // "" for keys with no separator
  uint64_t entries = 0, bytes = 0;
};

struct MemoryUsage {
  uint64_t entries = 0, bytes = 0;  // live entries (negative ones included) and their item bytes
  uint64_t key_bytes = 0, value_bytes = 0, negative = 0;
  uint64_t buckets = 0, busy_buckets = 0;  // buckets read; those that kept changing (not counted)
  std::vector<PrefixUsage> prefixes;       // most bytes first; empty when depth == 0
  PrefixUsage other;                       // prefixes past kMaxPrefixes distinct ones
};

// Distinct prefixes kept while walking; further ones are summed in `other`.
inline constexpr size_t kMaxPrefixes = 100000;

// Walks every bucket of the table `r` has open. depth 0: totals only.
MemoryUsage measure_memory(const shm::Reader& r, uint32_t depth, std::string_view separators, uint64_t now_ms);

}  // namespace nearcache::daemon
