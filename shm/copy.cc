// shm/copy.cc — copying the table a previous writer left into a new table of
// another size (segment_size changed, so adoption is impossible), when the
// filesystem had room for both objects at once (writer.cc decides; without
// that room the start is cold). Each entry passes the checks adoption makes
// (adopt.cc: bucket not cut mid-write, way, item header, key, tag and bucket
// consistent, not expired, not under a CLEAR in progress, with a Redis tier
// synced and reconciled), plus the new table's key and value limits. When not
// all fit, the hottest are kept: the main queue's before the small queue's
// (an item in main was hit, or survived a pass of the small queue), newest
// first within each (access frequencies are the old writer's memory, lost).
// The kept ones are laid out oldest first, so the new logs keep the FIFO
// order. The old table is only read; writer.cc then publishes the new one and
// stops the old (its readers re-open by name, like after any new table).
#include <algorithm>

#include "segment_file.h"
#include "writer_internal.h"

namespace nearcache::shm {

namespace {

// The old table, its geometry checked against the object holding it.
struct Source {
  const Header* h = nullptr;
  const WriterState* ws = nullptr;
  const Bucket* buckets = nullptr;
  const unsigned char* data = nullptr;
  uint64_t data_bytes = 0, small_end = 0;
  uint32_t nbuckets = 0, epoch = 0;
  const ItemHeader* item(uint64_t off) const { return reinterpret_cast<const ItemHeader*>(data + off); }
  std::string_view key(const ItemHeader* ih) const {
    return {reinterpret_cast<const char*>(ih) + kItemHeaderBytes, meta_key_len(ih->meta)};
  }
};

// An entry of the old table that passed the checks.
struct Entry {
  uint64_t off, size, hash;
  uint64_t age;  // bytes from its log's saved tail: larger is newer
  bool main;
};

bool fail(std::string* why, const std::string& m) {
  *why = m;
  return false;
}

bool open_source(const MappedObject& old, uint32_t small_percent, Source* s, std::string* why) {
  const uint64_t n = old.size();
  if (n < kHeaderBytes) return fail(why, "the old segment is smaller than a header");
  const auto* h = reinterpret_cast<const Header*>(old.data());
  if (load_relaxed(&h->magic) != kMagic) return fail(why, "the old segment's header is unreadable (bad magic)");
  if (h->layout_version != kLayoutVersion)
    return fail(why, "layout version " + std::to_string(h->layout_version) + " (this build writes " +
                         std::to_string(kLayoutVersion) + ")");
  const uint32_t state = load_acquire(&h->state);
  if (state == uint32_t(SegmentState::initializing)) return fail(why, "the old table was never completed");
  if (state != uint32_t(SegmentState::running)) return fail(why, "the old table was stopped (nobody adopts it)");
  if (h->header_bytes != kHeaderBytes || h->segment_bytes != n || h->buckets_offset != kHeaderBytes ||
      h->bucket_ways != kWaysPerBucket || h->bucket_count == 0 || h->data_offset % kItemAlign != 0 ||
      h->data_bytes % kItemAlign != 0 || h->data_bytes < kItemHeaderBytes || h->key_limit > kMaxKeyLimit ||
      h->data_offset < h->buckets_offset + uint64_t(h->bucket_count) * kBucketBytes || h->data_offset > n ||
      h->data_bytes > n - h->data_offset)
    return fail(why, "the old table's geometry is inconsistent");
  const auto* ws = reinterpret_cast<const WriterState*>(old.data() + kWriterStateOffset);
  if (h->writer_state_offset != kWriterStateOffset || load_relaxed(&ws->magic) != kMagic)
    return fail(why, "the old table has no writer state");
  s->h = h;
  s->ws = ws;
  s->buckets = reinterpret_cast<const Bucket*>(old.data() + h->buckets_offset);
  s->data = old.data() + h->data_offset;
  s->data_bytes = h->data_bytes;
  s->small_end = round_up(h->data_bytes * small_percent / 100, kItemAlign);  // init_queues' split
  s->nbuckets = h->bucket_count;
  s->epoch = load_relaxed(&h->epoch);
  return true;
}

// How far after its log's saved tail an item lies (the saved fields lag the
// truth, so this orders by age up to the last items written).
uint64_t age_of(uint64_t off, uint64_t begin, uint64_t end, const WriterRingState& saved) {
  const uint64_t tail = load_relaxed(&saved.tail);
  if (tail < begin || tail >= end) return off - begin;
  return off >= tail ? off - tail : off + (end - tail) - begin;
}

}  // namespace

bool Writer::copy_from(const MappedObject& old, std::string* why) {
  Source src;
  if (!open_source(old, opts_.small_queue_percent, &src, why)) return false;
  // Nobody serves the new table before the copy is complete.
  store_release(&header_->state, uint32_t(SegmentState::initializing));
  start_.copied = true;
  auto drop = [&](Drop d) { start_.dropped[size_t(d)]++; };

  // The CLEAR in progress (adopt.cc): its prefix is removed at and after its cursor.
  const WriterState* ws = src.ws;
  const bool clearing = load_relaxed(&ws->clear_id) != 0 && load_relaxed(&ws->clear_epoch) == src.epoch;
  uint32_t plen = load_relaxed(&ws->clear_prefix_len);
  uint64_t cursor = load_relaxed(&ws->clear_cursor);
  if (plen > sizeof ws->clear_prefix || cursor > src.nbuckets) plen = 0, cursor = 0;  // unreadable: clear everything
  const std::string_view prefix(reinterpret_cast<const char*>(ws->clear_prefix), clearing ? plen : 0);

  const uint64_t now = now_();
  const uint64_t max_unit = (src.data_bytes - kItemHeaderBytes) / kItemAlign;
  std::vector<Entry> found;
  for (uint32_t idx = 0; idx < src.nbuckets; ++idx) {
    const Bucket* b = src.buckets + idx;
    if (b->epoch != src.epoch) continue;  // dropped by a drop_all: empty
    if (b->version & 1) {                 // a write was cut: nothing in it can be trusted
      for (uint32_t w = 0; w < kWaysPerBucket; ++w) start_.dropped[size_t(Drop::odd_bucket)] += b->way[w] != 0;
      start_.odd_buckets++;
      continue;
    }
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      const uint64_t way = b->way[w];
      if (way == 0) continue;
      if ((way & kWayUnitMask) == 0 || way_unit(way) > max_unit) {
        drop(Drop::bad_way);
        continue;
      }
      const uint64_t off = way_unit(way) * kItemAlign;
      const ItemHeader* ih = src.item(off);
      const uint64_t meta = ih->meta;
      if (meta_state(meta) != ItemState::live) {
        drop(Drop::bad_way);
        continue;
      }
      const uint32_t klen = meta_key_len(meta), vlen = meta_value_len(meta);
      const uint64_t size = item_bytes(klen, vlen);
      const bool in_main = off >= src.small_end;
      if (klen > src.h->key_limit || vlen > src.h->value_limit || off + size > (in_main ? src.data_bytes : src.small_end) ||
          (meta_negative(meta) && vlen != 0)) {
        drop(Drop::bad_item);
        continue;
      }
      const std::string_view key = src.key(ih);
      const uint64_t oh = key_hash(src.h->hash_key, key.data(), key.size());
      const BucketPair pair = buckets_of(oh, src.nbuckets);
      if (tag_of(oh) != way_tag(way) || (idx != pair.first && idx != pair.second)) {
        drop(Drop::bad_item);
        continue;
      }
      if (expired(ih, now)) drop(Drop::expired);
      else if (clearing && idx >= cursor && key.starts_with(prefix)) drop(Drop::cleared);
      else if (opts_.redis_tier && !(meta_bits(meta) & kItemSynced)) drop(Drop::unsynced);
      else if (opts_.redis_tier && opts_.redis_snapshot_generation != src.h->generation) drop(Drop::unreconciled);
      else if (klen > opts_.key_limit || vlen > opts_.value_limit) drop(Drop::too_large);
      else
        found.push_back({off, size, oh,
                         in_main ? age_of(off, src.small_end, src.data_bytes, ws->main) : age_of(off, 0, src.small_end, ws->small),
                         in_main});
    }
  }

