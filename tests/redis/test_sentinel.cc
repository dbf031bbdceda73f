// The Link's endpoint hook (LinkOptions::locate, what Sentinel plugs into)
// and its ROLE check, against real redis-servers (a primary and its replica):
// the hook's answer is where the link connects, a hook that fails or never
// answers is bounded by the connect timeout while the loop keeps turning, a
// replica is refused and retried, reconnect_now() skips the backoff.
#include "harness.h"
#include "redis/link.h"

using namespace nearcache::redis;
using nctest::Loop;
using nctest::RedisServer;

namespace {

LinkOptions located(std::function<void(LinkOptions::Located)> hook, uint64_t connect_ms = 1000) {
  LinkOptions o;
  o.name = "test";
  o.connect_timeout_ms = connect_ms;
  o.command_timeout_ms = 1000;
  o.reconnect_min_ms = 10;
  o.reconnect_max_ms = 50;
  o.locate = std::move(hook);
  o.locate_what = "asking the test where Redis is";
  o.require_master = true;
  return o;
}

void close_link(Loop& loop, Link& l) {
  bool closed = false;
  l.close([&] { closed = true; });
  REQUIRE(loop.until([&] { return closed; }));
}

}  // namespace

TEST_CASE("a located link connects where the hook says, asks again on every attempt, and refuses a replica",
          "[redis][sentinel]") {
  RedisServer primary({.tcp = true});
  RedisServer replica({.tcp = true, .extra_args = {"--replicaof", "127.0.0.1", std::to_string(primary.port)}});
  Loop loop;
  int asked = 0;
  int target = primary.port;
  Link l(loop, Endpoint{}, located([&](LinkOptions::Located done) {
           asked++;
           done(true, "127.0.0.1", uint16_t(target), "");
         }));
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
  CHECK(asked == 1);
  CHECK(l.endpoint().port == primary.port);

  // The hook now names the replica: ROLE says slave, the attempt fails and is retried.
  target = replica.port;
  l.fail("test: reconnect");
  REQUIRE(loop.until([&] { return l.status().last_error.find("is not the master (ROLE: slave)") != std::string::npos; }));
  CHECK_FALSE(l.ready());
  REQUIRE(loop.until([&] { return asked >= 4; }));  // asked again before every attempt
  target = primary.port;
  REQUIRE(loop.until([&] { return l.ready(); }));
  CHECK(l.endpoint().port == primary.port);
  close_link(loop, l);
}

TEST_CASE("a locate hook that fails or never answers is bounded by the connect timeout", "[redis][sentinel]") {
  Loop loop;
  SECTION("fails") {
    Link l(loop, Endpoint{}, located([](LinkOptions::Located done) { done(false, "", 0, "no Sentinel answered"); }));
    l.start();
    REQUIRE(loop.until([&] { return !l.status().last_error.empty(); }));
    CHECK(l.status().last_error == "asking the test where Redis is: no Sentinel answered");
    close_link(loop, l);
  }
  SECTION("never answers, then answers late (ignored)") {
    std::vector<LinkOptions::Located> held;
    Link l(loop, Endpoint{}, located([&](LinkOptions::Located done) { held.push_back(std::move(done)); }, 200));
    const uint64_t t0 = nctest::now_ms();
    l.start();
    REQUIRE(loop.until([&] { return !l.status().last_error.empty(); }));
    CHECK(nctest::now_ms() - t0 < 1000);
    CHECK(l.status().last_error.find("asking the test where Redis is: timed out after 200 ms") == 0);
    REQUIRE(!held.empty());
    held[0](true, "127.0.0.1", 1, "");  // the attempt gave up: nothing happens
    CHECK(l.state() != LinkState::connecting);
    close_link(loop, l);
    for (auto& h : held) h(true, "127.0.0.1", 1, "");  // after close: ignored too
  }
}

TEST_CASE("reconnect_now skips the backoff", "[redis][sentinel]") {
  RedisServer redis({.tcp = true});
  Loop loop;
  bool up = false;
  LinkOptions o = located([&](LinkOptions::Located done) {
    if (up) done(true, "127.0.0.1", uint16_t(redis.port), "");
    else done(false, "", 0, "not yet");
  });
  o.reconnect_min_ms = o.reconnect_max_ms = 60000;
  Link l(loop, Endpoint{}, o);
  l.start();
  REQUIRE(loop.until([&] { return l.state() == LinkState::backoff; }));
  up = true;
  l.reconnect_now();
  REQUIRE(loop.until([&] { return l.ready(); }, 3000));
  close_link(loop, l);
}
