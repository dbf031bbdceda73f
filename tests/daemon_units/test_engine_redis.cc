// tests/daemon_units/test_engine_redis.cc — the engine's Redis paths against a
// fake tier (redis::TierApi) that records each call and answers only when a
// test says so: read-through, redis_wait_ms deadlines, GET_MANY, ADD/INCR/LEASE
// decided by the tier, redis_down, writes racing an operation in flight, and
// sessions closing while they wait. The real tier on real redis-servers is
// tested in tests/redis/ and tests/e2e/.
#include <catch2/catch.hpp>

#include <deque>
#include <map>

#include "engine_harness.h"
#include "redis/slots.h"

using namespace nctest_daemon;
using nearcache::daemon::Code;
using nearcache::daemon::Op;
namespace redis = nearcache::redis;

namespace {

constexpr uint32_t op(Op o) { return uint32_t(o); }
const msgpack::type::nil_t nil;

uint64_t g_now = 1000000;
uint64_t fake_clock() { return g_now; }

using Kind = redis::AtomicResult::Kind;

// A tier that answers on command. Calls are recorded as "op key" strings.
struct FakeTier : redis::TierApi {
  redis::Config cfg;
  redis::TableHooks hooks;
  bool up = true;  // false: Redis unreachable (atomic calls return false, reads unavailable)
  std::vector<std::string> calls;
  std::map<std::string, std::deque<redis::FetchFn>> reads;  // pending read-throughs per key
  // Reads answered at once (this host's queue): key -> value.
  std::map<std::string, std::string> queued;
  std::deque<std::pair<std::string, redis::AtomicFn>> atomics;  // pending ADD/INCR/LEASE/wait_lease
  std::vector<uint64_t> cancelled;
  uint64_t local_decisions = 0, next_wait = 1;
  uint64_t last_item = 0;         // the item id the last fill() carried
  int64_t snapshot_counter = 42;  // fill_base(): the last snapshot's counter

  FakeTier() { cfg.wait_ms = 50; }

  redis::Enqueued set(std::string_view k, std::string_view v, uint8_t, uint64_t, uint64_t) override {
    calls.push_back("set " + std::string(k) + "=" + std::string(v));
    return redis::Enqueued::queued;
  }
  // A lease fill: recorded with the counter it is conditional on, and the
  // item; one that is to be a plain SET (kFillPlain) is one, as in the tier.
  redis::Enqueued fill(std::string_view k, std::string_view v, uint8_t fl, uint64_t e, uint64_t item,
                       int64_t expected) override {
    if (expected == redis::kFillPlain) return set(k, v, fl, e, item);
    calls.push_back("fill " + std::string(k) + "=" + std::string(v) + " @" + std::to_string(expected));
    last_item = item;
    return redis::Enqueued::queued;
  }
  int64_t fill_base(std::string_view) override { return snapshot_counter; }
  redis::Enqueued del(std::string_view k) override {
    calls.push_back("del " + std::string(k));
    return redis::Enqueued::queued;
  }
  redis::Enqueued touch(std::string_view k, uint64_t) override {
    calls.push_back("touch " + std::string(k));
    return redis::Enqueued::queued;
  }
  redis::Enqueued clear(std::string_view p) override {
    calls.push_back("clear " + std::string(p));
    return redis::Enqueued::queued;
  }
  redis::Enqueued clear_match(std::string_view p) override {
    calls.push_back("clear_match " + std::string(p));
    return redis::Enqueued::queued;
  }
  redis::Lookup get(std::string_view k, redis::Fetched* now, redis::FetchFn done) override {
    calls.push_back("get " + std::string(k));
    if (!up) return redis::Lookup::unavailable;
    auto q = queued.find(std::string(k));
    if (q != queued.end()) {
      now->kind = redis::Fetched::Kind::hit;
      now->value = q->second;
      return redis::Lookup::hit;
    }
    reads[std::string(k)].push_back(std::move(done));
    return redis::Lookup::pending;
  }
  bool atomic(const std::string& call, std::string_view k, redis::AtomicFn cb) {
    calls.push_back(call + " " + std::string(k));
    if (!up) return false;
    atomics.emplace_back(std::string(k), std::move(cb));
    return true;
  }
  bool add(std::string_view k, std::string_view, uint8_t, uint64_t, redis::AtomicFn cb) override {
    return atomic("add", k, std::move(cb));
  }
  bool incr(std::string_view k, __int128 d, redis::AtomicFn cb) override {
    return atomic("incr " + std::to_string(int64_t(d)), k, std::move(cb));
  }
  bool replace(std::string_view k, std::string_view, uint8_t, uint64_t, redis::AtomicFn cb) override {
    return atomic("replace", k, std::move(cb));
  }
  bool pttl(std::string_view k, redis::AtomicFn cb) override { return atomic("pttl", k, std::move(cb)); }
  bool lock(redis::LockOp, std::string_view k, std::string_view, uint64_t, uint64_t, redis::AtomicFn cb) override {
    return atomic("lock", k, std::move(cb));
  }
  bool lease(std::string_view k, uint64_t, uint64_t, redis::AtomicFn cb) override {
    return atomic("lease", k, std::move(cb));
  }
  bool release(std::string_view k, uint64_t, redis::AtomicFn) override {
    calls.push_back("release " + std::string(k));
    return up;
  }
  uint64_t wait_lease(std::string_view k, uint64_t, uint64_t, uint64_t, redis::AtomicFn cb) override {
    atomic("wait_lease", k, std::move(cb));
    return next_wait++;
  }
  void cancel_wait(uint64_t id) override { cancelled.push_back(id); }
  void wake_lease_waiters(std::string_view k) override { calls.push_back("wake " + std::string(k)); }
  void note_local_decision() override { local_decisions++; }
  redis::TierStatus status() const override { return {}; }
  const redis::Config& config() const override { return cfg; }

