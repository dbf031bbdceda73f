// daemon/redis/util.h — small helpers shared by the Redis tier's components.
#pragma once

#include <time.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace nearcache::redis {

// CLOCK_MONOTONIC milliseconds: the clock of the table's expiries (shm::monotonic_ms).
inline uint64_t mono_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

// Wall clock milliseconds, for "since" times shown in STATUS.
inline uint64_t unix_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

// A key for log lines: printable, at most 80 bytes.
std::string printable(std::string_view key);

// Logs at most once per `period_ms`; says how many were suppressed.
class Throttle {
 public:
  explicit Throttle(uint64_t period_ms = 10000) : period_(period_ms) {}
  // True when this event should be logged; *suppressed = events skipped since the last one logged.
  bool allow(uint64_t* suppressed) {
    const uint64_t now = mono_ms();
    if (last_ && now - last_ < period_) {
      skipped_++;
      return false;
    }
    last_ = now ? now : 1;
    *suppressed = skipped_;
    skipped_ = 0;
    return true;
  }

 private:
  uint64_t period_, last_ = 0, skipped_ = 0;
};

}  // namespace nearcache::redis
