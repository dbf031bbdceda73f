// Link: connecting (Unix socket, TCP by name through uv_getaddrinfo),
// AUTH/ACL/SELECT, refused connections, command timeouts against a stopped
// server, a resolver that does not answer, lost connections and reconnects.
#include <atomic>
#include <condition_variable>
#include <mutex>

#include "harness.h"
#include "redis/link.h"

using namespace nearcache::redis;
using nctest::Loop;
using nctest::RedisServer;

namespace {

Endpoint ep_of(const std::string& url) {
  Endpoint e;
  std::string err;
  INFO(url);
  REQUIRE(parse_url(url, &e, &err));
  return e;
}

LinkOptions fast(uint64_t connect_ms = 1000, uint64_t command_ms = 1000) {
  LinkOptions o;
  o.name = "test";
  o.connect_timeout_ms = connect_ms;
  o.command_timeout_ms = command_ms;
  o.reconnect_min_ms = 10;
  o.reconnect_max_ms = 50;
  return o;
}

void close_link(Loop& loop, Link& l) {
  bool closed = false;
  l.close([&] { closed = true; });
  REQUIRE(loop.until([&] { return closed; }));
}

std::string ping(Loop& loop, Link& l) {
  std::string out = "(no reply)";
  bool done = false;
  REQUIRE(l.command({"PING"}, [&](const nearcache::redis::Reply& r) {
    out = r.is_error() ? "error: " + r.error() : std::string(r.r->str, r.r->len);
    done = true;
  }));
  REQUIRE(loop.until([&] { return done; }));
  return out;
}

// A ticker on the loop: counts how often the loop turned while we waited.
struct Ticker {
  uv_timer_t t;
  int ticks = 0;
  explicit Ticker(uv_loop_t* loop, uint64_t every_ms = 10) {
    uv_timer_init(loop, &t);
    t.data = this;
    uv_timer_start(&t, [](uv_timer_t* h) { static_cast<Ticker*>(h->data)->ticks++; }, every_ms, every_ms);
  }
  ~Ticker() { uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr); }
};

}  // namespace

TEST_CASE("a link connects over a Unix socket and runs commands in order", "[redis][link]") {
  RedisServer redis;
  Loop loop;
  Link l(loop, ep_of(redis.unix_url()), fast());
  int ups = 0;
  l.on_up([&] { ups++; });
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
  CHECK(ups == 1);
  CHECK(ping(loop, l) == "PONG");
  std::vector<long long> got;
  for (int i = 0; i < 100; ++i)
    REQUIRE(l.command({"INCR", "n"}, [&](const nearcache::redis::Reply& r) { got.push_back(r.r->integer); }));
  REQUIRE(loop.until([&] { return got.size() == 100; }));
  for (int i = 0; i < 100; ++i) CHECK(got[i] == i + 1);
  CHECK(l.status().state == LinkState::ready);
  CHECK(l.status().last_error.empty());
  close_link(loop, l);
  CHECK(l.state() == LinkState::stopped);
}

TEST_CASE("a host name is resolved with uv_getaddrinfo, then hiredis connects to the address", "[redis][link]") {
  RedisServer redis({.tcp = true});
  Loop loop;
  Link l(loop, ep_of(redis.tcp_url("localhost")), fast());
  l.start();
  CHECK(l.state() == LinkState::resolving);  // never resolved on the loop thread
  REQUIRE(loop.until([&] { return l.ready(); }));
  CHECK(l.status().resolves_total >= 1);
  CHECK(ping(loop, l) == "PONG");
  close_link(loop, l);
}

TEST_CASE("a numeric address needs no lookup", "[redis][link]") {
  RedisServer redis({.tcp = true});
  Loop loop;
  Link l(loop, ep_of(redis.tcp_url("127.0.0.1")), fast());
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
  CHECK(l.status().resolves_total == 0);
  close_link(loop, l);
}

TEST_CASE("AUTH with a password, a wrong one is a clear error and the link keeps retrying", "[redis][link]") {
  RedisServer redis({.password = "s3cret"});
  Loop loop;
  SECTION("right password") {
    Link l(loop, ep_of(redis.unix_url(":s3cret")), fast());
    l.start();
    REQUIRE(loop.until([&] { return l.ready(); }));
    CHECK(ping(loop, l) == "PONG");
    close_link(loop, l);
  }
  SECTION("wrong password") {
    Link l(loop, ep_of(redis.unix_url(":nope")), fast());
    l.start();
    REQUIRE(loop.until([&] { return l.status().failures_total >= 3; }));
    CHECK_FALSE(l.ready());
    const std::string e = l.status().last_error;
    INFO(e);
    CHECK(e.find("AUTH failed") != std::string::npos);
    CHECK(e.find("WRONGPASS") != std::string::npos);
    CHECK(e.find("nope") == std::string::npos);
    close_link(loop, l);
  }
  SECTION("no password") {
    Link l(loop, ep_of(redis.unix_url()), fast());
    l.start();
    REQUIRE(loop.until([&] { return l.status().failures_total >= 1; }));
    CHECK_FALSE(l.ready());
    CHECK(l.status().last_error.find("NOAUTH") != std::string::npos);
    close_link(loop, l);
  }
}

