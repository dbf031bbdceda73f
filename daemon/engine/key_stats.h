// daemon/engine/key_stats.h — where the traffic goes: the most hit keys and
// the hits and misses by key prefix (protocol/key_prefix.h), over the last 10
// to 20 seconds, for STATUS (`nearcache hotkeys`, `nearcache status`).
//
// Fed with (a) shared-memory hits: the way indexes the daemon already reads
// from the readers' hit rings every tick (shm/hits.h), mapped back to keys in
// the table (shm/table_view.h), at most kSamplesPerPoll per region read and
// kSamplesPerTick per tick, weighted so that a read's samples add up to the
// hits its region counted (more than the ring holds when it overflowed); (b) the daemon's own lookups (GET,
// GET_MANY): hits and misses, every one. Misses that readers answer from
// shared memory alone (a definite miss, no Redis tier) are not seen: the ring
// records hits only. So hits are sampled estimates and misses are those the
// daemon was asked about. The hit path is untouched; the cost is on the
// daemon's tick, bounded per region read.
//
// Two windows of kWindowMs: counts are of the current one and the one before.
// At most kMaxKeys keys and kMaxPrefixes prefixes per window; past that the
// lesser half of the keys is dropped, and new prefixes count as "(other)".
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nearcache::daemon {

class KeyStats {
 public:
  static constexpr uint64_t kWindowMs = 10000;
  static constexpr size_t kMaxKeys = 4096, kMaxPrefixes = 256;
  static constexpr size_t kReportKeys = 32, kReportPrefixes = 16;  // what STATUS shows
  // Ring entries mapped back to keys: at most kSamplesPerPoll per region
  // read and kSamplesPerTick per poll_hits (every 20 ms) for all regions.
  static constexpr size_t kSamplesPerPoll = 128, kSamplesPerTick = 256;

  void configure(bool enabled, uint32_t depth, std::string_view separators = ":");
  bool enabled() const { return enabled_; }
  uint32_t depth() const { return depth_; }
  const std::string& separators() const { return separators_; }

  void hit(std::string_view key, uint64_t weight, uint64_t now_ms);
  void miss(std::string_view key, uint64_t now_ms);

  struct KeyCount {
    std::string key;
    uint64_t hits;
  };
  struct PrefixCount {
    std::string prefix;
    uint64_t hits, misses;
  };
  // The n most hit keys, most first (ties: by key).
  std::vector<KeyCount> hot_keys(size_t n, uint64_t now_ms);
  // The n prefixes with the most hits + misses, most first; "(other)" last
  // when prefixes past kMaxPrefixes were seen.
  std::vector<PrefixCount> prefixes(size_t n, uint64_t now_ms);
  // The time the counts cover (the two windows, up to now).
  uint64_t span_ms(uint64_t now_ms);

 private:
  // Keys are short and every daemon lookup hashes one: 8 bytes a step,
  // multiply-mixed (the maps need spread only; chosen collisions cost at most
  // kMaxKeys comparisons a lookup, as they did with std::hash's fixed seed).
  struct ViewHash {
    using is_transparent = void;
    size_t operator()(std::string_view v) const;
  };
  template <typename V>
  using Map = std::unordered_map<std::string, V, ViewHash, std::equal_to<>>;
  using HitsMisses = std::pair<uint64_t, uint64_t>;
  // A key's hits and its prefix's counts in the same window (null: "(other)"),
  // so that a hit of a known key is one lookup. Map nodes never move, the
  // prefixes of a window are dropped only with its keys, and a key's prefix
  // is fixed until configure() starts over.
  struct KeyEntry {
    uint64_t hits;
    HitsMisses* prefix;
  };
  struct Window {
    Map<KeyEntry> keys;
    Map<HitsMisses> prefixes;
    uint64_t other_hits = 0, other_misses = 0;
    void clear() { keys.clear(), prefixes.clear(), other_hits = other_misses = 0; }
  };
  // Every lookup checks the window; it turns once in kWindowMs.
  void rotate(uint64_t now_ms) {
    if (!started_ || now_ms >= cur_start_ms_ + kWindowMs) turn(now_ms);
  }
  void turn(uint64_t now_ms);
  HitsMisses* prefix_counts(std::string_view key);
  void count_prefix(HitsMisses* c, uint64_t hits, uint64_t misses);
  void shrink_keys();

  bool enabled_ = true;
  uint32_t depth_ = 1;
  std::string separators_ = ":";
  Window cur_, prev_;
  uint64_t cur_start_ms_ = 0, prev_start_ms_ = 0;
  bool started_ = false;
};

}  // namespace nearcache::daemon