  // Answers the oldest read of `key`. A hit the tier may install (nothing
  // wrote the key meanwhile) goes into the table first, as the real tier does.
  void answer_read(const std::string& key, const std::string* value, bool installable = true) {
    REQUIRE(!reads[key].empty());
    redis::FetchFn fn = std::move(reads[key].front());
    reads[key].pop_front();
    redis::Fetched f;
    if (value) {
      f.kind = redis::Fetched::Kind::hit;
      f.value = *value;
      f.flags = 3;
      f.expiry_ms = g_now + 60000;
      f.installable = installable;
      if (installable) hooks.install(key, f.value, f.flags, f.expiry_ms);
    }
    fn(f);
  }
  void hit(const std::string& key, const std::string& value, bool installable = true) {
    answer_read(key, &value, installable);
  }
  void miss(const std::string& key) { answer_read(key, nullptr); }

  // Answers the oldest pending atomic operation.
  void answer(const redis::AtomicResult& r) {
    REQUIRE(!atomics.empty());
    redis::AtomicFn fn = std::move(atomics.front().second);
    atomics.pop_front();
    fn(r);
  }
  bool called(const std::string& c) const { return std::find(calls.begin(), calls.end(), c) != calls.end(); }
};

redis::AtomicResult result(Kind k) {
  redis::AtomicResult r;
  r.kind = k;
  return r;
}

struct Fixture {
  Harness h;
  FakeTier tier;  // destroyed before the engine, which never calls it then
  explicit Fixture(Config c = Config()) : h(16 << 20, c) {
    g_now = 1000000;
    h.engine->set_clock(fake_clock);
    h.writer->set_clock(fake_clock);
    tier.hooks = h.engine->table_hooks();
    h.engine->set_tier(&tier);
  }
  // The table alone (no read-through): the key's value, or "" when absent.
  std::string local(const std::string& key) {
    nearcache::shm::Item it;
    return h.writer->get(key, &it) ? std::string(it.value) : std::string();
  }
  void pass(uint64_t ms) {
    g_now += ms;
    h.engine->on_deadlines();
  }
};

std::string message(const msgpack::object_handle& r) { return bytes(arg(r, 2)); }

}  // namespace

TEST_CASE("engine+redis: a local miss reads through and the answer, hit or miss, is the reply") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.send(s, op(Op::get), 1, Bin{"k"});
  CHECK(f.h.replies(s).empty());
  CHECK(s->outstanding == 1);
  CHECK(s->blocked == 0);  // a read does not hold later requests back
  CHECK(code_of(f.h.call(s, op(Op::ping))) == int(Code::ok));
  f.tier.hit("k", "from-redis");
  auto r = f.h.one(s);
  CHECK(id_of(r) == 1);
  REQUIRE(code_of(r) == int(Code::ok));
  CHECK(bytes(arg(r, 2)) == "from-redis");
  CHECK(arg(r, 3).via.u64 == 3);
  CHECK(arg(r, 4).via.u64 == 60000);
  CHECK(s->outstanding == 0);
  // Installed by the tier: the next GET is local.
  CHECK(code_of(f.h.call(s, op(Op::get), Bin{"k"})) == int(Code::ok));
  CHECK(std::count(f.tier.calls.begin(), f.tier.calls.end(), "get k") == 1);

  f.h.send(s, op(Op::has_key), 2, Bin{"absent"});
  f.tier.miss("absent");
  r = f.h.one(s);
  CHECK(id_of(r) == 2);
  CHECK(code_of(r) == int(Code::not_found));
}

