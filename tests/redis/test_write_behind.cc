// WriteBehind: coalescing, order and the CLEAR barrier, the bound and what
// it drops, TTLs, pipelining, flush on reconnect (10^5 sets with Redis killed
// and restarted), drain, and read-your-writes (pending, after).
#include <set>

#include "fixture.h"

using namespace nearcache::redis;
using nctest::DataPath;
using nctest::Loop;
using nctest::mp_int;
using nctest::RedisServer;

namespace {
bool empty(DataPath& d) { return d.queue->stats().depth == 0; }
}  // namespace

TEST_CASE_METHOD(nctest::OneRedis, "writes queued while Redis is unreachable coalesce per key, last one wins",
                 "[redis][queue]") {
  DataPath d(loop, cfg);
  redis.cmd("SET nc:b old");
  const uint64_t now = mono_ms();
  CHECK(d.queue->set("a", "1", 0, 0) == Enqueued::queued);
  CHECK(d.queue->set("a", "2", 0, 0) == Enqueued::coalesced);
  CHECK(d.queue->set("b", "1", 0, 0) == Enqueued::queued);
  CHECK(d.queue->del("b") == Enqueued::coalesced);
  CHECK(d.queue->set("c", "1", 0, now + 60000) == Enqueued::queued);
  CHECK(d.queue->touch("c", now + 120000) == Enqueued::coalesced);  // SET with the new TTL
  CHECK(d.queue->set("d", "x", 7, 0) == Enqueued::queued);
  auto st = d.queue->stats();
  CHECK(st.depth == 4);
  CHECK(st.enqueued_total == 7);
  CHECK(st.coalesced_total == 3);
  CHECK(redis.calls("set") == 1);  // only the test's own SET so far

  d.start();
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(redis.calls("set") == 4);     // a, c, d (and the test's)
  CHECK(redis.calls("unlink") == 1);  // b
  CHECK(redis.cmd("GET nc:a").str() == "2");
  CHECK(redis.cmd("EXISTS nc:b").integer() == 0);
  CHECK(redis.cmd("GET nc:c").str() == "1");
  const long long pttl = redis.cmd("PTTL nc:c").integer();
  CHECK(pttl > 110000);
  CHECK(pttl <= 120000);
  // A value with flags is stored in the envelope; decoding gives it back.
  std::string_view v;
  uint8_t f;
  const std::string stored = redis.cmd("GET nc:d").str();
  decode_value(stored, &v, &f);
  CHECK(v == "x");
  CHECK(f == 7);
  CHECK(d.queue->stats().flushed_total == 4);
}

