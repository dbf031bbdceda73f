// tests/shm/test_visit.cc — glob patterns (glob.h, Redis's stringmatchlen
// rules), glob CLEARs, and visits: every entry present when a visit began is
// seen exactly once, also when entries move to their other bucket meanwhile.
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>

#include "glob.h"
#include "shm_fixture.h"

using nearcache::shm::glob_match;
using nearcache::shm::glob_prefix;
using nearcache::shm::Item;
using nearcache::shm::Status;

TEST_CASE("glob patterns follow Redis's rules") {
  struct Case {
    const char* pat;
    const char* s;
    bool match;
  };
  const Case cases[] = {
      {"*", "", true},          {"*", "anything", true},   {"a*", "a", true},         {"a*", "ba", false},
      {"*a", "ba", true},       {"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"?", "x", true},
      {"?", "", false},         {"??", "x", false},        {"h?llo", "hallo", true},  {"h[ae]llo", "hello", true},
      {"h[ae]llo", "hillo", false}, {"h[^e]llo", "hallo", true}, {"h[^e]llo", "hello", false},
      {"h[a-b]llo", "hbllo", true}, {"h[b-a]llo", "hallo", true}, {"h[a-b]llo", "hcllo", false},
      {"\\*", "*", true},       {"\\*", "a", false},       {"[\\]]", "]", true},       {"[*]", "*", true},
      {"[*]", "a", false},      {"a\\", "a\\", true},      {"[abc", "b", true},        {"[a-]", "]", true},
      {":1:user:*", ":1:user:42", true}, {":1:user:*", ":1:users", false}, {"*:*:*", "p:1:k", true},
      {"a**b", "ab", true},     {"*x*", "abc", false},     {"[", "a", false},
  };
  for (const Case& c : cases) {
    INFO(c.pat << " vs " << c.s);
    CHECK(glob_match(c.pat, c.s) == c.match);
  }
  CHECK(glob_prefix("ab:1:*x") == "ab:1:");
  CHECK(glob_prefix("ab?") == "ab");
  CHECK(glob_prefix("a\\*") == "a");
  CHECK(glob_prefix("plain") == "plain");
}

TEST_CASE("a glob CLEAR removes exactly the matching keys present when it began") {
  nctest::Table t;
  for (int i = 0; i < 300; ++i) {
    REQUIRE(t.w->set("p:1:user:" + std::to_string(i), "v", 0, 0) == Status::ok);
    REQUIRE(t.w->set("p:1:item:" + std::to_string(i), "v", 0, 0) == Status::ok);
  }
  const uint64_t id = t.w->clear_begin_match("p:1:u*er:1*");
  t.w->clear_step(2);
  REQUIRE(t.w->set("p:1:user:1new", "n", 0, 0) == Status::ok);  // stored after: survives
  while (!t.w->clear_step(16)) {
  }
  CHECK(t.w->clear_take(id) == 111);  // 1, 10-19, 100-199
  CHECK(t.w->contains("p:1:user:1new"));
  CHECK_FALSE(t.w->contains("p:1:user:150"));
  CHECK(t.w->contains("p:1:user:250"));
  CHECK(t.w->contains("p:1:item:150"));
}

namespace {

// Runs a visit of `pattern` to its end while `churn(step)` changes the table
// between slices; returns how many times each key was visited.
template <typename Churn>
std::map<std::string, int> visit_all(nearcache::shm::Writer* w, const std::string& pattern, Churn churn) {
  std::map<std::string, int> seen;
  uint64_t id = 0;
  w->set_visitor([&](uint64_t v, const Item& it) {
    REQUIRE(v == id);
    seen[std::string(it.key)]++;
  });
  id = w->visit_begin(pattern);
  int step = 0;
  while (!w->clear_step(4)) churn(step++);
  REQUIRE(w->clear_done(id));
  REQUIRE(w->clear_take(id) == [&] { uint64_t n = 0; for (auto& [k, c] : seen) n += c; return n; }());
  w->set_visitor(nullptr);
  return seen;
}

}  // namespace

TEST_CASE("a visit sees every entry present when it began once, whatever moves meanwhile") {
  nctest::Table t(1 << 20);  // a small index: new keys move old ones to their other bucket
  const uint64_t ways = t.w->stats().index_ways;
  std::set<std::string> before;
  for (uint64_t i = 0; i < ways * 9 / 10; ++i) {
    const std::string k = "old:" + std::to_string(i);
    if (t.w->set(k, "v", 0, 0) == Status::ok) before.insert(k);
  }
  const uint64_t moves0 = t.w->stats().index_moves;
  uint64_t added = 0;
  auto seen = visit_all(t.w.get(), "*", [&](int step) {
    // New keys (never visited), overwrites and deletes of old ones, lookups.
    for (int j = 0; j < 40; ++j) t.w->set("new:" + std::to_string(added++), "n", 0, 0);
    t.w->set("old:" + std::to_string(step * 7), "again", 0, 0);
    t.w->del("old:" + std::to_string(step * 7 + 3));
    t.w->contains("old:" + std::to_string(step * 5 + 1));
  });
  INFO("index moves during the visit: " << t.w->stats().index_moves - moves0);
  CHECK(t.w->stats().index_moves > moves0);  // the case this test is about happened
  for (const auto& [k, n] : seen) {
    INFO(k);
    CHECK(n == 1);
    CHECK(before.count(k) == 1);  // nothing stored after the visit began
  }
  // Every entry still present from before (not evicted or deleted) was seen.
  size_t survivors = 0;
  for (const std::string& k : before) {
    if (!t.w->contains(k)) continue;
    survivors++;
    INFO(k);
    CHECK(seen.count(k) == 1);
  }
  CHECK(survivors > before.size() / 2);
}

TEST_CASE("a visit matches its pattern, skips expired entries, and interleaves with clears in order") {
  nctest::Table t;
  for (int i = 0; i < 200; ++i) {
    REQUIRE(t.w->set("a:" + std::to_string(i), "v", 0, 0) == Status::ok);
    REQUIRE(t.w->set("b:" + std::to_string(i), "v", 0, 0) == Status::ok);
  }
  REQUIRE(t.w->set("a:expired", "v", 0, 1) == Status::ok);  // expiry 1: long past
  SECTION("pattern") {
    auto seen = visit_all(t.w.get(), "a:1?", [](int) {});
    CHECK(seen.size() == 10);
    CHECK(seen.count("a:15") == 1);
  }
  SECTION("a clear begun before the visit removes first; one begun after removes what the visit saw") {
    // Many prefix clears of one length take catch_up's indexed path too.
    for (int i = 0; i < 12; ++i) t.w->clear_begin("b:" + std::to_string(i) + "0");
    const uint64_t before = t.w->clear_begin("a:1");
    std::map<std::string, int> seen;
    t.w->set_visitor([&](uint64_t, const Item& it) { seen[std::string(it.key)]++; });
    const uint64_t v = t.w->visit_begin("*");
    const uint64_t after = t.w->clear_begin("a:2");
    while (!t.w->clear_step(3)) {
    }
    CHECK(t.w->clear_take(before) == 111);
    CHECK(t.w->clear_take(after) == 11);
    CHECK(seen.count("a:15") == 0);   // removed before the visit began
    CHECK(seen.count("a:25") == 1);   // present when it began, removed later
    CHECK(seen.count("a:expired") == 0);
    CHECK(seen.count("b:10") == 0);   // b:10 was cleared by "b:10" (before)
    CHECK(seen.count("b:11") == 1);
    for (const auto& [k, n] : seen) CHECK(n == 1);
    CHECK(t.w->clear_take(v) == seen.size());
  }
}
