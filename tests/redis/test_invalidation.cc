// Two hosts (two Tiers, each with its own data and invalidation connections)
// sharing one Redis: invalidation delivery and NOLOOP, flush-all, the
// read-through/invalidation race forced deterministically, the invalidation
// link dropping (server-side kill, missed heartbeats, Redis dying), lease
// waiters woken by invalidations, status, and shutdown draining the queue.
#include <set>

#include "fixture.h"
#include "protocol/metrics.h"
#include "redis/metrics.h"

using namespace nearcache::redis;
using nctest::Host;

namespace {
bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
size_t count_with(const std::vector<std::string>& v, const std::string& part) {
  return size_t(std::count_if(v.begin(), v.end(), [&](const std::string& s) { return s.find(part) != std::string::npos; }));
}
}  // namespace

TEST_CASE_METHOD(nctest::TwoHosts,
                 "a write on one host removes the key from the other, a host's own writes do not come back",
                 "[redis][inval]") {
  b.table["k"] = {"old", 0, 0};
  const uint64_t t0 = nctest::now_ms();
  a.set("k", "new");
  REQUIRE(loop.until([&] { return has(b.dropped, "k"); }));
  const uint64_t delay = nctest::now_ms() - t0;
  CHECK(delay < 1000);  // typically about 1 ms; generous for a loaded CI machine
  CHECK(b.table.count("k") == 0);
  CHECK(a.table.at("k").value == "new");
  // Someone else's writes reach both; keys outside the prefix reach neither.
  redis.cmd("SET nc:z 1");
  redis.cmd("SET other:k 1");
  REQUIRE(loop.until([&] { return has(a.dropped, "z") && has(b.dropped, "z"); }));
  loop.run_for(100);
  CHECK_FALSE(has(a.dropped, "k"));  // NOLOOP
  CHECK(a.dropped.size() == 1);
  CHECK(b.dropped.size() == 2);
  CHECK(b.tier->status().inval.keys_total == 2);
  // Deletes, expiries and CLEAR invalidate too.
  a.del("z");
  redis.cmd("SET nc:e 1 PX 20");
  REQUIRE(loop.until([&] { return count_with(b.dropped, "z") == 2 && has(b.dropped, "e"); }));
  for (int i = 0; i < 5; ++i) redis.cmdv({"SET", "nc:c:" + std::to_string(i), "v"});
  REQUIRE(loop.until([&] { return count_with(b.dropped, "c:") == 5; }));
  a.tier->clear("c:");
  REQUIRE(loop.until([&] { return count_with(b.dropped, "c:") == 10; }));
  WARN("invalidation delay host A -> host B: " << delay << " ms");
}

TEST_CASE_METHOD(nctest::TwoHosts, "FLUSHDB by anyone flushes every host's near tier", "[redis][inval]") {
  a.table["x"] = {"v", 0, 0};
  const size_t fa = a.flushes.size(), fb = b.flushes.size();
  redis.cmd("FLUSHDB");
  REQUIRE(loop.until([&] { return a.flushes.size() == fa + 1 && b.flushes.size() == fb + 1; }));
  CHECK(a.flushes.back().find("FLUSHDB") != std::string::npos);
  CHECK(a.table.empty());
}

// The race: host A's GET has been answered by Redis with the old value, but
// A has not read the reply yet (its data connection's replies are held in
// the socket); host B writes the key; the invalidation reaches A first.
// A must not install the old value.
TEST_CASE_METHOD(nctest::TwoHosts, "a read-through racing an invalidation never installs the stale value",
                 "[redis][inval][race]") {
  redis.cmd("SET nc:k old");
  REQUIRE(loop.until([&] { return has(a.dropped, "k"); }));  // that write's own invalidation
  a.dropped.clear();
  redis.cmd("CONFIG RESETSTAT");
  a.tier->data().hold_replies(true);
  Fetched now, got;
  bool done = false;
  REQUIRE(a.tier->get("k", &now, [&](const Fetched& f) { got = f, done = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return redis.calls("pttl") == 1; }));  // Redis answered GET + PTTL: "old"
  b.set("k", "new");
  REQUIRE(loop.until([&] { return has(a.dropped, "k"); }));       // the invalidation came first
  CHECK_FALSE(done);
  a.tier->data().hold_replies(false);
  REQUIRE(loop.until([&] { return done; }));
  CHECK(got.kind == Fetched::Kind::hit);
  CHECK(got.value == "old");      // what Redis held when A asked
  CHECK_FALSE(got.installable);
  CHECK(a.table.count("k") == 0); // ... but never installed
  CHECK(a.installs == 0);
  CHECK(a.tier->status().reads.stale_total == 1);
  // The next miss reads and installs the new value.
  done = false;
  REQUIRE(a.tier->get("k", &now, [&](const Fetched& f) { got = f, done = true; }) == Lookup::pending);
  REQUIRE(loop.until([&] { return done; }));
  CHECK(got.value == "new");
  CHECK(a.table.at("k").value == "new");
}

