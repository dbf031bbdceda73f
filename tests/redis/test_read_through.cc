// ReadThrough: single flight, TTL and its ceiling, answers from the queue
// (read-your-writes), Redis unreachable or stopped, and a write racing a
// read in flight.
#include "fixture.h"

using namespace nearcache::redis;
using nctest::fetch;
using nctest::Flight;
using nctest::ReadPath;

TEST_CASE_METHOD(nctest::OneRedis,
                 "concurrent misses of one key cause one GET, every waiter gets the value, one install",
                 "[redis][read]") {
  ReadPath r(loop, cfg);
  r.start();
  redis.cmd("SET nc:k hello PX 100000");
  redis.cmd("CONFIG RESETSTAT");
  std::vector<Fetched> got;
  int pending = 0;
  for (int i = 0; i < 100; ++i) {
    Fetched now;
    const Lookup l = r.reads->get("k", &now, [&](const Fetched& f) { got.push_back(f); });
    pending += l == Lookup::pending;
  }
  CHECK(pending == 100);
  CHECK(r.reads->stats().joined_total == 99);
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
  fetch(r, "k");
  CHECK(redis.calls("get") == 2);
}

TEST_CASE_METHOD(nctest::OneRedis, "read-through TTL: Redis's time left, bounded by the local ceiling, flags come back",
                 "[redis][read]") {
  cfg.local_ttl_max_ms = 5000;
  ReadPath r(loop, cfg);
  r.start();
  redis.cmd("SET nc:forever v");
  redis.cmd("SET nc:short v PX 2000");
  redis.cmdv({"SET", "nc:flagged", encode_value("payload", 0x01)});
  std::map<std::string, Fetched> got;
  for (const char* k : {"forever", "short", "flagged", "absent"}) {
    Fetched now;
    REQUIRE(r.reads->get(k, &now, [&got, k](const Fetched& f) { got[k] = f; }) == Lookup::pending);
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
  CHECK(r.reads->stats().misses_total == 1);
  CHECK(r.reads->stats().hits_total == 3);
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "a key this host wrote is answered from the queue, a queued delete or CLEAR is a miss without Redis",
                 "[redis][read]") {
  ReadPath r(loop, cfg);
  redis.cmd("SET nc:d old");
  redis.cmd("SET nc:c:x old");
  // Redis unreachable: the queue still answers.
  r.queue->set("s", "mine", 5, 0);
  r.queue->del("d");
  r.queue->clear("c:");
  Fetched f;
  auto never = [](const Fetched&) { FAIL("called back"); };
  CHECK(r.reads->get("s", &f, never) == Lookup::hit);
  CHECK(f.value == "mine");
  CHECK(f.flags == 5);
  REQUIRE(r.installed.size() == 1);  // put back into the table
  CHECK(r.installed[0].first == "s");
  CHECK(r.installed[0].second.value == "mine");
  CHECK(r.reads->get("d", &f, never) == Lookup::miss);
  CHECK(r.reads->get("c:x", &f, never) == Lookup::miss);
  CHECK(r.reads->get("other", &f, never) == Lookup::unavailable);
  CHECK(r.reads->stats().queue_hits_total == 1);
  // Once the writes are on the wire (sent, not yet answered), a read goes to
  // Redis behind them on the same connection, so it sees them.
  r.start();
  REQUIRE(loop.until([&] { return r.queue->stats().depth == 0; }));
  redis.cmd("SET nc:d2 old");
  r.link->hold_replies(true);
  r.queue->set("s2", "mine2", 0, 0);
  r.queue->del("d2");
  CHECK(r.queue->stats().in_flight == 2);
  std::map<std::string, Fetched> got;
  for (const char* k : {"s2", "d2"})
    REQUIRE(r.reads->get(k, &f, [&got, k](const Fetched& x) { got[k] = x; }) == Lookup::pending);
  r.link->hold_replies(false);
  REQUIRE(loop.until([&] { return got.size() == 2; }));
  CHECK(got["s2"].kind == Fetched::Kind::hit);
  CHECK(got["s2"].value == "mine2");
  CHECK(got["d2"].kind == Fetched::Kind::miss);
  CHECK(r.queue->stats().depth == 0);
}

TEST_CASE_METHOD(nctest::OneRedis, "a stopped Redis: a read-through ends within the command timeout as unavailable",
                 "[redis][read]") {
  cfg.command_timeout_ms = 150;
  ReadPath r(loop, cfg);
  r.start();
  redis.pause();
  const uint64_t t0 = nctest::now_ms();
  const Fetched got = fetch(r, "k");
  const uint64_t took = nctest::now_ms() - t0;
  CHECK(took >= 140);
  CHECK(took < 1000);
  CHECK(got.kind == Fetched::Kind::unavailable);
  // Now a miss is answered at once.
  Fetched f;
  CHECK(r.reads->get("k", &f, [](const Fetched&) {}) == Lookup::unavailable);
  redis.resume();
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "a local write while a read is in flight: the old value goes to those who asked, never into the table",
                 "[redis][read]") {
  ReadPath r(loop, cfg);
  r.start();
  redis.cmd("SET nc:k old");
  r.link->hold_replies(true);  // the GET's reply waits in the socket
  Flight read(r, "k");
  REQUIRE(loop.until([&] { return redis.calls("get") == 1; }));
  // What Tier::set does: the read in flight goes stale, the write is queued.
  r.reads->invalidate("k");
  r.queue->set("k", "new", 0, 0);
  r.link->hold_replies(false);
  Fetched got = read.wait();
  CHECK(got.kind == Fetched::Kind::hit);
  CHECK(got.value == "old");
  CHECK_FALSE(got.installable);
  CHECK(r.installed.empty());
  CHECK(r.reads->stats().stale_total == 1);
  // The next miss reads this host's write (from the queue, or from Redis once flushed).
  got = {};
  bool done = false;
  Fetched f;
  const Lookup l = r.reads->get("k", &f, [&](const Fetched& x) { got = x, done = true; });
  if (l == Lookup::hit) got = f, done = true;
  REQUIRE(loop.until([&] { return done; }));
  CHECK(got.value == "new");
}

TEST_CASE_METHOD(nctest::OneRedis, "a value over the table's limit is served, never installed (redis_large_values)",
                 "[redis][read][large]") {
  cfg.local_max_bytes = 100;
  cfg.relay_max_bytes = 1000;
  ReadPath r(loop, cfg);
  const std::string mid = "\xc5\x01\xf4" + std::string(500, 'x');  // one msgpack bin: stored as it is
  // This host's queued write of one (queued before Redis is connected):
  // answered from the queue, not installed either.
  r.queue->set("queued", mid, 0, 0);
  Fetched q;
  REQUIRE(r.reads->get("queued", &q, [](const Fetched&) {}) == Lookup::hit);
  CHECK(q.value == mid);
  CHECK_FALSE(q.installable);
  CHECK(r.installed.empty());
  CHECK(r.reads->stats().large_total == 1);
  r.start();
  redis.cmdv({"SET", "nc:mid", mid});
  redis.cmdv({"SET", "nc:small", "\xa2ok"});
  auto read = [&](const char* k) {
    Fetched f, got;
    bool done = false;
    const Lookup l = r.reads->get(k, &f, [&](const Fetched& x) { got = x, done = true; });
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
  CHECK(r.reads->stats().large_total == 3);
  CHECK(r.reads->stats().gets_total == 2);  // each read asked Redis
  CHECK(read("small").installable);
  CHECK(r.installed.size() == 1);
  CHECK(r.reads->stats().large_total == 3);
}

TEST_CASE_METHOD(nctest::OneRedis, "without invalidations, read-through values are served but not installed",
                 "[redis][read]") {
  ReadPath r(loop, cfg);
  r.coherent = false;
  r.start();
  redis.cmd("SET nc:k v");
  const Fetched got = fetch(r, "k");
  CHECK(got.kind == Fetched::Kind::hit);
  CHECK_FALSE(got.installable);
  CHECK(r.installed.empty());
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "negative entries: a miss Redis answered is installed under the value's guard, nothing else is",
                 "[redis][read][negative]") {
  cfg.negative_ttl_ms = 1000;
  cfg.relay_max_bytes = 100;
  ReadPath r(loop, cfg);
  r.start();
  redis.cmdv({"SET", "nc:big", std::string(500, 'x')});
  auto read = [&](const char* k) { return fetch(r, k); };
  const Fetched a = read("absent");
  CHECK(a.kind == Fetched::Kind::miss);
  CHECK(a.installable);
  REQUIRE(r.installed.size() == 1);
  CHECK(r.installed[0].first == "absent");
  CHECK(r.installed[0].second.expiry_ms <= mono_ms() + 1000);
  CHECK(r.reads->stats().negatives_total == 1);
  // An oversize value is a miss, but Redis has the key: no negative entry.
  const Fetched big = read("big");
  CHECK(big.kind == Fetched::Kind::miss);
  CHECK_FALSE(big.absent);
  CHECK(r.installed.size() == 1);
  // A local write (or an invalidation) while the read is in flight: not installed.
  r.link->hold_replies(true);
  const long long strlens = redis.calls("strlen");
  Flight raced(r, "raced");
  REQUIRE(loop.until([&] { return redis.calls("strlen") > strlens; }));  // Redis answered; the reply is held
  r.reads->invalidate("raced");
  r.link->hold_replies(false);
  const Fetched got = raced.wait();
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
  ReadPath off(loop, cfg);
  off.start();
  const Fetched g = fetch(off, "absent2");
  CHECK(g.kind == Fetched::Kind::miss);
  CHECK(off.installed.empty());
}
