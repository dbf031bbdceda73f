// Atomics: INCR/DECR against the table's semantics (every integer encoding,
// int64 and uint64 edges, flags, TTL kept, never creating a key), ADD, INCR
// and leases from two hosts at once, read-your-writes with write-behind,
// NOSCRIPT, and Redis unreachable.
#include <random>
#include <set>

#include "fixture.h"

using namespace nearcache::redis;
using nctest::DataPath;
using nctest::Loop;
using nctest::mp_int;

namespace {

std::string mp_u64(uint64_t v) {
  std::string s(9, '\0');
  s[0] = char(0xcf);
  for (int i = 0; i < 8; ++i) s[1 + i] = char(v >> (8 * (7 - i)));
  return s;
}
std::string mp_i64_wide(int64_t v) {  // a non-minimal encoding: int64 for any value
  std::string s(9, '\0');
  s[0] = char(0xd3);
  for (int i = 0; i < 8; ++i) s[1 + i] = char(uint64_t(v) >> (8 * (7 - i)));
  return s;
}

AtomicResult wait_for(Loop& loop, const std::function<bool(AtomicFn)>& op) {
  AtomicResult out;
  bool done = false;
  REQUIRE(op([&](const AtomicResult& r) { out = r, done = true; }));
  REQUIRE(loop.until([&] { return done; }));
  return out;
}

}  // namespace

TEST_CASE_METHOD(nctest::OneRedis, "INCR in Redis has the table's semantics for every integer encoding and edge",
                 "[redis][atomic]") {
  DataPath d(loop, cfg);
  d.start();
  const __int128 I64MAX = INT64_MAX, I64MIN = INT64_MIN, P53 = __int128(1) << 53, P63 = __int128(1) << 63;
  std::vector<std::string> values = {mp_int(0), mp_int(1), mp_int(-1), mp_int(127), mp_int(-32), mp_int(-33),
                                     mp_int(255), mp_int(65535), mp_int(4294967295), mp_int(4294967296),
                                     mp_int(int64_t(P53)), mp_int(int64_t(P53) + 1), mp_int(-int64_t(P53) - 1),
                                     mp_int(INT64_MAX), mp_int(INT64_MIN), mp_int(INT64_MAX - 1), mp_int(INT32_MIN),
                                     mp_u64(UINT64_MAX), mp_u64(uint64_t(1) << 63), mp_u64(7), mp_i64_wide(-5),
                                     mp_i64_wide(300), std::string("\xd0\x80", 2), std::string("\xd1\x80\x00", 3)};
  std::vector<__int128> deltas = {0, 1, -1, 1000, -1000, __int128(1) << 31, -(__int128(1) << 31), __int128(1) << 32,
                                  P53, -P53, I64MAX, I64MIN, P63 /* DECR by INT64_MIN */, 12345678901234567};
  std::mt19937_64 rng(42);
  for (int i = 0; i < 8; ++i) values.push_back(mp_int(int64_t(rng())));
  for (int i = 0; i < 6; ++i) deltas.push_back(__int128(int64_t(rng())));

  struct Case {
    std::string key, value;
    __int128 delta;
    AtomicResult got;
    bool done = false;
  };
  std::vector<Case> cases;
  for (const auto& v : values)
    for (auto dl : deltas) cases.push_back({"i" + std::to_string(cases.size()), v, dl});
  for (auto& c : cases) redis.cmdv({"SET", "nc:" + c.key, c.value, "PX", "100000"});
  for (auto& c : cases)
    REQUIRE(d.atomics->incr(c.key, c.delta, [&c](const AtomicResult& r) { c.got = r, c.done = true; }));
  REQUIRE(loop.until([&] {
    for (auto& c : cases)
      if (!c.done) return false;
    return true;
  }));
  int checked = 0;
  for (auto& c : cases) {
    __int128 v;
    REQUIRE(parse_msgpack_int(c.value, &v));
    const __int128 r = v + c.delta;
    INFO("case " << c.key << " delta " << int64_t(c.delta));
    const std::string stored = redis.cmd("GET nc:%s", c.key.c_str()).str();
    if (r < I64MIN || r > I64MAX) {
      CHECK(c.got.kind == AtomicResult::Kind::out_of_range);
      CHECK(stored == c.value);  // unchanged
    } else {
      REQUIRE(c.got.kind == AtomicResult::Kind::ok);
      CHECK(c.got.number == int64_t(r));
      CHECK(c.got.value == encode_msgpack_int(int64_t(r)));  // smallest encoding, as the table writes
      CHECK(stored == encode_msgpack_int(int64_t(r)));
      CHECK(redis.cmd("PTTL nc:%s", c.key.c_str()).integer() > 90000);  // TTL kept
      CHECK(c.got.expiry_ms > mono_ms() + 90000);
    }
    checked++;
  }
  CHECK(checked == int(values.size() * deltas.size()));

  // Not integers, missing keys, flags.
  const std::vector<std::string> bad = {"\xa3" "abc", "\xc0", std::string("\x05\x05", 2), "",
                                        std::string("\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18", 9), "\x91\x01"};
  for (size_t i = 0; i < bad.size(); ++i) {
    redis.cmdv({"SET", "nc:bad" + std::to_string(i), bad[i]});
    auto r = wait_for(loop, [&](AtomicFn cb) { return d.atomics->incr("bad" + std::to_string(i), 1, cb); });
    CHECK(r.kind == AtomicResult::Kind::not_integer);
    CHECK(redis.cmdv({"GET", "nc:bad" + std::to_string(i)}).str() == bad[i]);
  }
  auto r = wait_for(loop, [&](AtomicFn cb) { return d.atomics->incr("missing", 1, cb); });
  CHECK(r.kind == AtomicResult::Kind::not_found);
  CHECK(redis.cmd("EXISTS nc:missing").integer() == 0);  // never created

  redis.cmdv({"SET", "nc:flagged", encode_value(mp_int(5), 2)});
  r = wait_for(loop, [&](AtomicFn cb) { return d.atomics->incr("flagged", 1, cb); });
  REQUIRE(r.kind == AtomicResult::Kind::ok);
  CHECK(r.number == 6);
  CHECK(r.flags == 2);
  CHECK(redis.cmd("GET nc:flagged").str() == encode_value(mp_int(6), 2));
  CHECK(redis.cmd("PTTL nc:flagged").integer() == -1);
}

