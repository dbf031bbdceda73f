// tests/daemon_units/test_engine.cc — the dispatcher on a real table, without sockets:
// sliced CLEAR, limits, leases across sessions, shutdown.
#include <catch2/catch.hpp>

#include <map>

#include "engine_harness.h"

using namespace nctest_daemon;
using nearcache::daemon::Code;
using nearcache::daemon::Op;

namespace {
constexpr uint32_t op(Op o) { return uint32_t(o); }
const msgpack::type::nil_t nil;
// k000, k001, ...: no key is a prefix of another.
std::string key(int i) {
  char b[16];
  snprintf(b, sizeof b, "k%03d", i);
  return std::string(b);
}
}  // namespace

TEST_CASE("set, get, delete through the engine") {
  Harness h;
  Session* s = h.connect();
  CHECK(code_of(h.call(s, op(Op::set), Bin{"k"}, Bin{"v"}, nil, 5)) == int(Code::ok));
  auto r = h.call(s, op(Op::get), Bin{"k"});
  REQUIRE(code_of(r) == int(Code::ok));
  CHECK(bytes(arg(r, 2)) == "v");
  CHECK(arg(r, 3).via.u64 == 5);
  CHECK(arg(r, 4).type == msgpack::type::NIL);
  CHECK(code_of(h.call(s, op(Op::del), Bin{"k"})) == int(Code::ok));
  CHECK(code_of(h.call(s, op(Op::get), Bin{"k"})) == int(Code::not_found));
}

TEST_CASE("max_ttl_ms clamps every TTL, no expiry included") {
  Config c;
  c.max_ttl_ms = 1000;
  Harness h(16 << 20, c);
  Session* s = h.connect();
  h.call(s, op(Op::set), Bin{"a"}, Bin{"v"}, nil);
  h.call(s, op(Op::set), Bin{"b"}, Bin{"v"}, 999999);
  for (const char* k : {"a", "b"}) {
    auto r = h.call(s, op(Op::get), Bin{k});
    REQUIRE(arg(r, 4).type == msgpack::type::POSITIVE_INTEGER);
    CHECK(arg(r, 4).via.u64 <= 1000);
    CHECK(arg(r, 4).via.u64 > 900);
  }
}

TEST_CASE("CLEAR of a full table is done in slices, others are served meanwhile, later sets survive") {
  Harness h(32 << 20);
  Session* a = h.connect();
  Session* b = h.connect();
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    h.send(a, op(Op::set), uint64_t(1000 + i), Bin{(i % 2 ? "x:" : "y:") + std::to_string(i)}, Bin{std::string(100, 'v')}, nil);
    if (i % 1000 == 0) h.replies(a);
  }
  h.replies(a);
  const uint64_t entries = h.writer->stats().entries;
  REQUIRE(entries > 50000);  // most of them fit
  h.send(a, op(Op::clear), 1, Bin{"x:"});
  h.send(a, op(Op::set), 2, Bin{"x:after"}, Bin{"new"}, nil);  // received after the CLEAR: survives
  auto first = h.replies(a);
  // The SET is answered at once; the CLEAR (a big table) is still running.
  REQUIRE(first.size() == 1);
  CHECK(id_of(first[0]) == 2);
  CHECK(h.clear_hooks == 1);
  CHECK(a->outstanding == 1);
  int slices = 0;
  while (!h.engine->clear_work(50)) {
    ++slices;
    // b is served between slices, and never sees a cleared key.
    CHECK(code_of(h.call(b, op(Op::get), Bin{"x:1"})) == int(Code::not_found));
    CHECK(code_of(h.call(b, op(Op::ping))) == int(Code::ok));
  }
  CHECK(slices > 0);
  auto done = h.replies(a);
  REQUIRE(done.size() == 1);
  CHECK(id_of(done[0]) == 1);
  const uint64_t removed = arg(done[0], 2).via.u64;
  CHECK(a->outstanding == 0);
  CHECK(removed > entries / 2 - 1000);
  CHECK(h.writer->stats().entries == entries - removed + 1);
  CHECK(code_of(h.call(b, op(Op::get), Bin{"x:after"})) == int(Code::ok));
  CHECK(code_of(h.call(b, op(Op::get), Bin{"y:0"})) == int(Code::ok));
}