TEST_CASE_METHOD(nctest::OneRedis, "TTLs become the time left when sent, an expired write is sent as a delete",
                 "[redis][queue]") {
  DataPath d(loop, cfg);
  redis.cmd("SET nc:short old");
  redis.cmd("SET nc:p v PX 100000");
  const uint64_t now = mono_ms();
  d.queue->set("long", "v", 0, now + 60000);
  d.queue->set("short", "v", 0, now + 50);
  d.queue->touch("p", 0);  // no expiry: PERSIST
  CHECK(d.queue->pending("short") == Pending::value);
  loop.run_for(300);
  CHECK(d.queue->pending("short") == Pending::deleted);
  d.start();
  REQUIRE(loop.until([&] { return empty(d); }));
  const long long pttl = redis.cmd("PTTL nc:long").integer();
  CHECK(pttl <= 59700);
  CHECK(pttl > 50000);
  CHECK(redis.cmd("EXISTS nc:short").integer() == 0);
  CHECK(redis.cmd("PTTL nc:p").integer() == -1);
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "CLEAR removes exactly the prefix with SCAN + UNLINK and is a barrier for later writes",
                 "[redis][queue]") {
  DataPath d(loop, cfg);
  // Enough keys for several SCAN steps, plus neighbours that must survive.
  for (int i = 0; i < 3000; ++i) redis.cmdv({"SET", "nc:p:" + std::to_string(i), "old"});
  redis.cmd("SET nc:q:keep 1");
  redis.cmd("SET other:p:keep 1");
  redis.cmd("SET nc:pp 1");  // prefix "p:" must not match "pp"
  redis.cmdv({"SET", "nc:a*[1", "x"});
  redis.cmd("SET nc:ab x");
  d.start();
  d.link->hold_replies(true);  // keep the CLEAR running while writes are queued behind it
  d.queue->set("p:5", "before", 0, 0);
  CHECK(d.queue->clear("p:") == Enqueued::queued);
  CHECK(d.queue->pending("p:5") == Pending::deleted);  // the queued SET was dropped by the CLEAR
  CHECK(d.queue->pending("p:77") == Pending::deleted); // covered by the pending CLEAR
  CHECK(d.queue->pending("q:keep") == Pending::none);
  d.queue->set("p:after", "new", 0, 0);
  d.queue->set("p:1", "new", 0, 0);
  CHECK(d.queue->pending("p:1") == Pending::value);
  d.queue->clear("a*[");
  loop.run_for(30);
  d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(redis.calls("flushdb") == 0);
  CHECK(redis.calls("flushall") == 0);
  CHECK(redis.cmd("EXISTS nc:p:5").integer() == 0);
  CHECK(redis.cmd("EXISTS nc:p:2999").integer() == 0);
  CHECK(redis.cmd("GET nc:p:after").str() == encode_value("new", 0));
  CHECK(redis.cmd("GET nc:p:1").str() == encode_value("new", 0));
  CHECK(redis.cmd("EXISTS nc:q:keep").integer() == 1);
  CHECK(redis.cmd("EXISTS other:p:keep").integer() == 1);
  CHECK(redis.cmd("EXISTS nc:pp").integer() == 1);
  CHECK(redis.cmdv({"EXISTS", "nc:a*[1"}).integer() == 0);
  CHECK(redis.cmd("EXISTS nc:ab").integer() == 1);
  CHECK(redis.dbsize_values() == 6);
  CHECK(d.queue->stats().cleared_keys_total == 3001);
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "the bound: overflow drops the new write, counts it, and never lets an older value win",
                 "[redis][queue]") {
  cfg.queue_max_entries = 100;
  cfg.queue_max_bytes = 20000;
  DataPath d(loop, cfg);
  redis.cmd("SET nc:k0 old");
  int dropped = 0;
  for (int i = 0; i < 150; ++i) dropped += d.queue->set("k" + std::to_string(i), "v", 0, 0) == Enqueued::dropped;
  CHECK(dropped == 50);
  CHECK(d.queue->stats().dropped_total == 50);
  CHECK(d.queue->stats().depth == 100);
  // A newer write to a queued key that does not fit turns the queued one into a delete.
  CHECK(d.queue->set("k0", std::string(19000, 'x'), 0, 0) == Enqueued::dropped);
  CHECK(d.queue->stats().dropped_total == 51);
  CHECK(d.queue->pending("k0") == Pending::deleted);
  // A delete of an unqueued key when full is dropped too; a CLEAR never is.
  CHECK(d.queue->del("k149") == Enqueued::dropped);
  CHECK(d.queue->clear("zz") == Enqueued::queued);
  d.start();
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(redis.cmd("EXISTS nc:k0").integer() == 0);  // neither "old" nor the first "v"
  CHECK(redis.dbsize_values() == 99);        // k1..k99
  CHECK(redis.cmd("EXISTS nc:k100").integer() == 0);
}

TEST_CASE_METHOD(nctest::OneRedis, "writes are pipelined up to the window", "[redis][queue]") {
  cfg.pipeline = 64;
  DataPath d(loop, cfg);
  d.start();
  for (int i = 0; i < 10000; ++i) d.queue->set("k" + std::to_string(i), mp_int(i), 0, 0);
  uint64_t max_in_flight = 0;
  REQUIRE(loop.until([&] {
    max_in_flight = std::max(max_in_flight, d.queue->stats().in_flight);
    return empty(d);
  }));
  CHECK(max_in_flight == 64);
  CHECK(redis.dbsize_values() == 10000);
  CHECK(d.queue->stats().flushed_total == 10000);
}

