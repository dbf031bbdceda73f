// ReadThrough: single flight, TTL and its ceiling, answers from the queue
// (read-your-writes), Redis unreachable or stopped, and a write racing a
// read in flight.
#include "fixture.h"

using namespace nearcache::redis;
using nctest::DataPath;
using nctest::Loop;

namespace {
struct Reads {
  DataPath d;
  std::vector<std::pair<std::string, Fetched>> installed;
  bool coherent = true;
  Reads(Loop& loop, const Config& cfg) : d(loop, cfg) {
    d.reads->set_coherent([this] { return coherent; });
    d.reads->set_install([this](std::string_view k, const Fetched& f) { installed.emplace_back(std::string(k), f); });
  }
};
}  // namespace

TEST_CASE_METHOD(nctest::OneRedis,
                 "concurrent misses of one key cause one GET, every waiter gets the value, one install",
                 "[redis][read]") {
  Reads r(loop, cfg);
  r.d.start();
  redis.cmd("SET nc:k hello PX 100000");
  redis.cmd("CONFIG RESETSTAT");
  std::vector<Fetched> got;
  int pending = 0;
  for (int i = 0; i < 100; ++i) {
    Fetched now;
    const Lookup l = r.d.reads->get("k", &now, [&](const Fetched& f) { got.push_back(f); });
    pending += l == Lookup::pending;
  }
  CHECK(pending == 100);
  CHECK(r.d.reads->stats().joined_total == 99);
  CHECK(got.empty());  // never called back before get() returned
  REQUIRE(loop.until([&] { return got.size() == 100; }));
  CHECK(redis.calls("get") == 1);
  CHECK(redis.calls("pttl") == 1);
  for (const auto& f : got) {
    CHECK(f.kind == Fetched::Kind::hit);
    CHECK(f.value == "hello");
    CHECK(f.installable);
  }
  REQUIRE(r.installed.size() == 1);
  const uint64_t now = mono_ms();
  CHECK(r.installed[0].second.expiry_ms > now + 99000);
  CHECK(r.installed[0].second.expiry_ms <= now + 100000);
  // A later miss is a new flight.
  Fetched now2;
  bool done = false;
  CHECK(r.d.reads->get("k", &now2, [&](const Fetched&) { done = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return done; }));
  CHECK(redis.calls("get") == 2);
}

TEST_CASE_METHOD(nctest::OneRedis, "read-through TTL: Redis's time left, bounded by the local ceiling, flags come back",
                 "[redis][read]") {
  cfg.local_ttl_max_ms = 5000;
  Reads r(loop, cfg);
  r.d.start();
  redis.cmd("SET nc:forever v");
  redis.cmd("SET nc:short v PX 2000");
  redis.cmdv({"SET", "nc:flagged", encode_value("payload", 0x01)});
  std::map<std::string, Fetched> got;
  for (const char* k : {"forever", "short", "flagged", "absent"}) {
    Fetched now;
    REQUIRE(r.d.reads->get(k, &now, [&got, k](const Fetched& f) { got[k] = f; }) == Lookup::pending);
  }
  REQUIRE(loop.until([&] { return got.size() == 4; }));
  const uint64_t now = mono_ms();
  CHECK(got["forever"].expiry_ms > now + 4900);
  CHECK(got["forever"].expiry_ms <= now + 5000);
  CHECK(got["short"].expiry_ms <= now + 2000);
  CHECK(got["short"].expiry_ms > now + 1900);
  CHECK(got["flagged"].value == "payload");
  CHECK(got["flagged"].flags == 0x01);
  CHECK(got["absent"].kind == Fetched::Kind::miss);
  CHECK(got["absent"].absent);
  REQUIRE(r.installed.size() == 4);  // the miss as a negative entry, its TTL under the same ceiling
  for (const auto& [k, f] : r.installed)
    if (k == "absent") CHECK((f.kind == Fetched::Kind::miss && f.expiry_ms <= now + 5000 && f.expiry_ms > now + 4900));
  CHECK(r.d.reads->stats().misses_total == 1);
  CHECK(r.d.reads->stats().hits_total == 3);
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "a key this host wrote is answered from the queue, a queued delete or CLEAR is a miss without Redis",
                 "[redis][read]") {
  Reads r(loop, cfg);
  redis.cmd("SET nc:d old");
  redis.cmd("SET nc:c:x old");
  // Redis unreachable: the queue still answers.
  r.d.queue->set("s", "mine", 5, 0);
  r.d.queue->del("d");
  r.d.queue->clear("c:");
  Fetched f;
  auto never = [](const Fetched&) { FAIL("called back"); };
  CHECK(r.d.reads->get("s", &f, never) == Lookup::hit);
  CHECK(f.value == "mine");
  CHECK(f.flags == 5);
  REQUIRE(r.installed.size() == 1);  // put back into the table
  CHECK(r.installed[0].first == "s");
  CHECK(r.installed[0].second.value == "mine");
  CHECK(r.d.reads->get("d", &f, never) == Lookup::miss);
  CHECK(r.d.reads->get("c:x", &f, never) == Lookup::miss);
  CHECK(r.d.reads->get("other", &f, never) == Lookup::unavailable);
  CHECK(r.d.reads->stats().queue_hits_total == 1);
  // Once the writes are on the wire (sent, not yet answered), a read goes to
  // Redis behind them on the same connection, so it sees them.
  r.d.start();
  REQUIRE(loop.until([&] { return r.d.queue->stats().depth == 0; }));
  redis.cmd("SET nc:d2 old");
  r.d.link->hold_replies(true);
  r.d.queue->set("s2", "mine2", 0, 0);
  r.d.queue->del("d2");
  CHECK(r.d.queue->stats().in_flight == 2);
  std::map<std::string, Fetched> got;
  for (const char* k : {"s2", "d2"})
    REQUIRE(r.d.reads->get(k, &f, [&got, k](const Fetched& x) { got[k] = x; }) == Lookup::pending);
  r.d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return got.size() == 2; }));
  CHECK(got["s2"].kind == Fetched::Kind::hit);
  CHECK(got["s2"].value == "mine2");
  CHECK(got["d2"].kind == Fetched::Kind::miss);
  CHECK(r.d.queue->stats().depth == 0);
}