TEST_CASE_METHOD(nctest::TwoDataPaths, "INCR from two hosts at once loses no increment", "[redis][atomic]") {
  redis.cmdv({"SET", "nc:n", mp_int(0)});
  std::vector<int64_t> seen;
  for (int i = 0; i < 500; ++i)
    for (DataPath* h : {&a, &b})
      REQUIRE(h->atomics->incr("n", 1, [&](const AtomicResult& r) {
        REQUIRE(r.kind == AtomicResult::Kind::ok);
        seen.push_back(r.number);
      }));
  REQUIRE(loop.until([&] { return seen.size() == 1000; }));
  std::set<int64_t> distinct(seen.begin(), seen.end());
  CHECK(distinct.size() == 1000);
  CHECK(*distinct.begin() == 1);
  CHECK(*distinct.rbegin() == 1000);
  CHECK(redis.cmd("GET nc:n").str() == mp_int(1000));
}

TEST_CASE_METHOD(nctest::TwoDataPaths, "ADD from two hosts at once: exactly one wins each key", "[redis][atomic]") {
  constexpr int K = 200;
  std::vector<int> wins(K), exists(K);
  std::vector<std::string> winner(K);
  int done = 0;
  const uint64_t expiry = mono_ms() + 60000;
  for (int k = 0; k < K; ++k)
    for (DataPath* h : {&b, &a}) {
      const std::string who = h == &a ? "A" : "B";
      REQUIRE(h->atomics->add("k" + std::to_string(k), who, 0, expiry, [&, k, who](const AtomicResult& r) {
        done++;
        if (r.kind == AtomicResult::Kind::ok) wins[k]++, winner[k] = who;
        if (r.kind == AtomicResult::Kind::exists) exists[k]++;
      }));
    }
  REQUIRE(loop.until([&] { return done == 2 * K; }));
  for (int k = 0; k < K; ++k) {
    CHECK(wins[k] == 1);
    CHECK(exists[k] == 1);
    CHECK(redis.cmd("GET nc:k%d", k).str() == winner[k]);
  }
  CHECK(redis.cmd("PTTL nc:k0").integer() > 50000);
  // timeout 0: nothing is stored; EXISTS decides.
  auto r = wait_for(loop, [&](AtomicFn cb) { return a.atomics->add("zero", "v", 0, 1, cb); });
  CHECK(r.kind == AtomicResult::Kind::ok);
  CHECK(redis.cmd("EXISTS nc:zero").integer() == 0);
  r = wait_for(loop, [&](AtomicFn cb) { return a.atomics->add("k0", "v", 0, 1, cb); });
  CHECK(r.kind == AtomicResult::Kind::exists);
}