TEST_CASE("engine+redis: answers the tier gives at once need no wait") {
  Fixture f;
  Session* s = f.h.connect();
  f.tier.queued["q"] = "queued-value";
  auto r = f.h.call(s, op(Op::get), Bin{"q"});
  REQUIRE(code_of(r) == int(Code::ok));
  CHECK(bytes(arg(r, 2)) == "queued-value");
  f.tier.up = false;
  CHECK(code_of(f.h.call(s, op(Op::get), Bin{"k"})) == int(Code::not_found));
  CHECK(s->outstanding == 0);
  CHECK(f.h.engine->next_deadline() == UINT64_MAX);
}

TEST_CASE("engine+redis: no read waits longer than redis_wait_ms, a late answer is not a second reply") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.send(s, op(Op::get), 1, Bin{"k"});
  CHECK(f.h.engine->next_deadline() == g_now + 50);
  f.pass(49);
  CHECK(f.h.replies(s).empty());
  f.pass(1);
  auto r = f.h.one(s);
  CHECK(id_of(r) == 1);
  CHECK(code_of(r) == int(Code::not_found));
  CHECK(s->outstanding == 0);
  CHECK(f.h.engine->next_deadline() == UINT64_MAX);
  f.tier.hit("k", "late");
  CHECK(f.h.replies(s).empty());
  CHECK(f.local("k") == "late");  // the tier still installed it
}

TEST_CASE("engine+redis: TOUCH of a key only Redis has reads it through, then touches both tiers") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.send(s, op(Op::touch), 1, Bin{"k"}, 5000);
  CHECK(s->blocked != 0);
  f.h.send(s, op(Op::ping), 2);  // held back behind the TOUCH
  CHECK(f.h.replies(s).empty());
  f.tier.hit("k", "v");
  CHECK(s->blocked == 0);
  f.h.engine->feed(s);
  auto rs = f.h.replies(s);
  REQUIRE(rs.size() == 2);
  CHECK(id_of(rs[0]) == 1);
  CHECK(code_of(rs[0]) == int(Code::ok));
  CHECK(id_of(rs[1]) == 2);
  CHECK(f.tier.called("touch k"));
  auto r = f.h.call(s, op(Op::get), Bin{"k"});
  CHECK(arg(r, 4).via.u64 == 5000);
}

TEST_CASE("engine+redis: GET_MANY reads each missing key through and answers what came by the deadline") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.call(s, op(Op::set), Bin{"a"}, Bin{"local"}, nil);
  f.tier.queued["d"] = "queued";
  f.h.send(s, op(Op::get_many), 1, std::vector<Bin>{{"a"}, {"b"}, {"c"}, {"d"}});
  CHECK(f.tier.called("get b"));
  CHECK(f.tier.called("get c"));
  CHECK_FALSE(f.tier.called("get a"));
  f.tier.hit("b", "redis-b");
  CHECK(f.h.replies(s).empty());  // c is still out
  f.pass(50);
  auto r = f.h.one(s);
  CHECK(id_of(r) == 1);
  REQUIRE(code_of(r) == int(Code::ok));
  const auto& v = arg(r, 2).via.array;
  REQUIRE(v.size == 4);
  CHECK(bytes(v.ptr[0].via.array.ptr[0]) == "local");
  CHECK(bytes(v.ptr[1].via.array.ptr[0]) == "redis-b");
  CHECK(v.ptr[1].via.array.ptr[1].via.u64 == 3);
  CHECK(v.ptr[2].type == msgpack::type::NIL);
  CHECK(bytes(v.ptr[3].via.array.ptr[0]) == "queued");
  f.tier.miss("c");  // late: no second reply
  CHECK(f.h.replies(s).empty());

  SECTION("every key answered: replied at the last answer") {
    f.h.send(s, op(Op::get_many), 2, std::vector<Bin>{{"x"}, {"y"}});
    f.tier.miss("x");
    CHECK(f.h.replies(s).empty());
    f.tier.hit("y", "Y");
    r = f.h.one(s);
    CHECK(id_of(r) == 2);
    CHECK(arg(r, 2).via.array.ptr[0].type == msgpack::type::NIL);
    CHECK(bytes(arg(r, 2).via.array.ptr[1].via.array.ptr[0]) == "Y");
  }
}