TEST_CASE_METHOD(nctest::TwoHosts,
                 "the invalidation connection killed by the server: entries flushed, invalidations resume",
                 "[redis][inval][drop]") {
  const size_t before = a.flushes.size();
  a.table["stale"] = {"v", 0, 0};
  CHECK(redis.cmd("CLIENT KILL TYPE pubsub").integer() == 2);
  REQUIRE(loop.until([&] { return !a.tier->invalidation().coherent(); }));
  CHECK(a.table.empty());
  CHECK(a.flushes.at(before) == std::string("invalidations stopped"));
  REQUIRE(loop.until([&] { return a.tier->invalidation().coherent() && b.tier->invalidation().coherent(); }));
  CHECK(a.flushes.back() == std::string("invalidations (re)started"));
  CHECK(a.tier->status().inval.lost_total == 1);
  CHECK(a.tier->status().local_flushes_total >= 2);
  // Tracking was re-enabled with the new subscriber: B's writes reach A again.
  a.table["k"] = {"old", 0, 0};
  b.set("k", "new");
  REQUIRE(loop.until([&] { return has(a.dropped, "k"); }));
}

TEST_CASE_METHOD(nctest::OneRedis, "missed heartbeats declare the invalidation path broken and restart it",
                 "[redis][inval][drop]") {
  cfg.heartbeat_ms = 30;
  Host a(loop, cfg);
  a.start();
  a.table["x"] = {"v", 0, 0};
  // A half-open subscriber connection: nothing it receives is read.
  a.tier->invalidation().link().hold_replies(true);
  REQUIRE(loop.until([&] { return !a.tier->invalidation().coherent(); }, 2000));
  CHECK(a.table.empty());
  CHECK(a.tier->status().inval.heartbeat_misses_total == 1);
  a.tier->invalidation().link().hold_replies(false);
  REQUIRE(loop.until([&] { return a.tier->invalidation().coherent(); }, 3000));
  CHECK(a.tier->status().invalidation.connects_total == 2);
}

TEST_CASE_METHOD(nctest::TwoHosts,
                 "Redis dies: both hosts flush and report it, writes queue, all recovers when it returns",
                 "[redis][inval][outage]") {
  a.table["x"] = {"v", 0, 0};
  redis.kill();
  REQUIRE(loop.until([&] { return !a.tier->invalidation().coherent() && !a.tier->data().ready(); }));
  CHECK(a.table.empty());
  TierStatus st = a.tier->status();
  CHECK(st.degraded);  // redis_down = local
  CHECK(st.data.state == LinkState::backoff);
  CHECK(st.data.last_error.find("connection lost") != std::string::npos);
  // Writes are accepted and queued; reads are misses at once.
  CHECK(a.set("w", "1") == Enqueued::queued);
  Fetched f;
  CHECK(a.tier->get("w", &f, [](const Fetched&) {}) == Lookup::hit);  // read-your-writes from the queue
  CHECK(a.tier->get("other", &f, [](const Fetched&) {}) == Lookup::unavailable);
  CHECK_FALSE(a.tier->incr("n", 1, [](const AtomicResult&) {}));
  redis.start();
  REQUIRE(loop.until([&] { return a.tier->invalidation().coherent() && b.tier->invalidation().coherent(); }, 5000));
  REQUIRE(loop.until([&] { return a.tier->status().queue.depth == 0; }));
  CHECK(redis.cmd("GET nc:w").str() == "1");
  CHECK_FALSE(a.tier->status().degraded);
}

