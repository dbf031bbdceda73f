// shm/sweep.cc — the daemon's periodic maintenance: reclaiming expired items
// a slice of buckets at a time (expire_step).
#include "writer_internal.h"

namespace nearcache::shm {

size_t Writer::expire_step(size_t max_buckets) {
  if (with_expiry_ == 0) return 0;
  const uint64_t now = now_();
  size_t reclaimed = 0;
  for (size_t i = 0; i < max_buckets; ++i) {
    const uint32_t idx = uint32_t(expire_cursor_);
    expire_cursor_ = (expire_cursor_ + 1) % nbuckets_;
    fresh(idx);
    const Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w)
      if (b->way[w] != 0 && expired(item_at(way_unit(b->way[w]) * kItemAlign), now)) {
        remove_at({idx, w}, Why::expired);
        ++reclaimed;
      }
  }
  return reclaimed;
}

}  // namespace nearcache::shm