TEST_CASE("engine+redis: ADD is decided by the tier and holds the connection's later requests back") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.send(s, op(Op::add), 1, Bin{"k"}, Bin{"v1"}, nil);
  f.h.send(s, op(Op::get), 2, Bin{"k"});
  CHECK(f.h.replies(s).empty());
  CHECK(f.tier.called("add k"));
  CHECK(f.local("k").empty());  // nothing stored before Redis decided
  f.tier.answer(result(Kind::ok));
  f.h.engine->feed(s);
  auto rs = f.h.replies(s);
  REQUIRE(rs.size() == 2);
  CHECK(code_of(rs[0]) == int(Code::ok));
  CHECK(bytes(arg(rs[1], 2)) == "v1");  // the GET after it sees it

  f.h.send(s, op(Op::add), 3, Bin{"e"}, Bin{"mine"}, nil);
  f.tier.answer(result(Kind::exists));
  auto r = f.h.one(s);
  CHECK(code_of(r) == int(Code::exists));
  CHECK(f.local("e").empty());
}

TEST_CASE("engine+redis: INCR/DECR are decided by the tier, result installed, errors as without Redis") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.send(s, op(Op::decr), 1, Bin{"n"}, 4);
  CHECK(f.tier.called("incr -4 n"));
  redis::AtomicResult ok = result(Kind::ok);
  ok.number = 6;
  ok.value = "\x06";
  f.tier.answer(ok);
  auto r = f.h.one(s);
  REQUIRE(code_of(r) == int(Code::ok));
  CHECK(arg(r, 2).via.i64 == 6);
  CHECK(f.local("n") == "\x06");

  f.h.send(s, op(Op::incr), 2, Bin{"n"}, 1);
  f.tier.answer(result(Kind::not_found));
  CHECK(code_of(f.h.one(s)) == int(Code::not_found));
  CHECK(f.local("n").empty());  // Redis has no such key: neither may this host

  f.h.send(s, op(Op::incr), 3, Bin{"n"}, 1);
  f.tier.answer(result(Kind::not_integer));
  r = f.h.one(s);
  CHECK(code_of(r) == int(Code::not_integer));
  CHECK(message(r) == "NOT_INTEGER: the value of the key is not a msgpack integer");

  f.h.send(s, op(Op::decr), 4, Bin{"n"}, 1);
  f.tier.answer(result(Kind::out_of_range));
  r = f.h.one(s);
  CHECK(code_of(r) == int(Code::out_of_range));
  CHECK(message(r) == "OUT_OF_RANGE: DECR result outside the signed 64-bit range; value unchanged");
}

TEST_CASE("engine+redis: LEASE decided by the tier, granted, a value, another host's lease") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.send(s, op(Op::lease), 1, Bin{"k"}, 1000, 0);
  f.tier.answer(result(Kind::granted));
  auto r = f.h.one(s);
  REQUIRE(code_of(r) == int(Code::leased));
  const uint64_t token = arg(r, 2).via.u64;
  CHECK(token != 0);
  // The holder's SET ends the lease here and in Redis (after the SET).
  f.h.call(s, op(Op::set), Bin{"k"}, Bin{"filled"}, nil);
  const auto set_at = std::find(f.tier.calls.begin(), f.tier.calls.end(), "set k=filled");
  const auto release_at = std::find(f.tier.calls.begin(), f.tier.calls.end(), "release k");
  CHECK(set_at < release_at);
  CHECK(release_at != f.tier.calls.end());

  SECTION("the key has a value in Redis") {
    f.h.send(s, op(Op::lease), 2, Bin{"v"}, 1000, 0);
    redis::AtomicResult val = result(Kind::value);
    val.value = "V";
    f.tier.answer(val);
    r = f.h.one(s);
    REQUIRE(code_of(r) == int(Code::ok));
    CHECK(bytes(arg(r, 2)) == "V");
    CHECK(f.local("v") == "V");
  }
  SECTION("another host holds it and wait_ms is 0: TIMEOUT") {
    f.h.send(s, op(Op::lease), 2, Bin{"h"}, 1000, 0);
    f.tier.answer(result(Kind::held));
    CHECK(code_of(f.h.one(s)) == int(Code::timeout));
    CHECK_FALSE(f.tier.called("wait_lease h"));
  }
  SECTION("another host holds it: waits on Redis without blocking, then gets it") {
    Session* t = f.h.connect();
    f.h.send(t, op(Op::lease), 2, Bin{"h"}, 1000, 500);
    CHECK(t->blocked != 0);
    f.tier.answer(result(Kind::held));
    CHECK(f.tier.called("wait_lease h"));
    CHECK(t->blocked == 0);  // a lease waiter: later requests go on
    CHECK(code_of(f.h.call(t, op(Op::ping))) == int(Code::ok));
    // This host's own write of the key wakes the poll.
    f.h.call(s, op(Op::set), Bin{"h"}, Bin{"x"}, nil);
    CHECK(f.tier.called("wake h"));
    f.tier.answer(result(Kind::granted));
    r = f.h.one(t);
    CHECK(id_of(r) == 2);
    CHECK(code_of(r) == int(Code::leased));
  }
  SECTION("another host holds it past wait_ms: TIMEOUT at the deadline, the poll cancelled") {
    f.h.send(s, op(Op::lease), 2, Bin{"h"}, 1000, 100);
    f.tier.answer(result(Kind::held));
    CHECK(f.h.engine->next_deadline() == g_now + 100 + 50);
    f.pass(149);
    CHECK(f.h.replies(s).empty());
    f.pass(1);
    CHECK(code_of(f.h.one(s)) == int(Code::timeout));
    CHECK(f.tier.cancelled.size() == 1);
  }
}