TEST_CASE("CLEAR answers with the number of entries it removed") {
  Harness h;
  Session* s = h.connect();
  h.call(s, op(Op::set), Bin{"k"}, Bin{"v"}, nil);
  h.send(s, op(Op::clear), 1);
  while (!h.engine->clear_work(1000)) {
  }
  auto r = h.one(s);
  CHECK(code_of(r) == int(Code::ok));
  CHECK(arg(r, 2).via.u64 == 1);
}

TEST_CASE("max_outstanding: waiting leases count, further requests get TOO_MANY_REQUESTS until they drop") {
  Config c;
  c.max_outstanding = 2;
  Harness h(16 << 20, c);
  Session* holder = h.connect();
  Session* w = h.connect();
  CHECK(code_of(h.call(holder, op(Op::lease), Bin{"k"}, 1000, 5000)) == int(Code::leased));
  h.send(w, op(Op::lease), 1, Bin{"k"}, 1000, 5000);
  h.send(w, op(Op::lease), 2, Bin{"k"}, 1000, 5000);
  CHECK(h.replies(w).empty());
  CHECK(w->outstanding == 2);
  auto r = h.call(w, op(Op::ping));
  CHECK(code_of(r) == int(Code::too_many_requests));
  CHECK(bytes(arg(r, 2)).find("TOO_MANY_REQUESTS") == 0);
  CHECK_FALSE(w->closing);
  h.call(holder, op(Op::set), Bin{"k"}, Bin{"v"}, nil);
  CHECK(h.replies(w).size() == 2);
  CHECK(w->outstanding == 0);
  CHECK(code_of(h.call(w, op(Op::ping))) == int(Code::ok));
}

TEST_CASE("a GET_MANY reply larger than max_output_bytes drops the client instead of growing") {
  Config c;
  c.max_output_bytes = 64 << 10;
  Harness h(16 << 20, c);
  Session* s = h.connect();
  for (int i = 0; i < 10; ++i) h.call(s, op(Op::set), Bin{"k" + std::to_string(i)}, Bin{std::string(20000, 'v')}, nil);
  std::vector<Bin> keys;
  for (int i = 0; i < 10; ++i) keys.push_back(Bin{"k" + std::to_string(i)});
  h.send(s, op(Op::get_many), 1, keys);
  CHECK(s->kill);
  CHECK(s->out.bytes.size() < (64u << 10));
  CHECK(h.engine->counters().slow_clients_total == 1);
}

TEST_CASE("a departed lease holder's lease goes to the longest waiter") {
  Harness h;
  Session* a = h.connect();
  Session* b = h.connect();
  Session* c = h.connect();
  h.call(a, op(Op::lease), Bin{"k"}, 1000, 5000);
  h.send(b, op(Op::lease), 1, Bin{"k"}, 1000, 5000);
  h.send(c, op(Op::lease), 2, Bin{"k"}, 1000, 5000);
  h.disconnect(a);
  auto rb = h.replies(b);
  REQUIRE(rb.size() == 1);
  CHECK(code_of(rb[0]) == int(Code::leased));
  CHECK(h.replies(c).empty());
}

TEST_CASE("shutdown answers waiters and every later request with SHUTTING_DOWN") {
  Harness h;
  Session* a = h.connect();
  Session* b = h.connect();
  h.call(a, op(Op::lease), Bin{"k"}, 1000, 5000);
  h.send(b, op(Op::lease), 7, Bin{"k"}, 1000, 5000);
  h.engine->begin_shutdown();
  auto r = h.one(b);
  CHECK(id_of(r) == 7);
  CHECK(code_of(r) == int(Code::shutting_down));
  CHECK(b->closing);
  auto p = h.call(a, op(Op::ping));
  CHECK(code_of(p) == int(Code::shutting_down));
  CHECK(a->closing);
}

TEST_CASE("after a framing error nothing more is read from the session") {
  Harness h;
  Session* s = h.connect();
  h.send_raw(s, Harness::req(op(Op::ping), 1) + "\xc1" + Harness::req(op(Op::ping), 2));
  auto r = h.replies(s);
  REQUIRE(r.size() == 2);
  CHECK(code_of(r[0]) == int(Code::ok));
  CHECK(code_of(r[1]) == int(Code::bad_frame));
  CHECK(arg(r[1], 0).type == msgpack::type::NIL);
  CHECK(s->closing);
  h.send_raw(s, Harness::req(op(Op::ping), 3));
  CHECK(h.replies(s).empty());
}

