// shm/sweep.cc — the daemon's periodic maintenance: reclaiming expired items
// a slice of buckets at a time (expire_step), and returning the counter slots
// of reader processes that exited (reap_reader_slots), keeping their counts.
#include <signal.h>

#include <cerrno>

#include "writer_internal.h"

namespace nearcache::shm {

size_t Writer::expire_step(size_t max_buckets) {
  if (with_expiry_ == 0) return 0;
  const uint64_t now = now_();
  size_t reclaimed = 0;
  for (size_t i = 0; i < max_buckets; ++i) {
    const uint32_t idx = uint32_t(expire_cursor_);
    expire_cursor_ = (expire_cursor_ + 1) % nbuckets_;
    const Bucket* b = bucket(idx);
    for (uint32_t w = 0; w < kWaysPerBucket; ++w)
      if (b->way[w] != 0 && expired(item_at(way_unit(b->way[w]) * kItemAlign), now)) {
        remove_at({idx, w}, Why::expired);
        ++reclaimed;
      }
  }
  return reclaimed;
}

void Writer::reap_reader_slots() {
  if (!slots_) return;
  for (uint32_t i = 1; i < kCounterSlots; ++i) {
    ReaderCounters* c = &slots_[i];
    const uint32_t pid = load_relaxed(&c->pid);
    if (pid == 0 || kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    retired_hits_ += __atomic_exchange_n(&c->hits, 0, __ATOMIC_RELAXED);
    retired_misses_ += __atomic_exchange_n(&c->misses, 0, __ATOMIC_RELAXED);
    retired_busy_ += __atomic_exchange_n(&c->busy, 0, __ATOMIC_RELAXED);
    uint32_t expected = pid;
    __atomic_compare_exchange_n(&c->pid, &expected, 0u, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  }
}

}  // namespace nearcache::shm
