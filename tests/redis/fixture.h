// tests/redis/fixture.h — the tier's parts wired to a RedisServer on a Loop,
// and the fixtures the tests start from (one Redis; two hosts on it).
#pragma once

#include <map>
#include <memory>

#include "harness.h"
#include "redis/atomics.h"
#include "redis/config.h"
#include "redis/link.h"
#include "redis/read_through.h"
#include "redis/scripts.h"
#include "redis/tier.h"
#include "redis/util.h"
#include "redis/value.h"
#include "redis/write_behind.h"

namespace nctest {

inline nearcache::redis::Config test_config(const std::string& url) {
  nearcache::redis::Config c;
  c.url = url;
  c.prefix = "nc:";
  c.connect_timeout_ms = 1000;
  c.command_timeout_ms = 1000;
  c.reconnect_min_ms = 10;
  c.reconnect_max_ms = 50;
  c.heartbeat_ms = 100;
  c.stale_grace_ms = 0;  // today's strictness: the e2e tests cover the repair
  return c;
}

inline nearcache::redis::Endpoint endpoint(const std::string& url) {
  nearcache::redis::Endpoint e;
  std::string err;
  REQUIRE(nearcache::redis::parse_url(url, &e, &err));
  return e;
}

// Link + Scripts + WriteBehind (+ ReadThrough): one host's data path without invalidations.
struct DataPath {
  Loop& loop;
  nearcache::redis::Config cfg;
  std::unique_ptr<nearcache::redis::Link> link;
  std::unique_ptr<nearcache::redis::Scripts> scripts;
  std::unique_ptr<nearcache::redis::WriteBehind> queue;
  std::unique_ptr<nearcache::redis::ReadThrough> reads;
  std::unique_ptr<nearcache::redis::Atomics> atomics;

  DataPath(Loop& l, const nearcache::redis::Config& c) : loop(l), cfg(c) {
    nearcache::redis::LinkOptions o;
    o.name = "data";
    o.connect_timeout_ms = c.connect_timeout_ms;
    o.command_timeout_ms = c.command_timeout_ms;
    o.reconnect_min_ms = c.reconnect_min_ms;
    o.reconnect_max_ms = c.reconnect_max_ms;
    link = std::make_unique<nearcache::redis::Link>(l, endpoint(c.url), o);
    scripts = std::make_unique<nearcache::redis::Scripts>(link.get());
    queue = std::make_unique<nearcache::redis::WriteBehind>(l, link.get(), scripts.get(), c);
    reads = std::make_unique<nearcache::redis::ReadThrough>(link.get(), queue.get(), c);
    atomics = std::make_unique<nearcache::redis::Atomics>(l, link.get(), scripts.get(), queue.get(), c);
  }
  void start() {
    link->start();
    REQUIRE(loop.until([&] { return link->ready(); }));
  }
  ~DataPath() {
    atomics->close();
    int open = 2;
    queue->close([&] { open--; });
    link->close([&] { open--; });
    loop.until([&] { return open == 0; });
  }
};

// A DataPath whose ReadThrough installs into `installed` and is coherent
// while `coherent` holds: what the read-through tests start from.
struct ReadPath : DataPath {
  std::vector<std::pair<std::string, nearcache::redis::Fetched>> installed;
  bool coherent = true;
  ReadPath(Loop& l, const nearcache::redis::Config& c) : DataPath(l, c) {
    reads->set_coherent([this] { return coherent; });
    reads->set_install([this](std::string_view k, const nearcache::redis::Fetched& f) {
      installed.emplace_back(std::string(k), f);
    });
  }
};

// One read-through that Redis answers: the constructor asks (REQUIRE that it
// went to Redis), wait() runs the loop until the answer came.
struct Flight {
  Loop& loop;
  nearcache::redis::Fetched got;
  bool done = false;
  Flight(DataPath& d, std::string_view key) : loop(d.loop) {
    nearcache::redis::Fetched now;
    REQUIRE(d.reads->get(key, &now, [this](const nearcache::redis::Fetched& x) { got = x, done = true; }) ==
            nearcache::redis::Lookup::pending);
  }
  const nearcache::redis::Fetched& wait() {
    REQUIRE(loop.until([&] { return done; }));
    return got;
  }
};

// A read Redis answers, waited for.
inline nearcache::redis::Fetched fetch(DataPath& d, std::string_view key) { return Flight(d, key).wait(); }

// A whole tier with a table stand-in (a map) for its hooks: one "host".
struct Host {
  struct Entry {
    std::string value;
    uint8_t flags;
    uint64_t expiry;
  };
  Loop& loop;
  std::map<std::string, Entry> table;
  std::vector<std::string> dropped;
  std::vector<std::string> flushes;
  int installs = 0;
  std::unique_ptr<nearcache::redis::Tier> tier;
  bool closed = false;

  Host(Loop& l, const nearcache::redis::Config& c) : loop(l) {
    nearcache::redis::TableHooks h;
    h.drop = [this](std::string_view k) {
      dropped.emplace_back(k);
      table.erase(std::string(k));
    };
    h.drop_all = [this](const char* why) {
      flushes.emplace_back(why);
      table.clear();
    };
    h.install = [this](std::string_view k, std::string_view v, uint8_t f, uint64_t e) {
      installs++;
      table[std::string(k)] = {std::string(v), f, e};
    };
    std::string err;
    tier = nearcache::redis::Tier::create(l, c, std::move(h), &err);
    INFO(err);
    REQUIRE(tier);
  }
  void start(bool wait_coherent = true) {
    tier->start();
    if (wait_coherent) REQUIRE(loop.until([&] { return tier->invalidation().coherent(); }));
  }
  // What the daemon does on SET: the table, then the tier.
  nearcache::redis::Enqueued set(const std::string& k, const std::string& v, uint64_t expiry = 0, uint8_t flags = 0) {
    table[k] = {v, flags, expiry};
    return tier->set(k, v, flags, expiry, 0);
  }
  nearcache::redis::Enqueued del(const std::string& k) {
    table.erase(k);
    return tier->del(k);
  }
  void shutdown() {
    if (closed) return;
    bool done = false;
    tier->shutdown([&](uint64_t) { done = true; });
    REQUIRE(loop.until([&] { return done; }, 10000));
    closed = true;
  }
  ~Host() { shutdown(); }
};

inline std::string mp_int(int64_t v) { return nearcache::redis::encode_msgpack_int(v); }

// What nearly every test of the tier starts with: a redis-server, a loop, and
// the test configuration for that server (a test changes cfg before it
// builds its parts). TEST_CASE_METHOD(nctest::OneRedis, ...) gives the body
// `redis`, `loop` and `cfg`.
struct OneRedis {
  RedisServer redis;
  Loop loop;
  nearcache::redis::Config cfg = test_config(redis.unix_url());
};

// Two hosts' parts (Host or DataPath) on one Redis, both started: `a` and `b`.
template <class Part>
struct TwoOnOneRedis : OneRedis {
  Part a{loop, cfg}, b{loop, cfg};
  TwoOnOneRedis() {
    a.start();
    b.start();
  }
};
using TwoHosts = TwoOnOneRedis<Host>;
using TwoDataPaths = TwoOnOneRedis<DataPath>;

}  // namespace nctest