TEST_CASE("STATUS carries every metric of the table, the config and the connections") {
  Harness h;
  Session* s = h.connect();
  s->uid = 1000;
  h.call(s, op(Op::set), Bin{"k"}, Bin{"v"}, nil);
  h.call(s, op(Op::get), Bin{"k"});
  h.call(s, op(Op::get), Bin{"nope"});
  auto r = h.call(s, op(Op::status));
  REQUIRE(code_of(r) == int(Code::ok));
  const msgpack::object& m = arg(r, 2);
  REQUIRE(m.type == msgpack::type::MAP);
  std::map<std::string, const msgpack::object*> got;
  for (uint32_t i = 0; i < m.via.map.size; ++i) got[bytes(m.via.map.ptr[i].key)] = &m.via.map.ptr[i].val;
  for (size_t i = 0; i < kMetricCount; ++i) {
    INFO(metric_table()[i].name);
    CHECK(got.count(metric_table()[i].name));
  }
  CHECK(got.at("sets_total")->via.u64 == 1);
  CHECK(got.at("daemon_hits_total")->via.u64 == 1);
  CHECK(got.at("misses_total")->via.u64 == 1);
  CHECK(got.at("hit_ratio")->via.f64 == Approx(0.5));
  CHECK(got.count("config"));
  CHECK(got.count("version"));
  CHECK(got.count("uptime_s"));
  REQUIRE(got.at("connections")->via.array.size == 1);
}

TEST_CASE("at most 256 CLEARs in flight, each reports its own count") {
  Harness h(32 << 20);
  h.engine->set_clear_first_slice_us(0);  // all the work waits for clear_work()
  Session* s = h.connect();
  for (int i = 0; i < 300; ++i) h.send(s, op(Op::set), uint64_t(i), Bin{key(i)}, Bin{"v"}, nil);
  h.replies(s);
  for (int i = 0; i < 60000; ++i) h.send(s, op(Op::set), 1, Bin{"f" + std::to_string(i)}, Bin{"v"}, nil);
  h.replies(s);
  REQUIRE(h.writer->stats().entries == 60300);
  h.send(s, op(Op::clear), 1, Bin{"f"});
  for (int i = 0; i < 300; ++i) h.send(s, op(Op::clear), uint64_t(1000 + i), Bin{key(i)});
  int refused = 0;
  for (auto& r : h.replies(s)) refused += code_of(r) == int(Code::too_many_requests);
  while (!h.engine->clear_work(1000)) {
  }
  auto done = h.replies(s);
  CHECK(done.size() == 256);
  CHECK(refused == 301 - 256);
  for (auto& r : done) {
    INFO(id_of(r));
    if (id_of(r) == 1) CHECK(arg(r, 2).via.u64 == 60000);
    else CHECK(arg(r, 2).via.u64 == 1);
  }
}

namespace {
// A microsecond clock that advances one tick per reading: the ticks a call
// takes are the clear steps it made (one reading each, plus one to start).
uint64_t g_ticks = 0;
uint64_t tick_clock() { return ++g_ticks; }
}  // namespace

