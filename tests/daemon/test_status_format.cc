// tests/daemon/test_status_format.cc — text, JSON and Prometheus renderings of STATUS.
#include <catch2/catch.hpp>
#include <sstream>

#include "engine_harness.h"
#include "status_format.h"

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

TEST_CASE("JSON rendering escapes bytes and keeps numbers exact") {
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
  CHECK(to_json(h.get()) == "{\"big\": 18446744073709551615, \"neg\": -5, \"s\": \"a\\\"b\\\\c\\n\\u0001\\u00ff\", \"list\": [0.5]}");
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
