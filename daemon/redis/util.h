// daemon/redis/util.h — small helpers shared by the Redis tier's components.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "clock.h"  // shm/

namespace nearcache::redis {

// The host's clocks (shm/clock.h, header only): CLOCK_MONOTONIC milliseconds,
// the clock of the table's expiries, and the wall clock for "since" times in STATUS.
inline constexpr auto& mono_ms = shm::monotonic_ms;
inline constexpr auto& unix_ms = shm::unix_ms;

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