TEST_CASE_METHOD(nctest::OneRedis, "a stopped Redis: a read-through ends within the command timeout as unavailable",
                 "[redis][read]") {
  cfg.command_timeout_ms = 150;
  Reads r(loop, cfg);
  r.d.start();
  redis.pause();
  Fetched f, got;
  bool done = false;
  const uint64_t t0 = nctest::now_ms();
  REQUIRE(r.d.reads->get("k", &f, [&](const Fetched& x) { got = x, done = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return done; }));
  const uint64_t took = nctest::now_ms() - t0;
  CHECK(took >= 140);
  CHECK(took < 1000);
  CHECK(got.kind == Fetched::Kind::unavailable);
  // Now a miss is answered at once.
  CHECK(r.d.reads->get("k", &f, [](const Fetched&) {}) == Lookup::unavailable);
  redis.resume();
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "a local write while a read is in flight: the old value goes to those who asked, never into the table",
                 "[redis][read]") {
  Reads r(loop, cfg);
  r.d.start();
  redis.cmd("SET nc:k old");
  r.d.link->hold_replies(true);  // the GET's reply waits in the socket
  Fetched f, got;
  bool done = false;
  REQUIRE(r.d.reads->get("k", &f, [&](const Fetched& x) { got = x, done = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return redis.calls("get") == 1; }));
  // What Tier::set does: the read in flight goes stale, the write is queued.
  r.d.reads->invalidate("k");
  r.d.queue->set("k", "new", 0, 0);
  r.d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return done; }));
  CHECK(got.kind == Fetched::Kind::hit);
  CHECK(got.value == "old");
  CHECK_FALSE(got.installable);
  CHECK(r.installed.empty());
  CHECK(r.d.reads->stats().stale_total == 1);
  // The next miss reads this host's write (from the queue, or from Redis once flushed).
  got = {};
  done = false;
  const Lookup l = r.d.reads->get("k", &f, [&](const Fetched& x) { got = x, done = true; });
  if (l == Lookup::hit) got = f, done = true;
  REQUIRE(loop.until([&] { return done; }));
  CHECK(got.value == "new");
}

