// tests/daemon_units/test_status_format.cc — text, JSON and Prometheus renderings of STATUS.
#include <catch2/catch.hpp>
#include <sstream>

#include "engine_harness.h"
#include "cli/status_format.h"
#include "cli/value_json.h"

using namespace nctest_daemon;
using nearcache::daemon::Op;

namespace {
msgpack::object_handle status_of(Harness& h, Session* s) { return h.call(s, uint32_t(Op::status)); }
}  // namespace

TEST_CASE("Prometheus exposition: every metric with HELP and TYPE, values from the daemon") {
  Harness h;
  Session* s = h.connect();
  for (int i = 0; i < 3; ++i) h.call(s, uint32_t(Op::set), Bin{"k" + std::to_string(i)}, Bin{"v"}, msgpack::type::nil_t());
  h.call(s, uint32_t(Op::del), Bin{"k0"});
  auto r = status_of(h, s);
  const std::string text = status_prometheus(arg(r, 2));
  std::istringstream in(text);
  std::string line;
  std::map<std::string, std::string> samples;
  std::set<std::string> help, type;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) help.insert(line.substr(7, line.find(' ', 7) - 7));
    else if (line.rfind("# TYPE ", 0) == 0) type.insert(line.substr(7, line.find(' ', 7) - 7));
    else samples[line.substr(0, line.find(' '))] = line.substr(line.find(' ') + 1);
  }
  for (size_t i = 0; i < kMetricCount; ++i) {
    const std::string name = std::string("nearcache_") + metric_table()[i].name;
    INFO(name);
    CHECK(help.count(name));
    CHECK(type.count(name));
    CHECK(samples.count(name));
  }
  CHECK(samples.at("nearcache_up") == "1");
  CHECK(samples.at("nearcache_sets_total") == "3");
  CHECK(samples.at("nearcache_deletes_total") == "1");
  CHECK(samples.at("nearcache_entries") == "2");
  CHECK(text.find("# TYPE nearcache_hits_total counter") != std::string::npos);
  CHECK(text.find("# TYPE nearcache_memory_used_bytes gauge") != std::string::npos);
  CHECK(prometheus_down().find("nearcache_up 0") != std::string::npos);
}

TEST_CASE("JSON rendering keeps text and numbers exact, bytes that are not UTF-8 tagged") {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_map(4);
  pk.pack(std::string("big"));
  pk.pack(uint64_t(18446744073709551615ull));
  pk.pack(std::string("neg"));
  pk.pack(int64_t(-5));
  pk.pack(std::string("s"));
  pk.pack(std::string("a\"b\\c\n\x01\xff"));
  pk.pack(std::string("list"));
  pk.pack(std::vector<double>{0.5});
  auto h = msgpack::unpack(b.data(), b.size());
  CHECK(json_text(value_json(h.get())) ==
        "{\"big\":18446744073709551615,\"neg\":-5,\"s\":{\"$bytes\":\"YSJiXGMKAf8=\"},\"list\":[0.5]}");
}

TEST_CASE("the human summary names what operators look for") {
  Harness h;
  Session* s = h.connect();
  h.call(s, uint32_t(Op::set), Bin{"k"}, Bin{"v"}, msgpack::type::nil_t());
  auto r = status_of(h, s);
  const std::string text = status_text(arg(r, 2));
  for (const char* label : {"nearcached", "pid", "up ", "segment size:", "memory used:", "memory free:", "entries:",
                            "hits:", "hits from shared memory:", "misses:", "hit ratio:", "sets:", "deletes:",
                            "evictions:", "expirations:", "connections:", "leases waiting:", "loop lag max:"}) {
    INFO(label);
    CHECK(text.find(label) != std::string::npos);
  }
  CHECK(text.find("sets:                       1\n") != std::string::npos);
}

TEST_CASE("without Redis, STATUS has no redis metrics and the summary no redis section") {
  Harness h;
  Session* s = h.connect();
  auto r = status_of(h, s);
  const msgpack::object& st = arg(r, 2);
  for (uint32_t i = 0; i < st.via.map.size; ++i) {
    const auto& k = st.via.map.ptr[i].key;
    CHECK(std::string(k.via.str.ptr, k.via.str.size).rfind("redis", 0) != 0);
  }
  CHECK(status_text(st).find("redis:") == std::string::npos);
  CHECK(status_prometheus(st).find("nearcache_redis_") == std::string::npos);
}

TEST_CASE("the redis section: link state, errors, degraded mode and every redis metric") {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_map(uint32_t(kRedisMetricCount + 2));
  pk.pack(std::string("version"));
  pk.pack(std::string("0.1.0"));
  for (size_t i = 0; i < kRedisMetricCount; ++i) {
    pk.pack(std::string(redis_metric_table()[i].name));
    pk.pack(uint64_t(i + 1));
  }
  pk.pack(std::string("redis"));
  pk.pack_map(7);
  pk.pack(std::string("url")), pk.pack(std::string("redis://app:***@cache:6379"));
  pk.pack(std::string("prefix")), pk.pack(std::string("app:"));
  pk.pack(std::string("state")), pk.pack(std::string("reconnecting"));
  pk.pack(std::string("since_unix_ms")), pk.pack(uint64_t(1700000000000ull));
  pk.pack(std::string("last_error")), pk.pack(std::string("AUTH failed: WRONGPASS invalid username-password pair"));
  pk.pack(std::string("coherent")), pk.pack(false);
  pk.pack(std::string("degraded")), pk.pack(true);
  auto h = msgpack::unpack(b.data(), b.size());
  const std::string text = status_text(h.get());
  for (const char* want : {"redis: redis://app:***@cache:6379 (prefix 'app:')", "data link: reconnecting since 2023-11-14",
                           "(not coherent)", "DEGRADED", "last error: AUTH failed: WRONGPASS", "write-behind dropped:",
                           "invalidations received:", "read-through hits:"}) {
    INFO(want);
    CHECK(text.find(want) != std::string::npos);
  }
  const std::string prom = status_prometheus(h.get());
  for (size_t i = 0; i < kRedisMetricCount; ++i) {
    const std::string name = std::string("nearcache_") + redis_metric_table()[i].name;
    INFO(name);
    CHECK(prom.find("# TYPE " + name + " ") != std::string::npos);
    CHECK(prom.find("\n" + name + " " + std::to_string(i + 1) + "\n") != std::string::npos);
  }
}