TEST_CASE("AUTH with an ACL user (Redis 6+), and SELECT", "[redis][link]") {
  RedisServer redis({.user = "alice", .user_password = "wonder"});
  Loop loop;
  Link l(loop, ep_of(redis.unix_url("alice:wonder") + "?db=2"), fast());
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
  bool done = false;
  REQUIRE(l.command({"SET", "k", "in-db-2"}, [&](const nearcache::redis::Reply&) { done = true; }));
  REQUIRE(loop.until([&] { return done; }));
  CHECK(redis.cmd("GET k").nil());
  redis.cmd("SELECT 2");
  CHECK(redis.cmd("GET k").str() == "in-db-2");
  close_link(loop, l);

  Link bad(loop, ep_of(redis.unix_url("alice:wrong")), fast());
  bad.start();
  REQUIRE(loop.until([&] { return bad.status().failures_total >= 1; }));
  CHECK(bad.status().last_error.find("WRONGPASS") != std::string::npos);
  close_link(loop, bad);
}

TEST_CASE("a refused TCP connection fails at once, not at the connect timeout", "[redis][link]") {
  // hiredis 0.14's own libuv adapter drops the poll error and would hang here.
  Loop loop;
  const int port = nctest::free_port();
  Link l(loop, ep_of("redis://127.0.0.1:" + std::to_string(port)), fast(10000));
  const uint64_t t0 = nctest::now_ms();
  l.start();
  REQUIRE(loop.until([&] { return l.status().failures_total >= 1; }, 3000));
  CHECK(nctest::now_ms() - t0 < 2000);
  INFO(l.status().last_error);
  CHECK(l.status().last_error.find("refused") != std::string::npos);
  CHECK(l.state() == LinkState::backoff);
  close_link(loop, l);
}

TEST_CASE("a command to a stopped server times out while the loop keeps turning, the link recovers", "[redis][link]") {
  RedisServer redis;
  Loop loop;
  Link l(loop, ep_of(redis.unix_url()), fast(300, 200));
  int downs = 0;
  l.on_down([&](const std::string&) { downs++; });
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
  redis.pause();
  Ticker tick(loop);
  std::vector<std::string> outcomes;
  const uint64_t t0 = nctest::now_ms();
  uint64_t t_first = 0;
  for (int i = 0; i < 3; ++i)
    REQUIRE(l.command({"GET", "x"}, [&](const nearcache::redis::Reply& r) {
      if (outcomes.empty()) t_first = nctest::now_ms();
      outcomes.push_back(r.fail == nearcache::redis::Reply::Fail::timeout        ? "timeout"
                         : r.fail == nearcache::redis::Reply::Fail::disconnected ? "disconnected"
                                                                                 : "reply");
    }));
  REQUIRE(loop.until([&] { return outcomes.size() == 3; }, 3000));
  // The oldest command times out; the connection is closed, which fails the rest.
  CHECK(outcomes == std::vector<std::string>{"timeout", "disconnected", "disconnected"});
  CHECK(t_first - t0 >= 190);
  CHECK(t_first - t0 < 1000);
  CHECK(downs == 1);
  CHECK_FALSE(l.ready());
  CHECK(l.command({"PING"}, [](const nearcache::redis::Reply&) { FAIL("called"); }) == false);
  // Reconnecting to a stopped server: the socket connects, PING does not answer.
  loop.run_for(700);
  CHECK_FALSE(l.ready());
  CHECK(tick.ticks >= 30);  // 10 ms ticks over ~900 ms (some late on a busy machine): the loop never stalled
  INFO(l.status().last_error);
  CHECK(l.status().last_error.find("did not answer within 200 ms") != std::string::npos);
  CHECK(l.status().timeouts_total >= 2);  // the command, then the PING of a reconnect attempt
  redis.resume();
  REQUIRE(loop.until([&] { return l.ready(); }, 3000));
  CHECK(ping(loop, l) == "PONG");
  close_link(loop, l);
}