TEST_CASE("10^5 sets with Redis killed and restarted mid-stream: every write that fit is in Redis, drops exact",
          "[redis][queue][outage]") {
  RedisServer redis;  // append-only: what it acknowledged survives SIGKILL
  Loop loop;
  auto cfg = nctest::test_config(redis.unix_url());
  cfg.queue_max_entries = 20000;
  DataPath d(loop, cfg);
  d.start();
  constexpr int N = 100000;
  std::vector<bool> dropped(N);
  int produced = 0, drops = 0;
  uint64_t downs = 0;
  int up_again_at = -1;
  d.link->on_down([&](const std::string&) { downs++; });
  d.link->on_up([&] { up_again_at = produced; });
  // The producer: 500 sets per millisecond; Redis dies at 30000 and comes back at 60000.
  uv_timer_t idle;
  uv_timer_init(loop, &idle);
  struct Ctx {
    DataPath* d;
    RedisServer* redis;
    std::vector<bool>* dropped;
    int *produced, *drops;
  } ctx{&d, &redis, &dropped, &produced, &drops};
  idle.data = &ctx;
  uv_timer_start(&idle, [](uv_timer_t* h) {
    auto* c = static_cast<Ctx*>(h->data);
    for (int n = 0; n < 500 && *c->produced < N; ++n) {
      const int i = (*c->produced)++;
      if (i == 30000) c->redis->kill();
      if (i == 60000) c->redis->start();
      if (c->d->queue->set("k" + std::to_string(i), mp_int(i), 0, 0) == Enqueued::dropped) {
        (*c->dropped)[size_t(i)] = true;
        (*c->drops)++;
      }
    }
    if (*c->produced == N) uv_timer_stop(h);
  }, 1, 1);
  REQUIRE(loop.until([&] { return produced == N && empty(d); }, 30000));
  uv_close(reinterpret_cast<uv_handle_t*>(&idle), nullptr);
  CHECK(downs >= 1);
  CHECK(drops > 0);
  CHECK(up_again_at > 60000);  // reconnected while writes were still coming
  CHECK(up_again_at < N);
  const auto st = d.queue->stats();
  CHECK(st.dropped_total == uint64_t(drops));
  CHECK(st.failed_total == 0);
  INFO("drops " << drops << ", requeued " << st.requeued_total << ", reconnected at " << up_again_at);
  CHECK(redis.dbsize_values() == N - drops);
  // Every key: present with its value unless its write was dropped.
  int wrong = 0;
  for (int base = 0; base < N; base += 1000) {
    std::vector<std::string> argv{"MGET"};
    for (int i = base; i < base + 1000; ++i) argv.push_back("nc:k" + std::to_string(i));
    auto r = redis.cmdv(argv);
    REQUIRE(r.get());
    REQUIRE(r->elements == 1000);
    for (int i = base; i < base + 1000; ++i) {
      const redisReply* e = r->element[i - base];
      const bool present = e->type == REDIS_REPLY_STRING;
      if (present == dropped[size_t(i)] || (present && std::string(e->str, e->len) != mp_int(i))) wrong++;
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE_METHOD(nctest::OneRedis, "drain flushes before exit, or reports what is left at the deadline",
                 "[redis][queue]") {
  DataPath d(loop, cfg);
  d.start();
  for (int i = 0; i < 2000; ++i) d.queue->set("k" + std::to_string(i), "v", 0, 0);
  int64_t left = -1;
  d.queue->drain(mono_ms() + 5000, [&](uint64_t n) { left = int64_t(n); });
  REQUIRE(loop.until([&] { return left >= 0; }));
  CHECK(left == 0);
  CHECK(redis.dbsize_values() == 2000);

  redis.stop();
  REQUIRE(loop.until([&] { return !d.link->ready(); }));
  for (int i = 0; i < 10; ++i) d.queue->set("z" + std::to_string(i), "v", 0, 0);
  left = -1;
  const uint64_t t0 = nctest::now_ms();
  d.queue->drain(mono_ms() + 200, [&](uint64_t n) { left = int64_t(n); });
  REQUIRE(loop.until([&] { return left >= 0; }));
  CHECK(left == 10);
  CHECK(nctest::now_ms() - t0 >= 190);
}

TEST_CASE_METHOD(nctest::OneRedis, "after(): a key's queued writes go ahead of a command, even behind a CLEAR",
                 "[redis][queue]") {
  DataPath d(loop, cfg);
  bool called = false, ordered = true;
  d.queue->after("k", [&](bool o) { called = true, ordered = o; });
  CHECK(called);
  CHECK_FALSE(ordered);  // the link is not up
  for (int i = 0; i < 3000; ++i) redis.cmdv({"SET", "nc:" + std::to_string(i), "old"});
  d.start();

  // A key with one queued write: sent at once, out of queue order.
  d.link->hold_replies(true);
  d.queue->set("other", "1", 0, 0);
  d.queue->set("k", "v1", 0, 0);
  std::string seen;
  d.queue->after("k", [&](bool o) {
    REQUIRE(o);
    d.link->command({"GET", "nc:k"}, [&](const nearcache::redis::Reply& r) { seen = std::string(r.r->str, r.r->len); });
  });
  d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return !seen.empty(); }));
  CHECK(seen == encode_value("v1", 0));
  REQUIRE(loop.until([&] { return empty(d); }));

  // Behind a CLEAR: parked until the SCAN is done, then the key's writes, then the command.
  d.link->hold_replies(true);
  d.queue->clear("");
  d.queue->set("k", "v2", 0, 0);
  seen.clear();
  called = false;
  d.queue->after("k", [&](bool o) {
    called = true;
    REQUIRE(o);
    d.link->command({"GET", "nc:k"}, [&](const nearcache::redis::Reply& r) { seen = std::string(r.r->str, r.r->len); });
  });
  d.queue->set("k", "v3", 0, 0);  // after the call: must not overtake it
  CHECK_FALSE(called);
  d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return !seen.empty() && empty(d); }));
  CHECK(seen == encode_value("v2", 0));
  CHECK(redis.cmd("GET nc:k").str() == encode_value("v3", 0));
  CHECK(redis.dbsize_values() == 1);
}