  // One way per key and per item (a cut move between a key's two buckets
  // leaves the same way in both), and no two items sharing bytes (corrupt:
  // both go, as neither can be trusted).
  std::sort(found.begin(), found.end(), [](const Entry& a, const Entry& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.off < b.off;
  });
  size_t n = 0;  // compacted in place: a big table's list is big
  for (size_t i = 0; i < found.size(); ++i) {
    bool dup = false;
    for (size_t j = n; j-- > 0 && found[j].hash == found[i].hash && !dup;)
      dup = found[j].off == found[i].off || src.key(src.item(found[j].off)) == src.key(src.item(found[i].off));
    if (dup) drop(Drop::duplicate);
    else found[n++] = found[i];
  }
  found.resize(n);
  std::sort(found.begin(), found.end(), [](const Entry& a, const Entry& b) { return a.off < b.off; });
  std::vector<bool> overlaps(found.size(), false);
  uint64_t reach = 0;  // the furthest end so far, and the item that has it
  for (size_t i = 0, holder = 0; i < found.size(); ++i) {
    if (found[i].off < reach) overlaps[i] = overlaps[holder] = true;
    if (found[i].off + found[i].size > reach) reach = found[i].off + found[i].size, holder = i;
  }
  n = 0;
  for (size_t i = 0; i < found.size(); ++i)
    if (overlaps[i]) drop(Drop::bad_item);
    else found[n++] = found[i];
  found.resize(n);

