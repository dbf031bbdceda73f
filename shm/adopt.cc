// shm/adopt.cc — adopting the table a previous writer left (after SIGTERM, or
// after kill -9 at any instruction): the layout and geometry must match; then
// every entry is validated (its bucket not cut mid-write, its way, item
// header, key, tag and bucket consistent, no second way to it), a CLEAR in
// progress is finished, and the two logs' state is rebuilt from the kept
// items, with WriterState's ring fields (which lag behind the truth) as the
// hint of where the oldest item is. Dead space between kept items is marked
// so that the logs can walk it. The generation stays: readers that mapped the
// table keep serving it. Frequencies restart at 0 and the S3-FIFO ghost queue
// (writer memory only) is lost. See doc/segment.md, "Adoption".
#include <unistd.h>

#include <algorithm>

#include "segment_file.h"
#include "writer_internal.h"

namespace nearcache::shm {

struct Writer::Kept {
  uint64_t off, size, hash;
  uint32_t bucket, way;
};

const char* drop_name(Drop d) {
  switch (d) {
    case Drop::odd_bucket: return "odd_bucket";
    case Drop::bad_way: return "bad_way";
    case Drop::bad_item: return "bad_item";
    case Drop::outside_ring: return "outside_ring";
    case Drop::duplicate: return "duplicate";
    case Drop::expired: return "expired";
    case Drop::cleared: return "cleared";
    case Drop::unsynced: return "unsynced";
    case Drop::unreconciled: return "unreconciled";
    case Drop::too_large: return "too_large";
    case Drop::no_room: return "no_room";
    case Drop::kCount: break;
  }
  return "?";
}

uint64_t StartReport::dropped_total() const {
  uint64_t n = 0;
  for (uint64_t d : dropped) n += d;
  return n;
}

std::string StartReport::summary() const {
  std::string why;
  for (size_t i = 0; i < size_t(Drop::kCount); ++i)
    if (dropped[i]) why += (why.empty() ? "" : ", ") + std::string(drop_name(Drop(i))) + " " + std::to_string(dropped[i]);
  const std::string counts =
      std::to_string(kept) + " entries kept, " + std::to_string(dropped_total()) + " dropped" + (why.empty() ? "" : " (" + why + ")");
  if (!warm)
    return "cold start: " + reason + (reused_in_place ? "; new table written in place of the old one" : "; new table") +
           (copied ? "; the old table's entries copied into it: " + counts : "");
  std::string s = "warm start: adopted the table left by a writer that " +
                  std::string(clean_shutdown ? "stopped cleanly" : "did not stop cleanly (killed or crashed)") + ": " +
                  counts;
  if (odd_buckets) s += "; " + std::to_string(odd_buckets) + " bucket(s) found mid-write";
  if (ring_rebuilt) s += "; log state rebuilt from the items";
  return s;
}

// The old table can be adopted: same layout, geometry and limits, and a
// writer state block. *why says what differs.
bool Writer::adoptable(const Geometry& g, std::string* why) const {
  const auto* h = reinterpret_cast<const Header*>(segment_->data());
  auto differs = [&](const char* what, uint64_t was, uint64_t now) {
    *why = std::string(what) + " changed (" + std::to_string(was) + " -> " + std::to_string(now) + ")";
    return false;
  };
  if (load_relaxed(&h->magic) != kMagic) return *why = "the old segment's header is unreadable (bad magic)", false;
  if (h->layout_version != kLayoutVersion) return differs("layout version", h->layout_version, kLayoutVersion);
  if (load_acquire(&h->state) == uint32_t(SegmentState::initializing))
    return *why = "the old table was never completed (state initializing)", false;
  if (h->header_bytes != kHeaderBytes) return differs("header size", h->header_bytes, kHeaderBytes);
  if (h->segment_bytes != g.segment_bytes) return differs("segment_size", h->segment_bytes, g.segment_bytes);
  if (h->bucket_count != g.bucket_count || h->buckets_offset != g.buckets_offset || h->bucket_ways != kWaysPerBucket)
    return differs("bucket count (expected_item_size)", h->bucket_count, g.bucket_count);
  if (h->data_offset != g.data_offset || h->data_bytes != g.data_bytes)
    return differs("data area", h->data_bytes, g.data_bytes);
  if (h->key_limit != opts_.key_limit) return differs("key_limit", h->key_limit, opts_.key_limit);
  if (h->value_limit != opts_.value_limit) return differs("value_limit", h->value_limit, opts_.value_limit);
  const auto* ws = reinterpret_cast<const WriterState*>(segment_->data() + kWriterStateOffset);
  if (h->writer_state_offset != kWriterStateOffset || load_relaxed(&ws->magic) != kMagic)
    return *why = "the old table has no writer state", false;
  return true;
}

// Clears a way under its bucket's seqlock (a reader holding it retries).
// The item's bytes are left alone: another way may share them (a cut move),
// and the log rebuild marks what no kept item covers.
void Writer::drop_way(uint32_t idx, uint32_t w, Drop why) {
  Bucket* b = bucket(idx);
  begin_write(b);
  store_relaxed(&b->way[w], uint64_t{0});
  end_write(b);
  start_.dropped[size_t(why)]++;
}

// Validates one way of an even, current-epoch bucket; drops it (and says
// why) or describes its item in *out.
bool Writer::keep_way(uint32_t idx, uint32_t w, std::string_view clear_prefix, bool clearing, Kept* out) {
  const uint64_t way = bucket(idx)->way[w];
  auto drop = [&](Drop why) {
    drop_way(idx, w, why);
    return false;
  };
  const uint64_t data_bytes = header_->data_bytes;
  if ((way & kWayUnitMask) == 0 || way_unit(way) > (data_bytes - kItemHeaderBytes) / kItemAlign)
    return drop(Drop::bad_way);
  const uint64_t off = way_unit(way) * kItemAlign;
  const ItemHeader* ih = item_at(off);
  const uint64_t meta = ih->meta;
  if (meta_state(meta) != ItemState::live) return drop(Drop::bad_way);
  const uint32_t klen = meta_key_len(meta), vlen = meta_value_len(meta);
  if (klen > opts_.key_limit || vlen > opts_.value_limit) return drop(Drop::bad_item);
  const uint64_t size = item_bytes(klen, vlen);
  if (off + size > ring_of(off).end) return drop(Drop::bad_item);
  if (meta_negative(meta) && vlen != 0) return drop(Drop::bad_item);
  const std::string_view key = item_key(ih);
  const uint64_t h = hash(key);
  const BucketPair pair = buckets_of(h, nbuckets_);
  if (tag_of(h) != way_tag(way) || (idx != pair.first && idx != pair.second)) return drop(Drop::bad_item);
  if (expired(ih, now_())) return drop(Drop::expired);
  if (clearing && key.starts_with(clear_prefix)) return drop(Drop::cleared);
  if (opts_.redis_tier) {
    if (!(meta_bits(meta) & kItemSynced)) return drop(Drop::unsynced);
    if (opts_.redis_snapshot_generation != header_->generation) return drop(Drop::unreconciled);
  }
  *out = {off, size, h, idx, w};
  return true;
}

// Rebuilds one log from its kept items: the walk starts at the first item at
// or after the saved tail (the oldest bytes, or older ones: the fields lag),
// goes around once, and every gap becomes a dead filler item (or the wrap
// padding at the end), so that the log's tail can walk from item to item.
// Items that overlap the walk are dropped. `items` is left holding the kept.
void Writer::rebuild_ring(Ring& r, const WriterRingState& saved, std::vector<Kept>& items) {
  const uint64_t tail_hint = load_relaxed(&saved.tail), head_hint = load_relaxed(&saved.head);
  const bool hint_ok = tail_hint >= r.begin && tail_hint < r.end && tail_hint % kItemAlign == 0 &&
                       head_hint >= r.begin && head_hint <= r.end && load_relaxed(&saved.used) <= r.size();
  if (!hint_ok && !items.empty()) start_.ring_rebuilt = true;
  std::sort(items.begin(), items.end(), [](const Kept& a, const Kept& b) { return a.off < b.off; });
  // Where the walk starts: after a gap too small for a filler if there is
  // one (inside the live range items are contiguous or apart by whole dead
  // items, so such a gap can only be the free space between head and tail);
  // else at the saved tail; else after the largest gap.
  uint64_t start = hint_ok ? tail_hint : r.begin;
  uint64_t largest = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const uint64_t prev_end = i ? items[i - 1].off + items[i - 1].size : items.back().off + items.back().size;
    const uint64_t gap = i ? (items[i].off >= prev_end ? items[i].off - prev_end : 0)
                           : (items[0].off - r.begin) + (r.end >= prev_end ? r.end - prev_end : 0);
    if (gap > 0 && gap < kItemHeaderBytes) {
      start = items[i].off;
      break;
    }
    if (!hint_ok && gap > largest) largest = gap, start = items[i].off;
  }
  std::rotate(items.begin(),
              std::lower_bound(items.begin(), items.end(), start, [](const Kept& k, uint64_t o) { return k.off < o; }),
              items.end());
  std::vector<Kept> kept;
  kept.reserve(items.size());
  uint64_t tail = r.begin, cur = r.begin;
  bool wrapped = false;
  for (const Kept& k : items) {
    if (kept.empty()) {
      tail = cur = k.off;
    } else if (!wrapped && k.off < tail) {  // the rest lies before the tail: the log wraps here
      if (r.end - cur >= kItemHeaderBytes) store_relaxed(&item_at(cur)->meta, make_meta(0, 0, 0, ItemState::wrap));
      cur = r.begin;
      wrapped = true;
    }
    if (k.off < cur || (wrapped && k.off + k.size > tail) || (k.off > cur && k.off - cur < kItemHeaderBytes)) {
      drop_way(k.bucket, k.way, Drop::outside_ring);
      continue;
    }
    if (k.off > cur) {  // dead space: one filler item covering it
      ItemHeader* f = item_at(cur);
      store_relaxed(&f->expiry_ms, uint64_t{0});
      store_relaxed(&f->meta, make_meta(uint32_t(k.off - cur - kItemHeaderBytes), 0, 0, ItemState::dead));
      start_.filler_bytes += k.off - cur;
    }
    kept.push_back(k);
    cur = k.off + k.size;
  }
  if (kept.empty()) {
    r.head = r.tail = r.begin;
    r.used = 0;
  } else {
    r.tail = tail;
    r.head = cur == r.end ? r.begin : cur;
    r.used = wrapped ? (r.end - tail) + (cur - r.begin) : cur - tail;
  }
  items.swap(kept);
}

