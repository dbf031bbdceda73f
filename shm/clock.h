// shm/clock.h — the host's clocks, one definition each: CLOCK_MONOTONIC in
// milliseconds (the table's expiries and heartbeats, shared by every process
// on the host) and microseconds (deadlines, wait times), and the wall clock in
// milliseconds (generations, "since" times). Served by the vDSO: no system
// call. POSIX only, like layout.h, so the reader can use it.
#pragma once

#include <time.h>

#include <cstdint>

namespace nearcache::shm {

inline uint64_t monotonic_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

inline uint64_t monotonic_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}

inline uint64_t unix_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

}  // namespace nearcache::shm