TEST_CASE_METHOD(nctest::OneRedis, "read-your-writes: queued writes reach Redis before this host's atomic operations",
                 "[redis][atomic]") {
  cfg.pipeline = 1;  // keeps writes waiting in the queue
  DataPath d(loop, cfg);
  d.start();
  d.link->hold_replies(true);
  d.queue->set("x1", "v", 0, 0);  // in flight: the window is full
  d.queue->set("x2", "v", 0, 0);  // queued
  // set k 1; incr k  -> 2
  d.queue->set("k", mp_int(1), 0, 0);
  CHECK(d.queue->stats().in_flight == 1);
  std::vector<AtomicResult> out;
  auto keep = [&](const AtomicResult& r) { out.push_back(r); };
  REQUIRE(d.atomics->incr("k", 1, keep));
  // delete k2; add k2 -> added
  redis.cmd("SET nc:k2 old");
  d.queue->del("k2");
  REQUIRE(d.atomics->add("k2", "new", 0, 0, keep));
  // delete k3; incr k3 -> not found
  redis.cmdv({"SET", "nc:k3", mp_int(7)});
  d.queue->del("k3");
  REQUIRE(d.atomics->incr("k3", 1, keep));
  d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return out.size() == 3 && d.queue->stats().depth == 0; }));
  CHECK(out[0].kind == AtomicResult::Kind::ok);
  CHECK(out[0].number == 2);
  CHECK(out[1].kind == AtomicResult::Kind::ok);
  CHECK(redis.cmd("GET nc:k2").str() == encode_value("new", 0));
  CHECK(out[2].kind == AtomicResult::Kind::not_found);
}

TEST_CASE_METHOD(nctest::OneRedis, "NOSCRIPT is retried with EVAL when nothing is behind it, else reported",
                 "[redis][atomic]") {
  DataPath d(loop, cfg);
  d.start();
  redis.cmdv({"SET", "nc:n", mp_int(1)});
  redis.cmd("SCRIPT FLUSH");
  auto r = wait_for(loop, [&](AtomicFn cb) { return d.atomics->incr("n", 1, cb); });
  CHECK(r.kind == AtomicResult::Kind::ok);
  CHECK(r.number == 2);
  CHECK(d.scripts->noscript_total() == 1);
  redis.cmd("SCRIPT FLUSH");
  std::vector<AtomicResult> out;
  REQUIRE(d.atomics->incr("n", 1, [&](const AtomicResult& x) { out.push_back(x); }));
  REQUIRE(d.atomics->incr("n", 1, [&](const AtomicResult& x) { out.push_back(x); }));
  REQUIRE(loop.until([&] { return out.size() == 2; }));
  // The first had a command behind it: not retried (order), reported; the
  // second was last and retried.
  CHECK(out[0].kind == AtomicResult::Kind::unavailable);
  CHECK(out[0].error.find("NOSCRIPT") != std::string::npos);
  CHECK(out[1].kind == AtomicResult::Kind::ok);
  CHECK(out[1].number == 3);
  loop.run_for(20);  // the reload
  r = wait_for(loop, [&](AtomicFn cb) { return d.atomics->incr("n", 1, cb); });
  CHECK(r.number == 4);
}

