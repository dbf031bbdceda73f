// daemon/engine/key_stats.cc — see key_stats.h.
#include "engine/key_stats.h"

#include <algorithm>

#include "protocol/key_prefix.h"

namespace nearcache::daemon {

void KeyStats::configure(bool enabled, uint32_t depth, std::string_view separators) {
  if (enabled != enabled_ || depth != depth_ || separators != separators_)
    cur_.clear(), prev_.clear(), started_ = false;  // counts of other prefixes do not add up
  enabled_ = enabled;
  depth_ = depth;
  separators_ = separators;
}

void KeyStats::rotate(uint64_t now) {
  if (!started_) {
    started_ = true;
    cur_start_ms_ = prev_start_ms_ = now;
    return;
  }
  if (now < cur_start_ms_ + kWindowMs) return;
  if (now >= cur_start_ms_ + 2 * kWindowMs) {  // idle for a whole window: both are old
    cur_.clear(), prev_.clear();
    cur_start_ms_ = prev_start_ms_ = now;
    return;
  }
  std::swap(prev_, cur_);
  cur_.clear();
  prev_start_ms_ = cur_start_ms_;
  cur_start_ms_ += kWindowMs;
}

void KeyStats::count_prefix(std::string_view key, uint64_t hits, uint64_t misses) {
  const std::string_view p = key_prefix(key, depth_, separators_);
  auto it = cur_.prefixes.find(p);
  if (it == cur_.prefixes.end()) {
    if (cur_.prefixes.size() >= kMaxPrefixes) {
      cur_.other_hits += hits, cur_.other_misses += misses;
      return;
    }
    it = cur_.prefixes.emplace(std::string(p), std::pair<uint64_t, uint64_t>{0, 0}).first;
  }
  it->second.first += hits, it->second.second += misses;
}

// Keeps the more hit half: each shrink frees kMaxKeys / 2 places, so the
// cost is O(1) per new key, amortised.
void KeyStats::shrink_keys() {
  std::vector<uint64_t> counts;
  counts.reserve(cur_.keys.size());
  for (const auto& [k, n] : cur_.keys) counts.push_back(n);
  auto mid = counts.begin() + long(counts.size() / 2);
  std::nth_element(counts.begin(), mid, counts.end());
  const uint64_t median = *mid;
  size_t above = 0;
  for (uint64_t c : counts) above += c > median;
  size_t at_median = size_t(counts.end() - mid) - above;  // ties at the median that stay
  for (auto it = cur_.keys.begin(); it != cur_.keys.end();) {
    if (it->second > median || (it->second == median && at_median > 0 && at_median--)) ++it;
    else it = cur_.keys.erase(it);
  }
}

void KeyStats::hit(std::string_view key, uint64_t weight, uint64_t now) {
  if (!enabled_) return;
  rotate(now);
  count_prefix(key, weight, 0);
  auto it = cur_.keys.find(key);
  if (it != cur_.keys.end()) {
    it->second += weight;
    return;
  }
  if (cur_.keys.size() >= kMaxKeys) shrink_keys();
  cur_.keys.emplace(std::string(key), weight);
}

void KeyStats::miss(std::string_view key, uint64_t now) {
  if (!enabled_) return;
  rotate(now);
  count_prefix(key, 0, 1);
}

std::vector<KeyStats::KeyCount> KeyStats::hot_keys(size_t n, uint64_t now) {
  std::vector<KeyCount> out;
  if (!enabled_) return out;
  rotate(now);
  // Views into the two windows' keys: no key is copied but the n reported.
  std::unordered_map<std::string_view, uint64_t> sum(prev_.keys.size() + cur_.keys.size());
  for (const auto& [k, c] : prev_.keys) sum[k] += c;
  for (const auto& [k, c] : cur_.keys) sum[k] += c;
  std::vector<std::pair<std::string_view, uint64_t>> all(sum.begin(), sum.end());
  auto more = [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; };
  const size_t m = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + long(m), all.end(), more);
  out.reserve(m);
  for (size_t i = 0; i < m; ++i) out.push_back({std::string(all[i].first), all[i].second});
  return out;
}

std::vector<KeyStats::PrefixCount> KeyStats::prefixes(size_t n, uint64_t now) {
  std::vector<PrefixCount> out;
  if (!enabled_) return out;
  rotate(now);
  Map<std::pair<uint64_t, uint64_t>> sum = prev_.prefixes;
  for (const auto& [p, c] : cur_.prefixes) sum[p].first += c.first, sum[p].second += c.second;
  for (auto& [p, c] : sum) out.push_back({p, c.first, c.second});
  auto more = [](const PrefixCount& a, const PrefixCount& b) {
    const uint64_t x = a.hits + a.misses, y = b.hits + b.misses;
    return x != y ? x > y : a.prefix < b.prefix;
  };
  std::sort(out.begin(), out.end(), more);
  uint64_t oh = cur_.other_hits + prev_.other_hits, om = cur_.other_misses + prev_.other_misses;
  if (out.size() > n) {
    for (size_t i = n; i < out.size(); ++i) oh += out[i].hits, om += out[i].misses;
    out.resize(n);
  }
  if (oh + om) out.push_back({"(other)", oh, om});
  return out;
}

uint64_t KeyStats::span_ms(uint64_t now) {
  rotate(now);
  return now - prev_start_ms_;
}

}  // namespace nearcache::daemon
