// shm/index.cc — the index: 64-byte buckets of seven ways, two-choice
// placement of a new key (free_way, with one cuckoo step before it evicts),
// and removing an entry. The lookups and the bucket seqlock are inline in
// writer_internal.h.
#include "writer_internal.h"

namespace nearcache::shm {

// A way for a new key: an empty way in the emptier of its two buckets; when
// both are full, a way freed by moving an entry to its other bucket; failing
// that, the way of the least used entry of the two, which is evicted.
Writer::Loc Writer::free_way(uint64_t h) {
  const BucketPair pair = buckets_of(h, nbuckets_);
  Loc empty{0, kWaysPerBucket}, victim{0, kWaysPerBucket};
  uint32_t most_empty = 0;
  int victim_score = 1 << 30;
  const uint64_t now = now_();
  for (const uint32_t idx : {pair.first, pair.second}) {
    const Bucket* b = bucket(idx);
    uint32_t n_empty = 0;
    Loc first_empty{0, kWaysPerBucket};
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      if (b->way[w] == 0) {
        if (n_empty++ == 0) first_empty = {idx, w};
        continue;
      }
      const uint64_t off = way_unit(b->way[w]) * kItemAlign;
      // Prefer expired entries, then the small queue, then the least used.
      const int score = expired(item_at(off), now) ? -1 : (off < small_.end ? 0 : 4) + *freq({idx, w});
      if (score < victim_score) victim_score = score, victim = {idx, w};
    }
    if (n_empty > most_empty) most_empty = n_empty, empty = first_empty;
  }
  if (empty.found()) return empty;
  // Both full: move one of their entries to its own other bucket if that has
  // room (one cuckoo step). The entry is published there before it leaves
  // here, so a reader finds it in one bucket or the other.
  for (const uint32_t idx : {pair.first, pair.second}) {
    Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w) {
      const uint64_t way = b->way[w];
      const BucketPair other = buckets_of(hash(item_key(item_at(way_unit(way) * kItemAlign))), nbuckets_);
      const uint32_t alt = other.first == idx ? other.second : other.first;
      // Settled first (which also resets a bucket of an older epoch, where a
      // way would be invisible): the entry comes from a settled bucket, so
      // pending clears and visits have dealt with it already and must not
      // apply to it again in its new bucket (a visit would see it twice, a
      // clear would remove an entry stored after it began).
      settle(alt);
      Bucket* a = bucket(alt);
      for (uint32_t aw = 0; aw < kWaysPerBucket; ++aw) {
        if (a->way[aw] != 0) continue;
        begin_write(a);
        store_relaxed(&a->way[aw], way);
        end_write(a);
        begin_write(b);
        store_relaxed(&b->way[w], uint64_t{0});
        end_write(b);
        *freq({alt, aw}) = *freq({idx, w});
        *freq({idx, w}) = 0;
        st_.index_moves++;
        return {idx, w};
      }
    }
  }
  remove_at(victim, victim_score < 0 ? Why::expired : Why::evicted);
  if (victim_score >= 0) st_.index_evictions++;
  return victim;
}

// Lazy reclaim after drop_all: the bucket's ways go (inside its seqlock, so
// that its version moves on before their items' memory is reused) and it
// joins the current epoch. Its entries were already uncounted by drop_all.
void Writer::reset_bucket(uint32_t idx) {
  Bucket* b = bucket(idx);
  begin_write(b);
  for (uint32_t w = 0; w < kWaysPerBucket; ++w) store_relaxed(&b->way[w], uint64_t{0});
  store_relaxed(&b->epoch, epoch_);
  end_write(b);
  for (uint32_t w = 0; w < 8; ++w) freq_[uint64_t(idx) * 8 + w] = 0;
}

void Writer::remove_at(const Loc& loc, Why why) {
  Bucket* b = bucket(loc.bucket);
  const uint64_t way = b->way[loc.way];
  begin_write(b);
  store_relaxed(&b->way[loc.way], uint64_t{0});
  end_write(b);
  // The item's bytes now belong to its log only; readers that still hold the
  // way will fail their version check.
  retire(item_at(way_unit(way) * kItemAlign));
  *freq(loc) = 0;
  switch (why) {
    case Why::expired: st_.expirations++; break;
    case Why::evicted: st_.evictions++; break;
    case Why::cleared: st_.cleared++; break;
    case Why::deleted:
    case Why::replaced: break;
  }
}

}  // namespace nearcache::shm
