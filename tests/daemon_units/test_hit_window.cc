// tests/daemon_units/test_hit_window.cc — STATUS's hit ratio over the last minute (engine/hit_window.h).
#include <catch2/catch.hpp>

#include "engine/hit_window.h"

using nearcache::daemon::HitWindow;

TEST_CASE("within the first minute the window starts at the start") {
  HitWindow w;
  auto r = w.sample(1000, 11000, 3, 1);
  CHECK(r.ratio == Approx(0.75));
  CHECK(r.window_ms == 10000);
  r = w.sample(1000, 31000, 3, 3);
  CHECK(r.ratio == Approx(0.5));
  CHECK(r.window_ms == 30000);
}

TEST_CASE("asked every second, the window is the last minute exactly") {
  HitWindow w;
  uint64_t hits = 0, misses = 0;
  HitWindow::Ratio r{};
  // 100 s at 10 hits a second, then 60 s at 10 misses a second.
  for (uint64_t t = 1; t <= 160; ++t) {
    if (t <= 100) hits += 10;
    else misses += 10;
    r = w.sample(0, t * 1000, hits, misses);
    if (t == 100) CHECK(r.ratio == Approx(1.0));
    if (t == 130) CHECK(r.ratio == Approx(0.5));
  }
  CHECK(r.window_ms == 60000);
  CHECK(r.ratio == Approx(0.0));
}

TEST_CASE("asked rarely, the window is longer and says so") {
  HitWindow w;
  w.sample(0, 100000, 50, 50);
  auto r = w.sample(0, 115000, 60, 50);  // newest sample at least a minute old: the start
  CHECK(r.window_ms == 115000);
  r = w.sample(0, 300000, 160, 50);  // base: the sample at 115 s
  CHECK(r.window_ms == 185000);
  CHECK(r.ratio == Approx(1.0));
  r = w.sample(0, 300500, 160, 60);  // within the second: not recorded, the same base
  CHECK(r.window_ms == 185500);
  CHECK(r.ratio == Approx(100.0 / 110.0));
}

TEST_CASE("no lookups in the window is a ratio of 0") {
  HitWindow w;
  CHECK(w.sample(0, 5000, 0, 0).ratio == 0.0);
}