  // The hottest first: main before small, newest first within each. An item
  // goes to the log it was in (to main when too large for small, as admit()
  // does); one of small for which small has no room left takes main's spare.
  std::sort(found.begin(), found.end(),
            [](const Entry& a, const Entry& b) { return a.main != b.main ? a.main : a.age > b.age; });
  std::vector<const Entry*> to_small, to_main;
  uint64_t small_left = small_.size(), main_left = main_.size();
  for (const Entry& e : found) {
    const bool main = e.main || e.size > small_.size() / 4;
    if (!main && e.size <= small_left) small_left -= e.size, to_small.push_back(&e);
    else if (e.size <= main_left) main_left -= e.size, to_main.push_back(&e);
  }
  // Laid out oldest first: the log's tail is where eviction looks first.
  for (auto [r, list] : {std::pair{&small_, &to_small}, std::pair{&main_, &to_main}})
    for (auto it = list->rbegin(); it != list->rend(); ++it) {
      const ItemHeader* ih = src.item((*it)->off);
      const uint64_t meta = ih->meta;
      const std::string_view key = src.key(ih);
      const std::string_view value(key.data() + key.size(), meta_value_len(meta));
      const uint8_t bits = meta_bits(meta) & (kItemNegative | (opts_.redis_tier ? kItemSynced : 0));
      uint64_t off;
      if (!place(*r, (*it)->size, &off)) continue;  // not reached: the sizes were budgeted
      write_item(off, key, value, meta_flags(meta), ih->expiry_ms, bits);
      const uint64_t h = hash(key);
      const Loc loc = free_way(h);  // a full pair of buckets evicts one: counted as no_room below
      Bucket* b = bucket(loc.bucket);
      begin_write(b);
      store_relaxed(&b->way[loc.way], make_way(tag_of(h), off / kItemAlign));
      end_write(b);
      st_.entries++;
      st_.negatives += meta_negative(meta);
      st_.live_bytes += key.size() + value.size();
      st_.item_bytes += (*it)->size;
      with_expiry_ += ih->expiry_ms != 0;
    }
  persist_rings();
  start_.kept = st_.entries;
  start_.dropped[size_t(Drop::no_room)] += found.size() - st_.entries;
  st_.evictions = st_.index_evictions = 0;  // what the copy could not place is no_room, not an eviction

  // With a Redis tier the copied entries may have missed invalidations like
  // adopted ones: the same suspension until the repair (main.cc seeds it).
  set_flag(kFlagSuspended, opts_.redis_tier && start_.kept > 0 && !opts_.redis_serve_adopted);
  store_relaxed(&state_->adopted_count, start_.kept);
  store_relaxed(&header_->heartbeat_ms, now_());
  store_release(&header_->state, uint32_t(SegmentState::running));
  return true;
}

}  // namespace nearcache::shm