TEST_CASE("a flood of CLEARs costs a loop turn no more than one CLEAR: one budget for all of them") {
  Harness h(32 << 20);
  h.engine->set_slice_clock(tick_clock);
  Session* s = h.connect();
  for (int i = 0; i < 255; ++i) h.send(s, op(Op::set), uint64_t(i), Bin{key(i)}, Bin{"v"}, nil);
  for (int i = 0; i < 60000; ++i) h.send(s, op(Op::set), 1, Bin{"f" + std::to_string(i)}, Bin{"v"}, nil);
  h.replies(s);
  REQUIRE(h.writer->stats().entries == 60255);

  // One write: 255 prefix CLEARs, a CLEAR of the whole table, then a SET that
  // was received after all of them and survives them.
  std::string frames;
  for (int i = 0; i < 255; ++i) frames += Harness::req(op(Op::clear), uint64_t(1000 + i), Bin{key(i)});
  frames += Harness::req(op(Op::clear), 2000);
  frames += Harness::req(op(Op::set), 3000, Bin{key(0)}, Bin{"after"}, nil);
  uint64_t t0 = g_ticks;
  h.send_raw(s, frames);
  // Together they took the one first-slice budget (500 us by default; each
  // CLEAR given a slice reads the clock once more to start it), and what is
  // left waits for the loop.
  auto early = h.replies(s);  // the SET, and the CLEARs finished at once
  CHECK(early.size() < 100);
  CHECK(g_ticks - t0 <= 500 + early.size());
  CHECK(h.clear_hooks >= 1);
  CHECK(h.engine->clears_pending());

  // A CLEAR received before the loop's next turn does no work at once: it
  // joins the pending ones and asks the loop for its turn.
  t0 = g_ticks;
  const int hooks = h.clear_hooks;
  h.send(s, op(Op::clear), 4000, Bin{"nothing-under-this"});
  h.send(s, op(Op::ping), 4001);
  CHECK(g_ticks == t0);
  CHECK(h.clear_hooks == hooks + 1);

  // Each loop turn keeps its budget however many CLEARs are pending, in steps
  // small enough that a step stays short (here: a few buckets per step).
  uint64_t loop_ticks = 0;
  int turns = 0;
  for (;;) {
    t0 = g_ticks;
    const bool done = h.engine->clear_work(2000);
    CHECK(g_ticks - t0 <= 2000 + 1);
    loop_ticks += g_ticks - t0;
    ++turns;
    if (done) break;
    REQUIRE(turns < 10000);
  }
  CHECK(turns > 1);
  CHECK(loop_ticks > h.writer->bucket_count() / 16);  // not 1024 buckets a step with 250 clears pending

  auto rest = h.replies(s);
  std::map<uint64_t, msgpack::object_handle> by_id;
  for (auto& r : early) by_id.emplace(id_of(r), std::move(r));
  for (auto& r : rest) by_id.emplace(id_of(r), std::move(r));
  REQUIRE(by_id.size() == 255 + 1 + 1 + 1 + 1);  // the CLEARs, the SET, the later CLEAR, the PING
  for (int i = 0; i < 255; ++i) {
    INFO(i);
    CHECK(code_of(by_id.at(1000 + i)) == int(Code::ok));
    CHECK(arg(by_id.at(1000 + i), 2).via.u64 == 1);
  }
  CHECK(arg(by_id.at(2000), 2).via.u64 == 60000);
  CHECK(arg(by_id.at(4000), 2).via.u64 == 0);
  CHECK(h.writer->stats().entries == 1);
  auto got = h.call(s, op(Op::get), Bin{key(0)});
  REQUIRE(code_of(got) == int(Code::ok));
  CHECK(bytes(arg(got, 2)) == "after");

  // With no CLEAR pending, a CLEAR of everything is O(1) (the table's epoch
  // moves on): it takes no clear step at all and answers at once.
  t0 = g_ticks;
  h.send(s, op(Op::clear), 5000);
  CHECK(g_ticks == t0);
  auto last = h.one(s);
  CHECK(arg(last, 2).via.u64 == 1);
  CHECK(!h.engine->clears_pending());
}