TEST_CASE("engine+redis: redis_down = local decides on this host when the tier cannot") {
  Fixture f;
  Session* s = f.h.connect();
  f.tier.up = false;
  CHECK(code_of(f.h.call(s, op(Op::add), Bin{"k"}, Bin{"v"}, nil)) == int(Code::ok));
  CHECK(f.local("k") == "v");
  CHECK(f.tier.called("set k=v"));  // the local decision is queued for Redis
  CHECK(code_of(f.h.call(s, op(Op::add), Bin{"k"}, Bin{"w"}, nil)) == int(Code::exists));
  f.h.call(s, op(Op::set), Bin{"n"}, Bin{"\x05"}, nil);
  auto r = f.h.call(s, op(Op::incr), Bin{"n"}, 2);
  CHECK(arg(r, 2).via.i64 == 7);
  CHECK(code_of(f.h.call(s, op(Op::lease), Bin{"l"}, 1000, 0)) == int(Code::leased));
  CHECK(f.tier.local_decisions == 4);
  CHECK(s->outstanding == 0);

  SECTION("and at the deadline when Redis does not answer") {
    f.tier.up = true;
    f.h.send(s, op(Op::add), 9, Bin{"late"}, Bin{"v"}, nil);
    f.pass(50);
    r = f.h.one(s);
    CHECK(code_of(r) == int(Code::ok));
    CHECK(f.local("late") == "v");
    CHECK(f.tier.local_decisions == 5);
  }
}

TEST_CASE("engine+redis: the lease holder's SET is the fill, conditional on the lease's counter") {
  Fixture f;
  Session* s = f.h.connect();
  Session* other = f.h.connect();
  s->pid = 100, other->pid = 200;
  f.h.send(s, op(Op::lease), 1, Bin{"k"}, 1000, 0);
  redis::AtomicResult granted = result(Kind::granted);
  granted.fill_base = 7;  // the slot counter when Redis granted it
  f.tier.answer(granted);
  REQUIRE(code_of(f.h.one(s)) == int(Code::leased));

  SECTION("from the holder") {
    f.h.call(s, op(Op::set), Bin{"k"}, Bin{"filled"}, nil);
    CHECK(f.tier.called("fill k=filled @7"));
    CHECK_FALSE(f.tier.called("set k=filled"));
    CHECK(f.local("k") == "filled");
    CHECK(f.tier.last_item == f.h.writer->item_id("k"));
    // Refused in Redis: another host wrote the slot since; the copy goes.
    f.tier.hooks.fill_refused("k", f.tier.last_item);
    CHECK(f.local("k").empty());
  }
  SECTION("from the holder's process on another connection (the Python client's write channel)") {
    Session* channel = f.h.connect();
    channel->pid = 100;
    f.h.call(channel, op(Op::set), Bin{"k"}, Bin{"filled"}, nil);
    CHECK(f.tier.called("fill k=filled @7"));
  }
  SECTION("from another process: a plain write, and it ends the lease") {
    f.h.call(other, op(Op::set), Bin{"k"}, Bin{"theirs"}, nil);
    CHECK(f.tier.called("set k=theirs"));
    CHECK(f.tier.calls.end() == std::find_if(f.tier.calls.begin(), f.tier.calls.end(),
                                             [](const std::string& c) { return c.rfind("fill ", 0) == 0; }));
  }
  SECTION("a refusal after a newer local write keeps the newer value") {
    f.h.call(s, op(Op::set), Bin{"k"}, Bin{"filled"}, nil);
    const uint64_t fill_item = f.tier.last_item;
    f.h.call(other, op(Op::set), Bin{"k"}, Bin{"newer"}, nil);
    f.tier.hooks.fill_refused("k", fill_item);
    CHECK(f.local("k") == "newer");
  }
}