TEST_CASE_METHOD(nctest::OneRedis, "leases from two hosts: one holder, the other waits for the value or the lapse",
                 "[redis][atomic][lease]") {
  cfg.lease_poll_min_ms = 5;
  cfg.lease_poll_max_ms = 40;
  DataPath a(loop, cfg), b(loop, cfg);
  a.start();
  b.start();

  SECTION("the holder stores the value: the waiter gets it, never the lease") {
    std::vector<std::pair<char, AtomicResult>> out;
    REQUIRE(a.atomics->lease("k", 1, 5000, [&](const AtomicResult& r) { out.push_back({'A', r}); }));
    REQUIRE(b.atomics->lease("k", 1, 5000, [&](const AtomicResult& r) { out.push_back({'B', r}); }));
    REQUIRE(loop.until([&] { return out.size() == 2; }));
    if (out[0].second.kind != AtomicResult::Kind::granted) std::swap(out[0], out[1]);
    CHECK(out[0].second.kind == AtomicResult::Kind::granted);
    CHECK(out[1].second.kind == AtomicResult::Kind::held);
    CHECK(out[1].second.retry_ms > 4000);
    DataPath& holder = out[0].first == 'A' ? a : b;
    DataPath& waiter = out[0].first == 'A' ? b : a;
    AtomicResult w;
    bool done = false;
    waiter.atomics->wait_lease("k", 2, 5000, mono_ms() + 3000, [&](const AtomicResult& r) { w = r, done = true; });
    loop.run_for(50);
    CHECK_FALSE(done);
    // The holder's SET goes through its queue; its RELEASE goes after it.
    holder.queue->set("k", "computed", 0, mono_ms() + 60000);
    bool released = false;
    REQUIRE(holder.atomics->release("k", 1, [&](const AtomicResult& r) {
      CHECK(r.kind == AtomicResult::Kind::ok);
      released = true;
    }));
    REQUIRE(loop.until([&] { return done && released; }));
    CHECK(w.kind == AtomicResult::Kind::value);
    CHECK(w.value == "computed");
    CHECK(w.expiry_ms > mono_ms() + 50000);
    CHECK(redis.cmdv({"EXISTS", std::string(kLeaseMark) + "nc:k"}).integer() == 0);
  }
  SECTION("the lease lapses: the waiter gets it") {
    auto r = wait_for(loop, [&](AtomicFn cb) { return a.atomics->lease("k", 1, 150, cb); });
    REQUIRE(r.kind == AtomicResult::Kind::granted);
    AtomicResult w;
    bool done = false;
    const uint64_t t0 = nctest::now_ms();
    b.atomics->wait_lease("k", 9, 5000, mono_ms() + 3000, [&](const AtomicResult& x) { w = x, done = true; });
    REQUIRE(loop.until([&] { return done; }));
    CHECK(w.kind == AtomicResult::Kind::granted);
    CHECK(nctest::now_ms() - t0 >= 100);
    CHECK(nctest::now_ms() - t0 < 1500);
    // Only B's token is in the lease key now; A's RELEASE changes nothing.
    r = wait_for(loop, [&](AtomicFn cb) { return a.atomics->release("k", 1, cb); });
    CHECK(r.kind == AtomicResult::Kind::not_found);
    CHECK(redis.cmdv({"GET", std::string(kLeaseMark) + "nc:k"}).str() == b.atomics->token_string(9));
  }
  SECTION("a released lease goes to the waiter; a wait can time out") {
    REQUIRE(wait_for(loop, [&](AtomicFn cb) { return a.atomics->lease("k", 1, 5000, cb); }).kind ==
            AtomicResult::Kind::granted);
    AtomicResult w;
    bool done = false;
    b.atomics->wait_lease("k", 2, 5000, mono_ms() + 100, [&](const AtomicResult& x) { w = x, done = true; });
    REQUIRE(loop.until([&] { return done; }));
    CHECK(w.kind == AtomicResult::Kind::timeout);
    done = false;
    b.atomics->wait_lease("k", 3, 5000, mono_ms() + 3000, [&](const AtomicResult& x) { w = x, done = true; });
    REQUIRE(wait_for(loop, [&](AtomicFn cb) { return a.atomics->release("k", 1, cb); }).kind ==
            AtomicResult::Kind::ok);
    REQUIRE(loop.until([&] { return done; }));
    CHECK(w.kind == AtomicResult::Kind::granted);
  }
}

TEST_CASE_METHOD(nctest::OneRedis, "many hosts race for one lease: exactly one wins", "[redis][atomic][lease]") {
  std::vector<std::unique_ptr<DataPath>> hosts;
  for (int i = 0; i < 6; ++i) {
    hosts.push_back(std::make_unique<DataPath>(loop, cfg));
    hosts.back()->start();
  }
  for (int round = 0; round < 20; ++round) {
    int granted = 0, held = 0, n = 0;
    for (auto& h : hosts)
      REQUIRE(h->atomics->lease("r" + std::to_string(round), 1, 5000, [&](const AtomicResult& r) {
        n++;
        granted += r.kind == AtomicResult::Kind::granted;
        held += r.kind == AtomicResult::Kind::held;
      }));
    REQUIRE(loop.until([&] { return n == 6; }));
    CHECK(granted == 1);
    CHECK(held == 5);
  }
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "Redis unreachable: atomic operations refuse at once (the caller applies redis_down)",
                 "[redis][atomic]") {
  DataPath d(loop, cfg);
  auto never = [](const AtomicResult&) { FAIL("called back"); };
  CHECK_FALSE(d.atomics->add("k", "v", 0, 0, never));
  CHECK_FALSE(d.atomics->incr("k", 1, never));
  CHECK_FALSE(d.atomics->lease("k", 1, 100, never));
  CHECK_FALSE(d.atomics->release("k", 1, never));
  d.start();
  redis.stop();
  REQUIRE(loop.until([&] { return !d.link->ready(); }));
  CHECK_FALSE(d.atomics->incr("k", 1, never));
}