TEST_CASE_METHOD(nctest::OneRedis, "a lost connection re-sends what was in flight, calls parked behind a CLEAR fail",
                 "[redis][queue]") {
  DataPath d(loop, cfg);
  d.start();
  d.link->hold_replies(true);
  for (int i = 0; i < 100; ++i) d.queue->set("k" + std::to_string(i), "v", 0, 0);
  d.queue->clear("zz");
  d.queue->set("zz1", "v", 0, 0);
  int parked = -1;
  d.queue->after("zz1", [&](bool o) { parked = o; });
  loop.run_for(20);
  CHECK(d.queue->stats().in_flight == 100);
  d.link->fail("test: connection dropped");
  REQUIRE(loop.until([&] { return parked >= 0; }));
  CHECK(parked == 0);
  CHECK(d.queue->stats().requeued_total == 100);
  CHECK(d.queue->pending("k5") == Pending::value);
  d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return empty(d); }, 5000));
  CHECK(redis.dbsize_values() == 101);
}

TEST_CASE_METHOD(nctest::OneRedis,
                 "after(): calls on one key run in the order asked, even when a later one could go at once",
                 "[redis][queue]") {
  cfg.pipeline = 1;
  DataPath d(loop, cfg);
  d.start();
  d.link->hold_replies(true);
  d.queue->clear("c:");
  // Runs as soon as the CLEAR is done and holds replies again, so the write
  // sent next keeps the window (1) full and the call below stays parked.
  bool first = false;
  d.queue->after("c:y", [&](bool) { first = true, d.link->hold_replies(true); });
  for (int i = 0; i < 5; ++i) d.queue->set("x" + std::to_string(i), "v", 0, 0);
  std::vector<int> order;
  d.queue->after("c:k", [&](bool o) { order.push_back(o ? 1 : -1); });
  d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return first; }));
  loop.run_for(10);
  CHECK(d.queue->pending("c:k") == Pending::none);  // no CLEAR covers it any more ...
  CHECK(order.empty());                             // ... but the first call still waits its turn
  d.queue->after("c:k", [&](bool o) { order.push_back(o ? 2 : -2); });
  CHECK(order.empty());
  d.link->hold_replies(false);
  REQUIRE(loop.until([&] { return order.size() == 2; }));
  CHECK(order == std::vector<int>{1, 2});
}
