// shm/clear.cc — CLEAR (all keys, or those with a prefix) without a pause:
// clear_begin records the clear, clear_step walks the buckets a slice at a
// time, and any bucket an operation touches first catches up with the clears
// pending for it (settle, inline in writer_internal.h), so a cleared key is
// never served by the writer and a later write is never lost.
#include <algorithm>

#include "writer_internal.h"

namespace nearcache::shm {

uint64_t Writer::clear_begin(std::string_view prefix) {
  const uint64_t id = ++clear_latest_;
  clears_.push_back({id, std::string(prefix)});
  clear_ids_[std::string(prefix)].push_back(id);
  clear_lengths_[prefix.size()]++;
  if (clears_.size() == 1) {
    pass_target_ = id;
    pass_cursor_ = 0;
  }
  st_.clears++;
  persist_clear(false);
  return id;
}

// Applies the clears bucket idx has not seen yet (settle() checks first).
void Writer::catch_up(uint32_t idx) {
  const uint64_t seen = applied_[idx];
  applied_[idx] = clear_latest_;
  if (clears_.size() <= 4 * clear_lengths_.size()) {
    for (Clear& c : clears_)
      if (c.id > seen) clear_bucket(idx, c);
    return;
  }
  // Many clears: each entry looks its key's prefixes up, one per distinct
  // prefix length, and goes to the first clear after `seen` that matches.
  const Bucket* b = bucket(idx);
  for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
    if (b->way[w] == 0) continue;
    const std::string_view key = item_key(item_at(way_unit(b->way[w]) * kItemAlign));
    uint64_t first = 0;
    for (const auto& [len, n] : clear_lengths_) {
      if (len > key.size()) break;
      auto it = clear_ids_.find(key.substr(0, len));
      if (it == clear_ids_.end()) continue;
      auto j = std::upper_bound(it->second.begin(), it->second.end(), seen);
      if (j != it->second.end() && (first == 0 || *j < first)) first = *j;
    }
    if (first == 0) continue;
    remove_at({idx, w}, Why::cleared);
    clears_[first - clears_.front().id].removed++;
  }
}

void Writer::clear_bucket(uint32_t idx, Clear& c) {
  const Bucket* b = bucket(idx);
  for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
    if (b->way[w] == 0) continue;
    if (c.prefix.empty() || item_key(item_at(way_unit(b->way[w]) * kItemAlign)).starts_with(c.prefix)) {
      remove_at({idx, w}, Why::cleared);
      c.removed++;
    }
  }
}

bool Writer::clear_step(size_t max_buckets) {
  if (clears_.empty()) return true;
  for (size_t i = 0; i < max_buckets && pass_cursor_ < nbuckets_; ++i) settle(uint32_t(pass_cursor_++));
  if (pass_cursor_ < nbuckets_) {
    persist_clear(true);
    return false;
  }
  // Every bucket has caught up to at least pass_target_.
  clear_completed_ = pass_target_;
  while (!clears_.empty() && clears_.front().id <= clear_completed_) {
    const Clear& c = clears_.front();
    clear_results_[c.id] = c.removed;
    auto it = clear_ids_.find(c.prefix);
    it->second.erase(it->second.begin());  // the oldest of its prefix
    if (it->second.empty()) clear_ids_.erase(it);
    if (--clear_lengths_[c.prefix.size()] == 0) clear_lengths_.erase(c.prefix.size());
    clears_.pop_front();
  }
  if (!clears_.empty()) {
    pass_target_ = clear_latest_;
    pass_cursor_ = 0;
  }
  persist_clear(false);
  return clears_.empty();
}

// What adoption needs to finish the pending clears after a crash, in
// WriterState: one clear that removes a superset of theirs (the longest
// prefix common to them all, cut to 1024 bytes) from the buckets at and after
// clear_cursor (0 unless a single clear is pending: then the pass's cursor).
// clear_id is zeroed while the rest is rewritten, so a crash at any point
// leaves either no clear or a complete record.
void Writer::persist_clear(bool cursor_only) {
  if (clears_.empty()) {
    store_relaxed(&state_->clear_id, uint64_t{0});
    return;
  }
  const uint64_t cursor = clears_.size() == 1 ? pass_cursor_ : 0;
  if (cursor_only) {
    if (clears_.size() == 1) store_relaxed(&state_->clear_cursor, cursor);
    return;
  }
  std::string_view common = clears_.front().prefix;
  for (const Clear& c : clears_) {
    size_t n = 0;
    while (n < common.size() && n < c.prefix.size() && common[n] == c.prefix[n]) ++n;
    common = common.substr(0, n);
  }
  common = common.substr(0, sizeof state_->clear_prefix);
  store_relaxed(&state_->clear_id, uint64_t{0});
  for (size_t i = 0; i < common.size(); ++i)
    store_relaxed(&state_->clear_prefix[i], static_cast<uint8_t>(common[i]));
  store_relaxed(&state_->clear_prefix_len, uint32_t(common.size()));
  store_relaxed(&state_->clear_epoch, epoch_);
  store_relaxed(&state_->clear_cursor, cursor);
  store_relaxed(&state_->clear_id, clears_.back().id);
}

uint64_t Writer::clear_take(uint64_t id) {
  auto it = clear_results_.find(id);
  if (it == clear_results_.end()) return 0;
  const uint64_t removed = it->second;
  clear_results_.erase(it);
  return removed;
}

}  // namespace nearcache::shm