TEST_CASE_METHOD(nctest::OneRedis, "a value over the table's limit is served, never installed (redis_large_values)",
                 "[redis][read][large]") {
  cfg.local_max_bytes = 100;
  cfg.relay_max_bytes = 1000;
  Reads r(loop, cfg);
  const std::string mid = "\xc5\x01\xf4" + std::string(500, 'x');  // one msgpack bin: stored as it is
  // This host's queued write of one (queued before Redis is connected):
  // answered from the queue, not installed either.
  r.d.queue->set("queued", mid, 0, 0);
  Fetched q;
  REQUIRE(r.d.reads->get("queued", &q, [](const Fetched&) {}) == Lookup::hit);
  CHECK(q.value == mid);
  CHECK_FALSE(q.installable);
  CHECK(r.installed.empty());
  CHECK(r.d.reads->stats().large_total == 1);
  r.d.start();
  redis.cmdv({"SET", "nc:mid", mid});
  redis.cmdv({"SET", "nc:small", "\xa2ok"});
  auto read = [&](const char* k) {
    Fetched f, got;
    bool done = false;
    const Lookup l = r.d.reads->get(k, &f, [&](const Fetched& x) { got = x, done = true; });
    if (l == Lookup::hit) return f;
    REQUIRE(l == Lookup::pending);
    REQUIRE(loop.until([&] { return done; }));
    return got;
  };
  for (int i = 0; i < 2; ++i) {
    const Fetched m = read("mid");
    CHECK(m.kind == Fetched::Kind::hit);
    CHECK(m.value == mid);
    CHECK_FALSE(m.installable);
  }
  CHECK(r.installed.empty());
  CHECK(r.d.reads->stats().large_total == 3);
  CHECK(r.d.reads->stats().gets_total == 2);  // each read asked Redis
  CHECK(read("small").installable);
  CHECK(r.installed.size() == 1);
  CHECK(r.d.reads->stats().large_total == 3);
}

TEST_CASE_METHOD(nctest::OneRedis, "without invalidations, read-through values are served but not installed",
                 "[redis][read]") {
  Reads r(loop, cfg);
  r.coherent = false;
  r.d.start();
  redis.cmd("SET nc:k v");
  Fetched f, got;
  bool done = false;
  REQUIRE(r.d.reads->get("k", &f, [&](const Fetched& x) { got = x, done = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return done; }));
  CHECK(got.kind == Fetched::Kind::hit);
  CHECK_FALSE(got.installable);
  CHECK(r.installed.empty());
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "negative entries: a miss Redis answered is installed under the value's guard, nothing else is",
                 "[redis][read][negative]") {
  cfg.negative_ttl_ms = 1000;
  cfg.relay_max_bytes = 100;
  Reads r(loop, cfg);
  r.d.start();
  redis.cmdv({"SET", "nc:big", std::string(500, 'x')});
  auto read = [&](const char* k) {
    Fetched f, got;
    bool done = false;
    REQUIRE(r.d.reads->get(k, &f, [&](const Fetched& x) { got = x, done = true; }) == Lookup::pending);
    REQUIRE(loop.until([&] { return done; }));
    return got;
  };
  const Fetched a = read("absent");
  CHECK(a.kind == Fetched::Kind::miss);
  CHECK(a.installable);
  REQUIRE(r.installed.size() == 1);
  CHECK(r.installed[0].first == "absent");
  CHECK(r.installed[0].second.expiry_ms <= mono_ms() + 1000);
  CHECK(r.d.reads->stats().negatives_total == 1);
  // An oversize value is a miss, but Redis has the key: no negative entry.
  const Fetched big = read("big");
  CHECK(big.kind == Fetched::Kind::miss);
  CHECK_FALSE(big.absent);
  CHECK(r.installed.size() == 1);
  // A local write (or an invalidation) while the read is in flight: not installed.
  r.d.link->hold_replies(true);
  Fetched f, got;
  bool done = false;
  const long long strlens = redis.calls("strlen");
  REQUIRE(r.d.reads->get("raced", &f, [&](const Fetched& x) { got = x, done = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return redis.calls("strlen") > strlens; }));  // Redis answered; the reply is held
  r.d.reads->invalidate("raced");
  r.d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return done; }));
  CHECK(got.kind == Fetched::Kind::miss);
  CHECK_FALSE(got.installable);
  CHECK(r.installed.size() == 1);
  // Without invalidations flowing: not installed either.
  r.coherent = false;
  CHECK_FALSE(read("incoherent").installable);
  CHECK(r.installed.size() == 1);
  // negative_ttl_ms = 0: no negative entries.
  r.coherent = true;
  cfg.negative_ttl_ms = 0;
  Reads off(loop, cfg);
  off.d.start();
  Fetched g;
  bool fin = false;
  REQUIRE(off.d.reads->get("absent2", &g, [&](const Fetched& x) { g = x, fin = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return fin; }));
  CHECK(g.kind == Fetched::Kind::miss);
  CHECK(off.installed.empty());
}
