// shm/writer_internal.h — the Writer's small helpers that every writer*.cc
// file uses on its hot paths (hashing, the two-choice lookup, the bucket
// seqlock, retiring an item, the clear catch-up check), defined inline here
// so that splitting the writer into files of one concern costs no calls.
// Private to shm/.
#pragma once

#include "siphash.h"
#include "writer.h"

namespace nearcache::shm {

// Index sizing: buckets are planned three-quarters full at the expected item
// size. Two-choice placement keeps nearly every bucket below full until the
// table holds about a third more entries than that.
inline constexpr double kPlannedWays = 5.25;

inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

inline uint64_t Writer::hash(std::string_view key) const {
  return key_hash(header_->hash_key, key.data(), key.size());
}

inline std::string_view Writer::item_key(const ItemHeader* ih) const {
  return {reinterpret_cast<const char*>(ih) + kItemHeaderBytes, meta_key_len(ih->meta)};
}

inline bool Writer::expired(const ItemHeader* ih, uint64_t now) const {
  return ih->expiry_ms != 0 && ih->expiry_ms <= now;
}

// An item no way points to any more: marked dead, so that its log skips it,
// and taken out of the counts.
inline void Writer::retire(ItemHeader* ih) {
  const uint64_t m = ih->meta;
  store_relaxed(&ih->meta, make_meta(meta_value_len(m), meta_key_len(m), meta_flags(m), ItemState::dead));
  st_.entries--;
  st_.negatives -= meta_negative(m);
  st_.live_bytes -= meta_key_len(m) + uint64_t(meta_value_len(m));
  st_.item_bytes -= item_bytes(meta_key_len(m), meta_value_len(m));
  if (ih->expiry_ms != 0) with_expiry_--;
}

inline ItemHeader* Writer::item_of(const Loc& l) const {
  return item_at(way_unit(bucket(l.bucket)->way[l.way]) * kItemAlign);
}

// The way holding `key`, in either of its two buckets (settled: see settle_key).
inline Writer::Loc Writer::find(std::string_view key, uint64_t h) const {
  const uint16_t tag = tag_of(h);
  const BucketPair pair = buckets_of(h, nbuckets_);
  for (const uint32_t idx : {pair.first, pair.second}) {
    const Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      const uint64_t way = b->way[w];
      if (way == 0 || way_tag(way) != tag) continue;
      if (item_key(item_at(way_unit(way) * kItemAlign)) == key) return {idx, w};
    }
  }
  return {0, kWaysPerBucket};
}

// The way pointing at the item at data unit `unit` (its key hashes to h).
// Resets the two buckets first if they are of an older epoch: an item of a
// dropped table is then found nowhere, and its memory is reused only after
// its bucket's version moved on.
inline Writer::Loc Writer::find_unit(uint64_t h, uint64_t unit) {
  const BucketPair pair = buckets_of(h, nbuckets_);
  for (const uint32_t idx : {pair.first, pair.second}) {
    fresh(idx);
    const Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w)
      if (b->way[w] != 0 && way_unit(b->way[w]) == unit) return {idx, w};
  }
  return {0, kWaysPerBucket};
}

// Seqlock, writer side (Boehm's pattern): odd version, release fence, the
// changes (relaxed atomic stores), then the next even version with release.
inline void Writer::begin_write(Bucket* b) {
  store_relaxed(&b->version, b->version + 1);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

inline void Writer::end_write(Bucket* b) { store_release(&b->version, b->version + 1); }

inline void Writer::fresh(uint32_t idx) {
  if (buckets_[idx].epoch != epoch_) reset_bucket(idx);
}

// A bucket catches up with a whole-table drop and with pending clears before
// anything reads or changes it (clear.cc); nearly always there is nothing to do.
inline void Writer::settle(uint32_t idx) {
  fresh(idx);
  if (applied_[idx] < clear_latest_) catch_up(idx);
}

inline void Writer::settle_key(uint64_t h) {
  const BucketPair pair = buckets_of(h, nbuckets_);
  settle(pair.first);
  settle(pair.second);
}

// Drops n bytes from the tail of a log.
inline void Writer::advance_tail(Ring& r, uint64_t n) {
  r.tail += n;
  r.used -= n;
  if (r.tail == r.end) r.tail = r.begin;
  if (r.used == 0) r.head = r.tail = r.begin;
}

}  // namespace nearcache::shm