TEST_CASE_METHOD(nctest::OneRedis, "a lease waiter on another host wakes on the invalidation, not the next poll",
                 "[redis][inval][lease]") {
  cfg.lease_poll_min_ms = 2000;  // polling alone would take seconds
  cfg.lease_poll_max_ms = 2000;
  Host a(loop, cfg), b(loop, cfg);
  a.start();
  b.start();
  AtomicResult r;
  bool done = false;
  REQUIRE(a.tier->lease("k", 1, 10000, [&](const AtomicResult& x) { r = x, done = true; }));
  REQUIRE(loop.until([&] { return done; }));
  REQUIRE(r.kind == AtomicResult::Kind::granted);
  done = false;
  REQUIRE(b.tier->lease("k", 1, 10000, [&](const AtomicResult& x) { r = x, done = true; }));
  REQUIRE(loop.until([&] { return done; }));
  REQUIRE(r.kind == AtomicResult::Kind::held);
  done = false;
  b.tier->wait_lease("k", 1, 10000, mono_ms() + 8000, [&](const AtomicResult& x) { r = x, done = true; });
  loop.run_for(30);
  const uint64_t t0 = nctest::now_ms();
  a.set("k", "computed");
  REQUIRE(a.tier->release("k", 1, [](const AtomicResult&) {}));
  REQUIRE(loop.until([&] { return done; }, 3000));
  CHECK(nctest::now_ms() - t0 < 1500);  // a poll would come after 2000 ms
  CHECK(r.kind == AtomicResult::Kind::value);
  CHECK(r.value == "computed");
}

TEST_CASE_METHOD(nctest::TwoHosts, "tier: read-through between hosts, status, and shutdown draining the queue",
                 "[redis][tier]") {
  a.set("k", "v1", mono_ms() + 60000);
  REQUIRE(loop.until([&] { return a.tier->status().queue.depth == 0; }));
  Fetched f, got;
  // A read-through keeps its value only while invalidations flow; on a loaded
  // machine a missed heartbeat can stop them for a moment (the value is then
  // answered, not kept): read again once they flow.
  uint64_t reads = 0;
  while (!b.table.count("k") && reads < 20) {
    REQUIRE(loop.until([&] { return b.tier->invalidation().coherent(); }));
    bool done = false;
    REQUIRE(b.tier->get("k", &f, [&](const Fetched& x) { got = x, done = true; }) == Lookup::pending);
    REQUIRE(loop.until([&] { return done; }));
    reads++;
    CHECK(got.value == "v1");
  }
  CHECK(b.table.at("k").value == "v1");
  CHECK(b.table.at("k").expiry > mono_ms() + 50000);

  const TierStatus st = b.tier->status();
  CHECK(st.data.state == LinkState::ready);
  CHECK(st.invalidation.state == LinkState::ready);
  CHECK(st.coherent);
  CHECK_FALSE(st.degraded);
  CHECK(st.reads.hits_total == reads);
  CHECK(st.reads.gets_total == reads);
  CHECK(st.url == redis.unix_url());
  CHECK(redis_metric_value(st, RedisMetric::redis_connected) == 1);
  CHECK(redis_metric_value(st, RedisMetric::redis_coherent) == 1);
  CHECK(redis_metric_value(st, RedisMetric::redis_readthrough_hits_total) == reads);
  CHECK(redis_metric_value(st, RedisMetric::redis_degraded) == 0);

  // SIGTERM with a full queue: everything reaches Redis before the tier closes.
  a.tier->data().hold_replies(true);
  for (int i = 0; i < 5000; ++i) a.set("q" + std::to_string(i), "v");
  CHECK(a.tier->status().queue.depth > 0);
  uint64_t left = 99;
  bool closed = false;
  a.tier->shutdown([&](uint64_t n) { left = n, closed = true; });
  a.tier->data().hold_replies(false);
  REQUIRE(loop.until([&] { return closed; }));
  a.closed = true;
  CHECK(left == 0);
  CHECK(redis.dbsize_values() == 5001);
}

// The rows paste into the daemon's metric table: same shape, names unique.
TEST_CASE("the metric rows have the daemon's shape", "[redis][tier]") {
  const nearcache::daemon::MetricSpec* rows = nearcache::daemon::redis_metric_table();
  std::set<std::string> names;
  for (size_t i = 0; i < nearcache::daemon::kRedisMetricCount; ++i) {
    const auto& r = rows[i];
    CHECK(std::string(r.name).rfind("redis_", 0) == 0);
    CHECK(names.insert(r.name).second);
    CHECK(std::string(r.help).size() > 10);
  }
  CHECK(names.size() == size_t(RedisMetric::count_));
}