void Writer::adopt(const Geometry& g) {
  map_table(g);
  epoch_ = load_relaxed(&header_->epoch);
  start_.warm = true;
  start_.reason = "adopted";
  start_.clean_shutdown = load_relaxed(&state_->clean_shutdown) == 1;
  store_relaxed(&state_->clean_shutdown, 0u);
  // With a Redis tier not even a miss in the adopted table is definite.
  if (opts_.redis_tier) set_flag(kFlagAuthoritative, false);

  // The CLEAR in progress (a superset of the pending ones, clear.cc): applied
  // to the buckets its pass had not reached. After a drop_all it is complete.
  const bool clearing = load_relaxed(&state_->clear_id) != 0 && load_relaxed(&state_->clear_epoch) == epoch_;
  uint32_t plen = load_relaxed(&state_->clear_prefix_len);
  uint64_t cursor = load_relaxed(&state_->clear_cursor);
  if (plen > sizeof state_->clear_prefix || cursor > nbuckets_) plen = 0, cursor = 0;  // unreadable: clear everything
  const std::string prefix(reinterpret_cast<const char*>(state_->clear_prefix), clearing ? plen : 0);

  std::vector<Kept> kept;
  for (uint32_t idx = 0; idx < nbuckets_; ++idx) {
    Bucket* b = bucket(idx);
    const uint32_t v = b->version;
    if (v & 1) {  // a write was cut: nothing in it can be trusted
      if (b->epoch == epoch_)
        for (uint32_t w = 0; w < kWaysPerBucket; ++w) start_.dropped[size_t(Drop::odd_bucket)] += b->way[w] != 0;
      for (uint32_t w = 0; w < kWaysPerBucket; ++w) store_relaxed(&b->way[w], uint64_t{0});
      store_relaxed(&b->epoch, epoch_);
      store_release(&b->version, v + 1);
      start_.odd_buckets++;
      continue;
    }
    if (b->epoch != epoch_) {  // dropped by a drop_all before the restart
      reset_bucket(idx);
      continue;
    }
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      Kept k;
      if (b->way[w] != 0 && keep_way(idx, w, prefix, clearing && idx >= cursor, &k)) kept.push_back(k);
    }
  }

  // One way per key and per item: a move between a key's two buckets that was
  // cut leaves the same way in both.
  std::sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.off < b.off;
  });
  std::vector<Kept> unique;
  unique.reserve(kept.size());
  for (const Kept& k : kept) {
    bool dup = false;
    for (size_t j = unique.size(); j-- > 0 && unique[j].hash == k.hash;)
      if (unique[j].off == k.off || item_key(item_at(unique[j].off)) == item_key(item_at(k.off))) dup = true;
    if (dup) drop_way(k.bucket, k.way, Drop::duplicate);
    else unique.push_back(k);
  }

  std::vector<Kept> in_small, in_main;
  for (const Kept& k : unique) (k.off < small_.end ? in_small : in_main).push_back(k);
  rebuild_ring(small_, state_->small, in_small);
  rebuild_ring(main_, state_->main, in_main);

  for (const std::vector<Kept>* v : {&in_small, &in_main})
    for (const Kept& k : *v) {
      const ItemHeader* ih = item_at(k.off);
      st_.entries++;
      st_.negatives += meta_negative(ih->meta);
      st_.live_bytes += meta_key_len(ih->meta) + uint64_t(meta_value_len(ih->meta));
      st_.item_bytes += k.size;
      with_expiry_ += ih->expiry_ms != 0;
    }
  start_.kept = st_.entries;

  persist_rings();
  store_relaxed(&state_->clear_id, uint64_t{0});  // finished above
  store_relaxed(&state_->adopted_count, start_.kept);
  store_relaxed(&header_->writer_pid, uint32_t(getpid()));
  store_relaxed(&header_->heartbeat_grace_ms, opts_.heartbeat_grace_ms);
  // Entries from Redis are served only after the repair against the snapshot,
  // unless the daemon vouches for the gap's bound meanwhile (serve_adopted).
  set_flag(kFlagSuspended, opts_.redis_tier && start_.kept > 0 && !opts_.redis_serve_adopted);
  store_relaxed(&header_->table_id, uint32_t(header_->generation));  // a table written before table_id existed
  store_relaxed(&header_->heartbeat_ms, now_());
  store_release(&header_->state, uint32_t(SegmentState::running));
}

}  // namespace nearcache::shm
