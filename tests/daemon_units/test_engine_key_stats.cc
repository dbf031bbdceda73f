// tests/daemon_units/test_engine_key_stats.cc — the engine's key_stats fed by a
// real hit region: ring entries mapped back to keys, weighted to the region's
// hit counter also when its ring overflowed between two reads, and the
// daemon's own lookups.
#include <catch2/catch.hpp>
#include <map>

#include "engine_harness.h"
#include "hits.h"
#include "reader.h"

using namespace nctest_daemon;

namespace {

constexpr uint32_t op(Op o) { return uint32_t(o); }
const msgpack::type::nil_t nil;

const msgpack::object* field(const msgpack::object& m, const std::string& k) {
  for (uint32_t i = 0; i < m.via.map.size; ++i)
    if (bytes(m.via.map.ptr[i].key) == k) return &m.via.map.ptr[i].val;
  return nullptr;
}

}  // namespace

TEST_CASE("shared-memory hits reach key_stats through the hit ring, weighted to the counter") {
  Harness h;
  Session* s = h.connect();
  for (const char* k : {"hot:1", "warm:1", "cold:1"})
    REQUIRE(code_of(h.call(s, op(Op::set), Bin{k}, Bin{"v"}, nil)) == int(Code::ok));

  std::string why;
  auto region = nearcache::shm::HitRegion::create(&why);
  REQUIRE(region);
  h.engine->set_fd_source([&](Session*) { return dup(region->fd()); });
  REQUIRE(code_of(h.call(s, op(Op::hits))) == int(Code::ok));

  nearcache::shm::Reader r;
  REQUIRE(r.open(h.dir + "/seg", &why) == 0);
  r.attach_hits(region.get());
  char buf[64];
  // 3 × kHitRing hits before the daemon reads the ring: it holds the newest
  // kHitRing, all of hot:1; the counter says how many there were.
  const uint64_t n = 3 * nearcache::shm::kHitRing;
  for (uint64_t i = 0; i < n; ++i) REQUIRE(r.get("hot:1", 5, buf, sizeof buf).status == nearcache::shm::ReadStatus::hit);
  h.engine->poll_hits(64);
  for (int i = 0; i < 5; ++i) REQUIRE(r.get("warm:1", 6, buf, sizeof buf).status == nearcache::shm::ReadStatus::hit);
  h.engine->poll_hits(64);
  h.call(s, op(Op::get), Bin{"warm:1"});  // the daemon's own: a hit, and a miss
  h.call(s, op(Op::get), Bin{"warm:2"});

  auto st = h.call(s, op(Op::status));
  const msgpack::object* ks = field(arg(st, 2), "key_stats");
  REQUIRE(ks);
  std::map<std::string, uint64_t> hot;
  const msgpack::object* keys = field(*ks, "hot_keys");
  for (uint32_t i = 0; i < keys->via.array.size; ++i)
    hot[bytes(keys->via.array.ptr[i].via.array.ptr[0])] = keys->via.array.ptr[i].via.array.ptr[1].via.u64;
  CHECK(hot == std::map<std::string, uint64_t>{{"hot:1", n}, {"warm:1", 6}});
  const msgpack::object* pre = field(*ks, "prefixes");
  REQUIRE(pre->via.array.size == 2);
  const msgpack::object* p0 = pre->via.array.ptr[0].via.array.ptr;
  const msgpack::object* p1 = pre->via.array.ptr[1].via.array.ptr;
  CHECK((bytes(p0[0]) == "hot:" && p0[1].via.u64 == n && p0[2].via.u64 == 0));
  CHECK((bytes(p1[0]) == "warm:" && p1[1].via.u64 == 6 && p1[2].via.u64 == 1));
  CHECK(field(arg(st, 2), "shm_hits_total")->via.u64 == n + 5);
  r.close();
}
