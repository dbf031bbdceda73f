// tests/daemon_units/test_key_stats.cc — KeyStats (engine/key_stats.h): the
// two windows, the bounds on keys and prefixes, the order of the reports, and
// key_prefix (protocol/key_prefix.h).
#include <catch2/catch.hpp>
#include <string>

#include "engine/key_stats.h"
#include "protocol/key_prefix.h"

using nearcache::daemon::key_prefix;
using nearcache::daemon::KeyStats;

TEST_CASE("key_prefix cuts at the DEPTH-th separator, or the last one") {
  CHECK(key_prefix("a:b:c", 1) == "a:");
  CHECK(key_prefix("a:b:c", 2) == "a:b:");
  CHECK(key_prefix("a:b:c", 5) == "a:b:");
  CHECK(key_prefix("plain", 1) == "");
  CHECK(key_prefix(":1:views", 3) == ":1:");
  CHECK(key_prefix("a.b:c", 1, ".:") == "a.");
}

TEST_CASE("key stats count over the current and the previous window") {
  KeyStats ks;
  ks.hit("u:1", 1, 1000);
  ks.hit("u:1", 4, 2000);
  ks.hit("v:1", 2, 3000);
  ks.miss("u:2", 3000);
  auto keys = ks.hot_keys(10, 3000);
  REQUIRE(keys.size() == 2);
  CHECK(keys[0].key == "u:1");
  CHECK(keys[0].hits == 5);
  CHECK(keys[1].key == "v:1");
  auto pre = ks.prefixes(10, 3000);
  REQUIRE(pre.size() == 2);
  CHECK((pre[0].prefix == "u:" && pre[0].hits == 5 && pre[0].misses == 1));
  CHECK((pre[1].prefix == "v:" && pre[1].hits == 2 && pre[1].misses == 0));

  // Next window: the previous one still counts.
  ks.hit("v:1", 10, 1000 + KeyStats::kWindowMs);
  keys = ks.hot_keys(10, 1000 + KeyStats::kWindowMs);
  CHECK(keys[0].key == "v:1");
  CHECK(keys[0].hits == 12);
  CHECK(ks.span_ms(1000 + KeyStats::kWindowMs) == KeyStats::kWindowMs);
  // Two windows on, the first is gone.
  keys = ks.hot_keys(10, 1000 + 2 * KeyStats::kWindowMs);
  REQUIRE(keys.size() == 1);
  CHECK(keys[0].hits == 10);
  // Idle for two windows: nothing is left.
  CHECK(ks.hot_keys(10, 1000 + 5 * KeyStats::kWindowMs).empty());
}

TEST_CASE("key stats stay bounded and keep the most hit keys") {
  KeyStats ks;
  ks.hit("hot:1", 1000, 0);
  for (size_t i = 0; i < 3 * KeyStats::kMaxKeys; ++i) ks.hit("k" + std::to_string(i) + ":x", 1, 1);
  const auto keys = ks.hot_keys(5, 2);
  REQUIRE(keys.size() == 5);
  CHECK(keys[0].key == "hot:1");
  CHECK(keys[0].hits == 1000);
  CHECK(ks.hot_keys(100000, 2).size() <= KeyStats::kMaxKeys);
  // Prefixes past kMaxPrefixes count as (other), last.
  const auto pre = ks.prefixes(100000, 2);
  CHECK(pre.size() == KeyStats::kMaxPrefixes + 1);
  CHECK(pre.back().prefix == "(other)");
  uint64_t total = 0;
  for (const auto& p : pre) total += p.hits;
  CHECK(total == 1000 + 3 * KeyStats::kMaxKeys);
  // Reporting fewer folds the rest into (other).
  const auto top = ks.prefixes(3, 2);
  REQUIRE(top.size() == 4);
  CHECK(top[0].prefix == "hot:");
  uint64_t t2 = 0;
  for (const auto& p : top) t2 += p.hits;
  CHECK(t2 == total);
}

TEST_CASE("key stats off count nothing, and configure starts over") {
  KeyStats ks;
  ks.hit("a:1", 1, 0);
  ks.configure(false, 1);
  ks.hit("a:1", 1, 0);
  CHECK(ks.hot_keys(10, 0).empty());
  ks.configure(true, 2);
  CHECK(ks.hot_keys(10, 0).empty());
  ks.hit("a:b:c", 1, 0);
  CHECK(ks.prefixes(10, 0)[0].prefix == "a:b:");
}

TEST_CASE("a known key's hits reach its prefix in every window, after a shrink, and as (other)") {
  KeyStats ks;
  for (size_t i = 0; i < KeyStats::kMaxPrefixes; ++i) ks.hit("p" + std::to_string(i) + ":k", 1, 0);
  ks.hit("late:k", 1, 0);  // the prefixes are full: (other), and stays so
  ks.hit("late:k", 2, 0);
  ks.hit("p0:k", 5, 0);
  for (size_t i = 0; i < KeyStats::kMaxKeys; ++i) ks.hit("p1:" + std::to_string(i), 1, 0);  // shrinks
  ks.hit("p0:k", 1, 0);
  auto pre = ks.prefixes(1000, 0);
  REQUIRE(pre.back().prefix == "(other)");
  CHECK(pre.back().hits == 3);
  CHECK(pre[0].prefix == "p1:");
  CHECK(pre[0].hits == 1 + KeyStats::kMaxKeys);
  CHECK(pre[1].prefix == "p0:");
  CHECK(pre[1].hits == 7);
  // Next window: p0:k counts in the new window's p0: (the old one still shows).
  ks.hit("p0:k", 10, KeyStats::kWindowMs);
  ks.miss("p0:x", KeyStats::kWindowMs);
  ks.hit("p0:k", 10, 2 * KeyStats::kWindowMs);  // the first window is gone
  pre = ks.prefixes(1000, 2 * KeyStats::kWindowMs);
  REQUIRE(pre.size() == 1);
  CHECK((pre[0].prefix == "p0:" && pre[0].hits == 20 && pre[0].misses == 1));
  CHECK(ks.hot_keys(1, 2 * KeyStats::kWindowMs)[0].hits == 20);
}

TEST_CASE("keys of every length and byte order count apart") {
  KeyStats ks;
  std::string k;
  for (size_t n = 0; n < 40; k += char('a' + n % 26), ++n) ks.hit(k, n + 1, 0);
  ks.hit("ab", 100, 0);
  ks.hit("ba", 200, 0);
  const auto keys = ks.hot_keys(100, 0);
  CHECK(keys.size() == 41);  // "ab" is one of the 40 (length 2: "ab"), "ba" is new
  for (const auto& e : keys)
    if (e.key == "ba") CHECK(e.hits == 200);
    else if (e.key == "ab") CHECK(e.hits == 103);
    else CHECK(e.hits == e.key.size() + 1);
}