TEST_CASE("engine+redis: a lease decided on this host fills against the last snapshot's counter") {
  Fixture f;
  Session* s = f.h.connect();
  f.tier.up = false;  // Redis does not decide: redis_down = local
  CHECK(code_of(f.h.call(s, op(Op::lease), Bin{"l"}, 1000, 0)) == int(Code::leased));
  f.h.call(s, op(Op::set), Bin{"l"}, Bin{"v"}, nil);
  CHECK(f.tier.called("fill l=v @42"));
}

TEST_CASE("engine+redis: redis_down = error answers UNAVAILABLE with why") {
  Fixture f;
  f.tier.cfg.down = redis::DownPolicy::error;
  Session* s = f.h.connect();
  f.tier.up = false;
  auto r = f.h.call(s, op(Op::add), Bin{"k"}, Bin{"v"}, nil);
  CHECK(code_of(r) == int(Code::unavailable));
  CHECK(message(r) ==
        "UNAVAILABLE: ADD is decided in Redis, which did not decide it (Redis is not connected); redis_down = error");
  CHECK(f.local("k").empty());
  CHECK(s->blocked == 0);
  CHECK(s->outstanding == 0);
  f.tier.up = true;
  f.h.send(s, op(Op::decr), 2, Bin{"n"}, 1);
  f.pass(50);
  r = f.h.one(s);
  CHECK(message(r) ==
        "UNAVAILABLE: DECR is decided in Redis, which did not decide it (Redis did not answer within redis_wait_ms "
        "(50 ms)); redis_down = error");
  redis::AtomicResult down = result(Kind::unavailable);
  down.error = "connection lost";
  f.h.send(s, op(Op::lease), 3, Bin{"l"}, 1000, 0);
  f.tier.answer(result(Kind::ok));  // the DECR's late answer: applied, not replied
  CHECK(f.h.replies(s).empty());
  f.tier.answer(down);
  r = f.h.one(s);
  CHECK(id_of(r) == 3);
  CHECK(message(r) ==
        "UNAVAILABLE: LEASE is decided in Redis, which did not decide it (connection lost); redis_down = error");
  CHECK(f.tier.local_decisions == 0);
}

TEST_CASE("engine+redis: a local write while Redis decides is not overwritten by the older result") {
  Fixture f;
  Session* a = f.h.connect();
  Session* b = f.h.connect();
  redis::AtomicResult ok = result(Kind::ok);
  ok.number = 1;
  ok.value = "\x01";

  SECTION("another connection's SET") {
    f.h.send(a, op(Op::incr), 1, Bin{"k"}, 1);
    f.h.call(b, op(Op::set), Bin{"k"}, Bin{"newer"}, nil);
    f.tier.answer(ok);
    CHECK(arg(f.h.one(a), 2).via.i64 == 1);  // the client still gets Redis's answer
    CHECK(f.local("k") == "newer");
  }
  SECTION("an invalidation from another host (drop)") {
    f.h.send(a, op(Op::add), 1, Bin{"k"}, Bin{"v"}, nil);
    f.tier.hooks.drop("k");
    f.tier.answer(result(Kind::ok));
    CHECK(code_of(f.h.one(a)) == int(Code::ok));
    CHECK(f.local("k").empty());
  }
  SECTION("a flush of the table (drop_all) and a CLEAR") {
    f.h.send(a, op(Op::incr), 1, Bin{"k"}, 1);
    f.tier.hooks.drop_all("test");
    f.tier.answer(ok);
    CHECK(f.local("k").empty());
    f.h.send(a, op(Op::incr), 2, Bin{"k"}, 1);
    f.h.send(b, op(Op::clear), 3, Bin{"zzz"});  // a CLEAR of any prefix counts as a write of every key
    f.tier.answer(ok);
    CHECK(f.local("k").empty());
  }
  SECTION("nothing wrote it: installed") {
    f.h.send(a, op(Op::incr), 1, Bin{"k"}, 1);
    f.h.call(b, op(Op::set), Bin{"other"}, Bin{"x"}, nil);
    f.tier.answer(ok);
    CHECK(f.local("k") == "\x01");
  }
  SECTION("a read-through the tier found stale is answered but not installed by the engine") {
    f.h.send(a, op(Op::get), 1, Bin{"r"});
    f.h.call(b, op(Op::set), Bin{"r"}, Bin{"newer"}, nil);
    f.tier.hit("r", "older", /*installable=*/false);
    CHECK(bytes(arg(f.h.one(a), 2)) == "older");
    CHECK(f.local("r") == "newer");
  }
}