TEST_CASE("CLEARs pending together: an entry goes to the first that matches it, later writes survive earlier CLEARs") {
  Harness h(32 << 20);
  h.engine->set_clear_first_slice_us(0);  // everything waits for clear_work(): all of them pending at once
  Session* s = h.connect();
  for (int i = 0; i < 100; ++i)
    for (const char* p : {"a", "ab", "b"}) h.send(s, op(Op::set), 1, Bin{p + std::to_string(i)}, Bin{"v"}, nil);
  h.replies(s);
  REQUIRE(h.writer->stats().entries == 300);
  // Overlapping prefixes of several lengths and many CLEARs (the table then
  // matches each entry by lookups instead of against every CLEAR in turn).
  std::string frames = Harness::req(op(Op::clear), 1, Bin{"ab"});
  frames += Harness::req(op(Op::set), 2, Bin{"ab-new"}, Bin{"v"}, nil);  // after CLEAR ab, before CLEAR a
  frames += Harness::req(op(Op::clear), 3, Bin{"a"});
  for (int i = 0; i < 30; ++i) frames += Harness::req(op(Op::clear), uint64_t(100 + i), Bin{"zz" + key(i)});
  frames += Harness::req(op(Op::set), 4, Bin{"a-late"}, Bin{"v"}, nil);  // after all of them
  h.send_raw(s, frames);
  while (!h.engine->clear_work(1000)) {
  }
  std::map<uint64_t, uint64_t> removed;
  for (auto& r : h.replies(s)) {
    REQUIRE(code_of(r) == int(Code::ok));
    if (id_of(r) != 2 && id_of(r) != 4) removed[id_of(r)] = arg(r, 2).via.u64;
  }
  REQUIRE(removed.size() == 32);
  CHECK(removed[1] == 100);      // ab0..ab99 (they match "a" too: the first CLEAR counts them)
  CHECK(removed[3] == 100 + 1);  // a0..a99 and ab-new
  for (int i = 0; i < 30; ++i) CHECK(removed[100 + i] == 0);
  CHECK(h.writer->stats().entries == 100 + 1);  // b0..b99 and a-late
  CHECK(code_of(h.call(s, op(Op::get), Bin{"a-late"})) == int(Code::ok));
  CHECK(code_of(h.call(s, op(Op::get), Bin{"b7"})) == int(Code::ok));
  CHECK(code_of(h.call(s, op(Op::get), Bin{"ab-new"})) == int(Code::not_found));
}

namespace {
uint64_t g_heavy = 0;
uint64_t heavy_clock() { return g_heavy += 300; }  // each step of the pass "takes" 300 us
}  // namespace

TEST_CASE("a SCAN alone takes about 1 ms a loop turn, shares the first slice, and sees the table as it began") {
  Harness h(32 << 20);
  h.engine->set_slice_clock(heavy_clock);
  uint64_t& g_ticks = g_heavy;
  Session* s = h.connect();
  for (int i = 0; i < 60000; ++i) h.send(s, op(Op::set), 1, Bin{"f" + std::to_string(i)}, Bin{"v"}, nil);
  h.replies(s);
  uint64_t t0 = g_ticks;
  h.send(s, op(Op::scan), 7, uint64_t(0), Bin{"f1*"}, uint64_t(10000));
  CHECK(g_ticks - t0 <= 500 + 300 + 300);  // the first slice (and the clock read that starts it)
  auto early = h.replies(s);
  CHECK(early.empty());            // 11111 keys match: not yet 10000 of them, not complete
  CHECK(h.engine->clears_pending());
  // Keys stored now are not part of the scan.
  for (int i = 0; i < 100; ++i) h.send(s, op(Op::set), 2, Bin{"f1new" + std::to_string(i)}, Bin{"v"}, nil);
  h.replies(s);
  std::vector<msgpack::object_handle> got;
  int turns = 0;
  while (true) {
    t0 = g_ticks;
    const bool done = h.engine->clear_work(2000);
    CHECK(g_ticks - t0 <= 1000 + 300 + 300);  // about 1 ms, not the 2 ms a CLEAR may take
    if (done) break;
    ++turns;
    REQUIRE(turns < 100000);
    for (auto& r : h.replies(s)) got.push_back(std::move(r));
  }
  for (auto& r : h.replies(s)) got.push_back(std::move(r));
  CHECK(turns > 1);
  REQUIRE(got.size() == 1);  // the 10000 first keys
  CHECK(arg(got[0], 3).via.array.size == 10000);
  const uint64_t cursor = arg(got[0], 2).via.u64;
  REQUIRE(cursor != 0);
  auto last = h.call(s, op(Op::scan), cursor, Bin{""}, uint64_t(10000));
  CHECK(arg(last, 2).via.u64 == 0);
  CHECK(arg(last, 3).via.array.size == 1111);
  // Each turn with only SCANs pending stays within about 1 ms.
  h.send(s, op(Op::scan), 8, uint64_t(0), Bin{"nothing*"}, uint64_t(10));
  while (true) {
    t0 = g_ticks;
    const bool done = h.engine->clear_work(2000);
    CHECK(g_ticks - t0 <= 1000 + 300 + 300);
    if (done) break;
  }
  auto none = h.one(s);
  CHECK(arg(none, 2).via.u64 == 0);
  CHECK(arg(none, 3).via.array.size == 0);
}
