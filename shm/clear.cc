// shm/clear.cc — CLEAR (all keys, those with a prefix, or those matching a
// glob pattern) without a pause, and visits (the daemon's SCAN) on the same
// machinery: clear_begin records the clear, clear_step walks the buckets a
// slice at a time, and any bucket an operation touches first catches up with
// the clears pending for it (settle, inline in writer_internal.h), so a
// cleared key is never served by the writer, a later write is never lost,
// and a visit sees each entry present when it began exactly once (an entry
// moved to its other bucket goes only into a settled one: index.cc).
#include <algorithm>

#include "glob.h"
#include "writer_internal.h"

namespace nearcache::shm {

uint64_t Writer::add_clear(Clear c) {
  const uint64_t id = c.id = ++clear_latest_;
  if (c.special()) {
    special_ids_.push_back(id);
  } else {
    clear_ids_[c.prefix].push_back(id);
    clear_lengths_[c.prefix.size()]++;
  }
  clears_.push_back(std::move(c));
  if (clears_.size() == 1) {
    pass_target_ = id;
    pass_cursor_ = 0;
  }
  persist_clear(false);
  return id;
}

uint64_t Writer::clear_begin(std::string_view prefix) {
  st_.clears++;
  Clear c;
  c.prefix.assign(prefix);
  return add_clear(std::move(c));
}

uint64_t Writer::clear_begin_match(std::string_view pattern) {
  st_.clears++;
  Clear c;
  c.prefix.assign(glob_prefix(pattern));
  c.pattern.assign(pattern);
  c.glob = true;
  return add_clear(std::move(c));
}

uint64_t Writer::visit_begin(std::string_view pattern) {
  Clear c;
  c.prefix.assign(glob_prefix(pattern));
  c.pattern.assign(pattern);
  c.visit = true;
  return add_clear(std::move(c));
}

bool Writer::clear_matches(const Clear& c, std::string_view key) const {
  if (!key.starts_with(c.prefix)) return false;
  return !c.special() || glob_match(c.pattern, key);
}

void Writer::visit_item(Clear& c, const ItemHeader* ih) {
  if (expired(ih, now_()) || meta_negative(ih->meta)) return;
  c.removed++;  // a visit's count: entries visited
  if (!visitor_) return;
  Item it;
  it.key = item_key(ih);
  it.value = {it.key.data() + it.key.size(), meta_value_len(ih->meta)};
  it.flags = meta_flags(ih->meta);
  it.expiry_ms = ih->expiry_ms;
  visitor_(c.id, it);
}

// Applies the clears bucket idx has not seen yet (settle() checks first).
void Writer::catch_up(uint32_t idx) {
  const uint64_t seen = applied_[idx];
  applied_[idx] = clear_latest_;
  const size_t by_prefix = clears_.size() - special_ids_.size();
  if (by_prefix <= 4 * std::max<size_t>(1, clear_lengths_.size())) {
    for (Clear& c : clears_)
      if (c.id > seen) clear_bucket(idx, c);
    return;
  }
  // Many clears: each entry looks its key's prefixes up, one per distinct
  // prefix length, and goes to the first clear after `seen` that matches;
  // the glob clears and visits before it (few) are tried in order.
  const Bucket* b = bucket(idx);
  for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
    if (b->way[w] == 0) continue;
    const ItemHeader* ih = item_at(way_unit(b->way[w]) * kItemAlign);
    const std::string_view key = item_key(ih);
    uint64_t first = 0;
    for (const auto& [len, n] : clear_lengths_) {
      if (len > key.size()) break;
      auto it = clear_ids_.find(key.substr(0, len));
      if (it == clear_ids_.end()) continue;
      auto j = std::upper_bound(it->second.begin(), it->second.end(), seen);
      if (j != it->second.end() && (first == 0 || *j < first)) first = *j;
    }
    for (const uint64_t sid : special_ids_) {
      if (sid <= seen) continue;
      if (first != 0 && sid > first) break;
      Clear& c = clears_[sid - clears_.front().id];
      if (!clear_matches(c, key)) continue;
      if (c.visit) {
        visit_item(c, ih);
        continue;
      }
      first = sid;
      break;
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
    const ItemHeader* ih = item_at(way_unit(b->way[w]) * kItemAlign);
    if (!c.prefix.empty() || c.special()) {
      if (!clear_matches(c, item_key(ih))) continue;
    }
    if (c.visit) {
      visit_item(c, ih);
      continue;
    }
    remove_at({idx, w}, Why::cleared);
    c.removed++;
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
    if (c.special()) {
      special_ids_.pop_front();  // ascending: the oldest is this one
    } else {
      auto it = clear_ids_.find(c.prefix);
      it->second.erase(it->second.begin());  // the oldest of its prefix
      if (it->second.empty()) clear_ids_.erase(it);
      if (--clear_lengths_[c.prefix.size()] == 0) clear_lengths_.erase(c.prefix.size());
    }
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
  // Visits remove nothing: they are not recorded (a glob clear is, by its
  // pattern's literal prefix: a superset).
  const Clear* first = nullptr;
  uint64_t last_id = 0;
  for (const Clear& c : clears_)
    if (!c.visit) first = first ? first : &c, last_id = c.id;
  if (!first) {
    store_relaxed(&state_->clear_id, uint64_t{0});
    return;
  }
  const uint64_t cursor = clears_.size() == 1 ? pass_cursor_ : 0;
  if (cursor_only) {
    if (clears_.size() == 1) store_relaxed(&state_->clear_cursor, cursor);
    return;
  }
  std::string_view common = first->prefix;
  for (const Clear& c : clears_) {
    if (c.visit) continue;
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
  store_relaxed(&state_->clear_id, last_id);
}

uint64_t Writer::clear_take(uint64_t id) {
  auto it = clear_results_.find(id);
  if (it == clear_results_.end()) return 0;
  const uint64_t removed = it->second;
  clear_results_.erase(it);
  return removed;
}

}  // namespace nearcache::shm
