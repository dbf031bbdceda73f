// daemon/engine/hit_window.h — the hit ratio over the last minute, from the
// hits and misses totals sampled when STATUS is asked (no timer: a daemon
// nobody asks does no work for it). At most one sample a second is kept, and
// one that is at least a minute old: the ratio is over the time since the
// newest sample at least a minute old (the start counts as 0 hits, 0
// misses), so exactly the last minute (to a second) when STATUS comes at
// least once a second (`nearcache top`, a scraper), longer otherwise; the
// window's length is reported beside it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nearcache::daemon {

class HitWindow {
 public:
  static constexpr uint64_t kSpanMs = 60000;

  struct Ratio {
    double ratio;        // hits / (hits + misses) in the window; 0 when it had no lookups
    uint64_t window_ms;  // the window's length
  };

  // Records the totals at now_ms (the first call also records start_ms's
  // zeros) and returns the ratio since the newest sample at least kSpanMs old.
  Ratio sample(uint64_t start_ms, uint64_t now_ms, uint64_t hits, uint64_t misses) {
    if (size_ == 0) push({start_ms, 0, 0});
    if (now_ms >= at(size_ - 1).at_ms + 1000) push({now_ms, hits, misses});
    while (size_ >= 2 && at(1).at_ms + kSpanMs <= now_ms) head_ = (head_ + 1) % kSlots, --size_;
    const Sample& base = at(0);
    const uint64_t h = hits > base.hits ? hits - base.hits : 0, m = misses > base.misses ? misses - base.misses : 0;
    return {h + m ? double(h) / double(h + m) : 0.0, now_ms > base.at_ms ? now_ms - base.at_ms : 0};
  }

 private:
  struct Sample {
    uint64_t at_ms, hits, misses;
  };
  // A minute of one-a-second samples and the base: 62 at most.
  static constexpr size_t kSlots = 64;

  const Sample& at(size_t i) const { return ring_[(head_ + i) % kSlots]; }
  void push(Sample s) {
    if (size_ == kSlots) head_ = (head_ + 1) % kSlots, --size_;  // not reached: see kSlots
    ring_[(head_ + size_++) % kSlots] = s;
  }

  Sample ring_[kSlots] = {};
  size_t head_ = 0, size_ = 0;
};

}  // namespace nearcache::daemon
