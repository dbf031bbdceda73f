// tests/redis/test_fills.cc — lease fills (write_behind.h, "Lease fills")
// against a real redis-server: the fill script stores only while the slot
// counter holds the expected value, the LEASE script answers the counter a
// fill is conditional on, and a fill keeps its place in the key's order.
#include <string>
#include <vector>

#include "fixture.h"
#include "redis/slots.h"

using namespace nearcache::redis;
using nctest::DataPath;

namespace {

std::string counter_of(const std::string& key) { return slot_counter_key("nc:", key_slot("nc:" + key)); }

struct Refusals {
  std::vector<std::pair<std::string, uint64_t>> seen;
  explicit Refusals(DataPath& d) {
    d.queue->set_on_fill_refused([this](std::string_view k, uint64_t id) { seen.emplace_back(std::string(k), id); });
  }
};

bool empty(DataPath& d) { return d.queue->stats().depth == 0; }

// The value Redis holds for a key (the envelope of bytes that are not msgpack removed).
std::string value_of(nctest::RedisServer& r, const std::string& key) {
  const std::string s = r.cmd("GET %b", key.data(), key.size()).str();
  std::string_view v;
  uint8_t f = 0;
  decode_value(s, &v, &f);
  return std::string(v);
}

}  // namespace

TEST_CASE_METHOD(nctest::OneRedis, "a fill is stored and counted only while its slot counter is unchanged",
                 "[redis][fills]") {
  DataPath d(loop, cfg);
  Refusals refused(d);
  d.start();
  const std::string c = counter_of("k");
  redis.cmd("SET %b 5", c.data(), c.size());
  CHECK(d.queue->fill("k", "v1", 0, 0, 11, 5) == Enqueued::queued);
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(value_of(redis, "nc:k") == "v1");
  CHECK(redis.cmd("GET %b", c.data(), c.size()).str() == "6");  // bumped with the write
  // Another write of the slot came first (the counter is 6 now): nothing stored.
  CHECK(d.queue->fill("k", "v0", 0, 0, 12, 5) == Enqueued::queued);
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(value_of(redis, "nc:k") == "v1");
  CHECK(redis.cmd("GET %b", c.data(), c.size()).str() == "6");
  REQUIRE(refused.seen.size() == 1);
  CHECK(refused.seen[0] == std::make_pair(std::string("k"), uint64_t(12)));
  // A missing counter is its own value: missing then missing is unchanged.
  const std::string m = counter_of("m");
  REQUIRE(redis.cmd("EXISTS %b", m.data(), m.size()).integer() == 0);
  CHECK(d.queue->fill("m", "x", 0, mono_ms() + 60000, 13, kFillMissing) == Enqueued::queued);
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(value_of(redis, "nc:m") == "x");
  CHECK(redis.cmd("PTTL nc:m").integer() > 50000);
  CHECK(d.queue->fill("m", "y", 0, 0, 14, kFillMissing) == Enqueued::queued);  // the counter exists now
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(value_of(redis, "nc:m") == "x");
  const QueueStats st = d.queue->stats();
  CHECK(st.fills_total == 4);
  CHECK(st.fills_refused_total == 2);
  CHECK(st.failed_total == 0);
  CHECK(refused.seen.size() == 2);
}

TEST_CASE_METHOD(nctest::OneRedis, "a fill with nothing to compare with is refused at once, a plain fill is a SET",
                 "[redis][fills]") {
  DataPath d(loop, cfg);
  d.start();
  redis.cmd("SET nc:p old");
  CHECK(d.queue->fill("r", "v", 0, 0, 1, kFillRefuse) == Enqueued::refused);
  CHECK(d.queue->fill("p", "new", 0, 0, 2, kFillPlain) == Enqueued::queued);
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(redis.cmd("EXISTS nc:r").integer() == 0);
  CHECK(value_of(redis, "nc:p") == "new");
  CHECK(d.queue->stats().fills_total == 0);
  CHECK(d.queue->stats().fills_refused_total == 1);
}

TEST_CASE_METHOD(nctest::OneRedis, "a fill goes behind the key's queued write and a later write replaces it",
                 "[redis][fills]") {
  DataPath d(loop, cfg);
  Refusals refused(d);
  redis.cmd("SET nc:a old");
  redis.cmd("SET nc:b old");
  // Queued while Redis is not connected. a: a DELETE, then a fill conditional
  // on the counter before it: the DELETE is sent first (not replaced by the
  // fill) and its bump refuses the fill.
  CHECK(d.queue->del("a") == Enqueued::queued);
  CHECK(d.queue->fill("a", "filled", 0, 0, 1, kFillMissing) == Enqueued::queued);
  CHECK(d.queue->stats().depth == 2);
  // b: a fill, then a plain SET replaces it; c: a fill, then a TOUCH keeps it conditional.
  CHECK(d.queue->fill("b", "filled", 0, 0, 2, kFillMissing) == Enqueued::queued);
  CHECK(d.queue->set("b", "set", 0, 0, 3) == Enqueued::coalesced);
  const std::string c = counter_of("c");
  redis.cmd("SET %b 9", c.data(), c.size());
  CHECK(d.queue->fill("c", "filled", 0, 0, 4, 8) == Enqueued::queued);
  CHECK(d.queue->touch("c", mono_ms() + 60000) == Enqueued::coalesced);
  // d: a fill replaces a queued fill (the later lease's base is not older).
  CHECK(d.queue->fill("d", "first", 0, 0, 5, kFillMissing) == Enqueued::queued);
  CHECK(d.queue->fill("d", "second", 0, 0, 6, kFillMissing) == Enqueued::coalesced);
  // A queued fill is not read-your-writes: a read asks Redis, behind it.
  CHECK(d.queue->pending("d") == Pending::none);
  CHECK(d.queue->pending("b") == Pending::value);
  d.start();
  REQUIRE(loop.until([&] { return empty(d); }));
  CHECK(value_of(redis, "nc:d") == "second");
  CHECK(redis.cmd("EXISTS nc:a").integer() == 0);
  CHECK(value_of(redis, "nc:b") == "set");
  CHECK(redis.cmd("EXISTS nc:c").integer() == 0);  // still conditional: refused, not a plain SET
  CHECK(refused.seen.size() == 2);
}

TEST_CASE_METHOD(nctest::OneRedis, "a granted LEASE answers the counter its fill is conditional on",
                 "[redis][fills]") {
  cfg.relay_max_bytes = 100;
  DataPath d(loop, cfg);
  d.start();
  auto lease = [&](const std::string& k, uint64_t token) {
    AtomicResult out;
    bool done = false;
    REQUIRE(d.atomics->lease(k, token, 5000, [&](const AtomicResult& r) { out = r, done = true; }));
    REQUIRE(loop.until([&] { return done; }));
    REQUIRE(out.kind == AtomicResult::Kind::granted);
    return out.fill_base;
  };
  CHECK(lease("fresh", 1) == kFillMissing);
  const std::string c = counter_of("counted");
  redis.cmd("SET %b 41", c.data(), c.size());
  CHECK(lease("counted", 2) == 41);
  // A value Redis keeps but this host treats as absent (too large to relay): a plain SET replaces it.
  const std::string big(200, 'x');
  redis.cmd("SET nc:big %b", big.data(), big.size());
  CHECK(lease("big", 3) == kFillPlain);
}