TEST_CASE("engine+redis: a session closing while it waits, no reply, the outcome still applied") {
  Fixture f;
  Session* s = f.h.connect();
  Session* other = f.h.connect();

  SECTION("a read-through") {
    f.h.send(s, op(Op::get), 1, Bin{"k"});
    f.h.disconnect(s);
    CHECK(f.h.engine->next_deadline() == UINT64_MAX);
    f.tier.hit("k", "v");
    CHECK(s->out.bytes.empty());
    CHECK(code_of(f.h.call(other, op(Op::get), Bin{"k"})) == int(Code::ok));
  }
  SECTION("an ADD") {
    f.h.send(s, op(Op::add), 1, Bin{"k"}, Bin{"v"}, nil);
    f.h.disconnect(s);
    f.tier.answer(result(Kind::ok));
    CHECK(s->out.bytes.empty());
    CHECK(f.local("k") == "v");
  }
  SECTION("a LEASE Redis granted: given back") {
    f.h.send(s, op(Op::lease), 1, Bin{"k"}, 1000, 0);
    f.h.disconnect(s);
    f.tier.answer(result(Kind::granted));
    CHECK(s->out.bytes.empty());
    CHECK(f.tier.called("release k"));
  }
  SECTION("a LEASE waiting on another host's lease: the poll is cancelled") {
    f.h.send(s, op(Op::lease), 1, Bin{"k"}, 1000, 500);
    f.tier.answer(result(Kind::held));
    f.h.disconnect(s);
    CHECK(f.tier.cancelled.size() == 1);
    CHECK(f.h.engine->next_deadline() == UINT64_MAX);
  }
}

TEST_CASE("engine+redis: shutdown answers every wait SHUTTING_DOWN") {
  Fixture f;
  Session* s = f.h.connect();
  f.h.send(s, op(Op::get), 1, Bin{"k"});
  f.h.send(s, op(Op::add), 2, Bin{"a"}, Bin{"v"}, nil);
  f.h.engine->begin_shutdown();
  auto rs = f.h.replies(s);
  REQUIRE(rs.size() == 2);
  for (auto& r : rs) {
    CHECK(code_of(r) == int(Code::shutting_down));
    CHECK(message(r) == "SHUTTING_DOWN: the daemon is stopping");
  }
  CHECK(s->outstanding == 0);
  CHECK(s->closing);
}

TEST_CASE("engine+redis: STATUS shows the tier's state and counts LEASEs waiting on Redis") {
  Fixture f;
  f.tier.cfg.prefix = "app:";
  Session* s = f.h.connect();
  Session* t = f.h.connect();
  f.h.send(t, op(Op::lease), 1, Bin{"h"}, 1000, 500);
  f.tier.answer(result(Kind::held));
  auto r = f.h.call(s, op(Op::status));
  REQUIRE(code_of(r) == int(Code::ok));
  const auto& m = arg(r, 2).via.map;
  bool saw_redis = false, saw_waiters = false;
  for (uint32_t i = 0; i < m.size; ++i) {
    const std::string name = bytes(m.ptr[i].key);
    if (name == "lease_waiters") saw_waiters = m.ptr[i].val.via.u64 == 1;
    if (name != "redis") continue;
    saw_redis = true;
    const auto& rm = m.ptr[i].val.via.map;
    for (uint32_t j = 0; j < rm.size; ++j) {
      const std::string k = bytes(rm.ptr[j].key);
      if (k == "prefix") CHECK(bytes(rm.ptr[j].val) == "app:");
      if (k == "redis_down") CHECK(bytes(rm.ptr[j].val) == "local");
    }
  }
  CHECK(saw_redis);
  CHECK(saw_waiters);
}

