// daemon/engine/key_stats.cc — see key_stats.h.
#include "engine/key_stats.h"

#include <algorithm>
#include <cstring>

#include "protocol/key_prefix.h"

namespace nearcache::daemon {

void KeyStats::configure(bool enabled, uint32_t depth, std::string_view separators) {
  if (enabled != enabled_ || depth != depth_ || separators != separators_)
    cur_.clear(), prev_.clear(), started_ = false;  // counts of other prefixes do not add up
  enabled_ = enabled;
  depth_ = depth;
  separators_ = separators;
}

void KeyStats::turn(uint64_t now) {
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

size_t KeyStats::ViewHash::operator()(std::string_view v) const {
  auto load = [](const char* p, size_t n) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    return w;
  };
  auto mix = [](uint64_t h, uint64_t w) {
    h = (h ^ w) * 0x9fb21c651e98df25ull;
    return h ^ (h >> 32);
  };
  const char* p = v.data();
  const size_t n = v.size();
  uint64_t h = 0x9e3779b97f4a7c15ull * (n + 1);
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8) h = mix(h, load(p + i, 8));
    h = mix(h, load(p + n - 8, 8));  // the last 8 bytes, overlapping
  } else if (n >= 4) {
    h = mix(h, load(p, 4) | load(p + n - 4, 4) << 32);
  } else if (n > 0) {
    h = mix(h, uint64_t(uint8_t(p[0])) | uint64_t(uint8_t(p[n / 2])) << 8 | uint64_t(uint8_t(p[n - 1])) << 16);
  }
  return size_t(h);
}

// The counts of key's prefix in the current window, made when new; null when
// the window holds kMaxPrefixes others already (the key counts as "(other)").
KeyStats::HitsMisses* KeyStats::prefix_counts(std::string_view key) {
  const std::string_view p = key_prefix(key, depth_, separators_);
  auto it = cur_.prefixes.find(p);
  if (it != cur_.prefixes.end()) return &it->second;
  if (cur_.prefixes.size() >= kMaxPrefixes) return nullptr;
  return &cur_.prefixes.emplace(std::string(p), HitsMisses{0, 0}).first->second;
}

void KeyStats::count_prefix(HitsMisses* c, uint64_t hits, uint64_t misses) {
  if (c) c->first += hits, c->second += misses;
  else cur_.other_hits += hits, cur_.other_misses += misses;
}

// Keeps the more hit half: each shrink frees kMaxKeys / 2 places, so the
// cost is O(1) per new key, amortised.
void KeyStats::shrink_keys() {
  std::vector<uint64_t> counts;
  counts.reserve(cur_.keys.size());
  for (const auto& [k, e] : cur_.keys) counts.push_back(e.hits);
  auto mid = counts.begin() + long(counts.size() / 2);
  std::nth_element(counts.begin(), mid, counts.end());
  const uint64_t median = *mid;
  size_t above = 0;
  for (uint64_t c : counts) above += c > median;
  size_t at_median = size_t(counts.end() - mid) - above;  // ties at the median that stay
  for (auto it = cur_.keys.begin(); it != cur_.keys.end();) {
    const uint64_t n = it->second.hits;
    if (n > median || (n == median && at_median > 0 && at_median--)) ++it;
    else it = cur_.keys.erase(it);
  }
}

void KeyStats::hit(std::string_view key, uint64_t weight, uint64_t now) {
  if (!enabled_) return;
  rotate(now);
  auto it = cur_.keys.find(key);
  if (it == cur_.keys.end()) {
    if (cur_.keys.size() >= kMaxKeys) shrink_keys();
    it = cur_.keys.emplace(std::string(key), KeyEntry{0, prefix_counts(key)}).first;
  }
  it->second.hits += weight;
  count_prefix(it->second.prefix, weight, 0);
}

void KeyStats::miss(std::string_view key, uint64_t now) {
  if (!enabled_) return;
  rotate(now);
  count_prefix(prefix_counts(key), 0, 1);
}

std::vector<KeyStats::KeyCount> KeyStats::hot_keys(size_t n, uint64_t now) {
  std::vector<KeyCount> out;
  if (!enabled_) return out;
  rotate(now);
  // Views into the two windows' keys: no key is copied but the n reported.
  std::unordered_map<std::string_view, uint64_t> sum(prev_.keys.size() + cur_.keys.size());
  for (const auto& [k, e] : prev_.keys) sum[k] += e.hits;
  for (const auto& [k, e] : cur_.keys) sum[k] += e.hits;
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
