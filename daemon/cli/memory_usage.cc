// daemon/cli/memory_usage.cc — see memory_usage.h.
#include "cli/memory_usage.h"

#include <algorithm>
#include <unordered_map>

#include "protocol/key_prefix.h"
#include "table_view.h"

namespace nearcache::daemon {

MemoryUsage measure_memory(const shm::Reader& r, uint32_t depth, std::string_view separators, uint64_t now_ms) {
  MemoryUsage u;
  const shm::TableView view(r);
  std::unordered_map<std::string, PrefixUsage> by_prefix;
  shm::BucketEntries b;
  std::string p;
  for (uint32_t i = 0; i < view.bucket_count(); ++i) {
    ++u.buckets;
    if (!view.read_bucket(i, now_ms, &b)) {
      ++u.busy_buckets;
      continue;
    }
    for (const shm::EntryInfo& e : b.entries) {
      ++u.entries;
      u.bytes += e.item_bytes;
      u.key_bytes += e.key_len;
      u.value_bytes += e.value_len;
      u.negative += e.negative;
      if (depth == 0) continue;
      p.assign(key_prefix(b.key(e), depth, separators));
      auto it = by_prefix.find(p);
      PrefixUsage* to = &u.other;
      if (it != by_prefix.end()) to = &it->second;
      else if (by_prefix.size() < kMaxPrefixes) to = &by_prefix.emplace(p, PrefixUsage{p}).first->second;
      ++to->entries;
      to->bytes += e.item_bytes;
    }
  }
  u.prefixes.reserve(by_prefix.size());
  for (auto& [k, v] : by_prefix) u.prefixes.push_back(std::move(v));
  std::sort(u.prefixes.begin(), u.prefixes.end(), [](const PrefixUsage& a, const PrefixUsage& b) {
    if (a.bytes != b.bytes) return a.bytes > b.bytes;
    if (a.entries != b.entries) return a.entries > b.entries;
    return a.prefix < b.prefix;
  });
  return u;
}

}  // namespace nearcache::daemon