// A resolver that does not answer, made deterministic: uv_getaddrinfo runs
// getaddrinfo on libuv's threadpool, so occupying every pool thread delays
// its answer exactly as a hanging DNS server would (a real slow resolver
// needs control over the host's resolv.conf, which a test cannot assume).
// If the link resolved on the loop thread (hiredis's blocking getaddrinfo),
// it would connect at once despite the busy pool; it must instead wait,
// while the loop keeps turning, with one lookup in flight however many
// attempts time out, and connect once the lookup answers.
TEST_CASE("a host name whose lookup hangs never stalls the loop", "[redis][link][dns]") {
  RedisServer redis({.tcp = true});
  Loop loop;
  const char* env = getenv("UV_THREADPOOL_SIZE");
  const int pool = env ? std::max(1, atoi(env)) : 4;
  struct Block {
    std::mutex m;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> started{0}, finished{0};
  } block;
  std::vector<uv_work_t> work(size_t(pool) + 0);
  for (auto& w : work) {
    w.data = &block;
    uv_queue_work(
        loop, &w,
        [](uv_work_t* r) {
          auto* b = static_cast<Block*>(r->data);
          b->started++;
          std::unique_lock<std::mutex> lk(b->m);
          b->cv.wait(lk, [b] { return b->open; });
        },
        [](uv_work_t* r, int) { static_cast<Block*>(r->data)->finished++; });
  }
  // Every pool thread is inside a blocker before the link asks for its lookup.
  const uint64_t t_wait = nctest::now_ms() + 5000;
  while (block.started < pool && nctest::now_ms() < t_wait) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(block.started == pool);

  Link l(loop, ep_of(redis.tcp_url("localhost")), fast(100));
  Ticker tick(loop);
  l.start();
  loop.run_for(600);
  CHECK_FALSE(l.ready());
  CHECK(tick.ticks >= 25);  // 10 ms ticks over 600 ms
  CHECK(l.status().failures_total >= 2);        // several attempts timed out ...
  CHECK(l.status().resolves_total == 1);        // ... sharing one lookup
  INFO(l.status().last_error);
  CHECK(l.status().last_error.find("resolving localhost") != std::string::npos);
  CHECK(l.status().last_error.find("timed out after 100 ms") != std::string::npos);

  {
    std::lock_guard<std::mutex> lk(block.m);
    block.open = true;
  }
  block.cv.notify_all();
  REQUIRE(loop.until([&] { return l.ready(); }, 5000));
  REQUIRE(loop.until([&] { return block.finished == pool; }));
  CHECK(ping(loop, l) == "PONG");
  close_link(loop, l);
}

TEST_CASE("a lost connection fails pending commands once, reports down, and reconnects", "[redis][link]") {
  RedisServer redis;
  Loop loop;
  Link l(loop, ep_of(redis.unix_url()), fast());
  std::vector<std::string> downs;
  int ups = 0;
  l.on_up([&] { ups++; });
  l.on_down([&](const std::string& why) { downs.push_back(why); });
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
  CHECK(l.generation() == 1);

  // Commands the server will never answer: BLPOP blocks, then the server dies.
  int calls = 0, failed = 0;
  bool ready_in_callback = true;
  for (int i = 0; i < 5; ++i)
    REQUIRE(l.command({"BLPOP", "nothing", "0"}, [&](const nearcache::redis::Reply& r) {
      calls++;
      failed += r.failed();
      ready_in_callback = ready_in_callback && l.ready();
    }));
  loop.run_for(50);
  redis.kill();
  REQUIRE(loop.until([&] { return downs.size() == 1; }));
  CHECK(calls == 5);
  CHECK(failed == 5);
  CHECK_FALSE(ready_in_callback);  // callers see the link down while told of the failure
  CHECK(downs[0].find("connection lost") != std::string::npos);
  CHECK(l.status().state == LinkState::backoff);

  redis.start();
  REQUIRE(loop.until([&] { return l.ready(); }, 5000));
  CHECK(ups == 2);
  CHECK(l.generation() == 2);
  CHECK(ping(loop, l) == "PONG");
  loop.run_for(20);
  CHECK(calls == 5);  // never called again
  close_link(loop, l);
}

TEST_CASE("closing a link fails its pending commands exactly once", "[redis][link]") {
  RedisServer redis;
  Loop loop;
  Link l(loop, ep_of(redis.unix_url()), fast());
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
  redis.pause();
  std::vector<int> calls(50);
  for (int i = 0; i < 50; ++i)
    REQUIRE(l.command({"GET", "k"}, [&, i](const nearcache::redis::Reply& r) {
      calls[i]++;
      CHECK(r.failed());
    }));
  close_link(loop, l);
  for (int c : calls) CHECK(c == 1);
  redis.resume();
}

TEST_CASE("reconnect delays double from the minimum to the maximum, shortened by the jitter", "[redis][link]") {
  CHECK(backoff_delay(0, 100, 10000, 0, 0.9) == 100);
  CHECK(backoff_delay(1, 100, 10000, 0, 0.9) == 200);
  CHECK(backoff_delay(6, 100, 10000, 0, 0.9) == 6400);
  CHECK(backoff_delay(7, 100, 10000, 0, 0.9) == 10000);
  CHECK(backoff_delay(500, 100, 10000, 0, 0.9) == 10000);  // no overflow
  CHECK(backoff_delay(3, 100, 10000, 50, 0.0) == 800);
  CHECK(backoff_delay(3, 100, 10000, 50, 0.5) == 600);
  CHECK(backoff_delay(3, 100, 10000, 50, 0.999) == 401);
  CHECK(backoff_delay(0, 1, 10, 100, 0.999) == 1);  // never 0
  // A failing link really waits: over ~300 ms with 20-40 ms delays, a handful of attempts, not hundreds.
  Loop loop;
  LinkOptions o = fast(1000);
  o.reconnect_min_ms = 20;
  o.reconnect_max_ms = 40;
  Link l(loop, ep_of("unix:///nonexistent/redis.sock"), o);
  l.start();
  loop.run_for(300);
  CHECK(l.status().failures_total >= 5);
  CHECK(l.status().failures_total <= 20);
  CHECK(l.status().last_error.find("No such file") != std::string::npos);
  close_link(loop, l);
}