TEST_CASE("engine+redis: a suspended table is kept but not served, drop_slots drops exactly its slots") {
  Fixture f;
  Session* s = f.h.connect();
  for (const char* k : {"a", "b", "c"}) REQUIRE(f.h.writer->set(k, std::string("v-") + k, 0, 0) == nearcache::shm::Status::ok);
  f.tier.hooks.suspend(true);
  // GET, HAS_KEY, LEASE ask the tier (unreachable here: misses), not the table.
  f.tier.up = false;
  CHECK(code_of(f.h.call(s, op(Op::get), Bin{"a"})) == int(Code::not_found));
  CHECK(code_of(f.h.call(s, op(Op::has_key), Bin{"a"})) == int(Code::not_found));
  CHECK(std::count(f.tier.calls.begin(), f.tier.calls.end(), "get a") == 2);
  CHECK(f.local("a") == "v-a");  // kept
  f.tier.hooks.suspend(false);
  CHECK(bytes(arg(f.h.call(s, op(Op::get), Bin{"a"}), 2)) == "v-a");

  const std::string& prefix = f.tier.cfg.prefix;
  REQUIRE(nearcache::redis::key_slot(prefix + "a") != nearcache::redis::key_slot(prefix + "b"));
  REQUIRE(nearcache::redis::key_slot(prefix + "a") != nearcache::redis::key_slot(prefix + "c"));
  std::vector<bool> slots(nearcache::redis::kSlots, false);
  slots[nearcache::redis::key_slot(prefix + "a")] = true;
  f.tier.hooks.drop_slots(slots);
  CHECK(f.local("a").empty());
  CHECK(f.local("b") == "v-b");
  CHECK(f.local("c") == "v-c");
}

TEST_CASE("engine+redis: TTL and REPLACE and locks are decided by the tier (a lock never by this host)") {
  Fixture f;  // redis_down = local
  Session* s = f.h.connect();
  f.h.send(s, op(Op::ttl), 1, Bin{"k"});
  f.h.send(s, op(Op::ping), 2);  // held back until the TTL is decided
  CHECK(f.h.replies(s).empty());
  CHECK(f.tier.called("pttl k"));
  redis::AtomicResult r = result(Kind::ok);
  r.number = 123456;
  f.tier.answer(r);
  f.h.engine->feed(s);
  auto rs = f.h.replies(s);
  REQUIRE(rs.size() == 2);
  CHECK(arg(rs[0], 2).via.u64 == 123456);
  CHECK(id_of(rs[1]) == 2);

  f.h.send(s, op(Op::replace), 3, Bin{"k"}, Bin{"v"}, nil);
  f.tier.answer(result(Kind::not_found));
  CHECK(code_of(f.h.one(s)) == int(Code::not_found));
  CHECK(f.local("k").empty());

  f.h.send(s, op(Op::lock), 4, Bin{"job"}, Bin{"t"}, 1000);
  CHECK(f.tier.called("lock job"));
  f.tier.answer(result(Kind::ok));
  CHECK(code_of(f.h.one(s)) == int(Code::ok));
  // Redis slow past redis_wait_ms: UNAVAILABLE, whatever redis_down says.
  f.h.send(s, op(Op::lock), 5, Bin{"job"}, Bin{"u"}, 1000);
  f.pass(50);
  auto late = f.h.one(s);
  CHECK(code_of(late) == int(Code::unavailable));
  CHECK(message(late).find("whatever redis_down says") != std::string::npos);
  f.tier.answer(result(Kind::ok));  // its late answer is no second reply
  CHECK(f.h.replies(s).empty());
  // Redis not connected: the same, and nothing decided here.
  f.tier.up = false;
  const uint64_t decisions = f.tier.local_decisions;
  CHECK(code_of(f.h.call(s, op(Op::lock), Bin{"other"}, Bin{"t"}, 1000)) == int(Code::unavailable));
  CHECK(code_of(f.h.call(s, op(Op::lock_query), Bin{"other"})) == int(Code::unavailable));
  CHECK(f.tier.local_decisions == decisions);
  // TTL falls back to this host's table under redis_down = local.
  f.h.call(s, op(Op::set), Bin{"here"}, Bin{"v"}, 5000);
  auto t = f.h.call(s, op(Op::ttl), Bin{"here"});
  CHECK(code_of(t) == int(Code::ok));
  CHECK(arg(t, 2).via.u64 == 5000);
}
