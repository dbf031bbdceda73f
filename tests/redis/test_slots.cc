// tests/redis/test_slots.cc — CRC16 and key slots against Redis Cluster's own
// answers (a cluster-enabled redis-server's CLUSTER KEYSLOT), the per-slot
// counter tags, INFO replication parsing and the repair's comparison.
#include <catch2/catch.hpp>

#include "harness.h"
#include "redis/repair.h"
#include "redis/slots.h"

using namespace nearcache::redis;

TEST_CASE("CRC16-XMODEM has the reference check value", "[redis][slots]") {
  CHECK(crc16("123456789") == 0x31C3);
  CHECK(crc16("") == 0);
}

TEST_CASE("key slots and hash tags match CLUSTER KEYSLOT of a real redis-server", "[redis][slots]") {
  nctest::RedisServer::Options o;
  o.aof = false;
  o.extra_args = {"--cluster-enabled", "yes"};
  nctest::RedisServer r(o);
  std::vector<std::string> keys = {"somekey", "foo{hash_tag}", "bar{hash_tag}", "foo", "{}x", "a{b}c", "a{{b}}c",
                                   "{user1000}.following", "nearcache:k", "x}{y", "{", "}", "", std::string("\0{\xff}", 4)};
  for (uint32_t s : {0u, 1u, 5000u, 16383u}) keys.push_back(slot_counter_key("nearcache:", s));
  keys.push_back(clear_counter_key("nearcache:"));
  for (const std::string& k : keys) {
    nctest::Reply rep = r.cmdv({"CLUSTER", "KEYSLOT", k});
    INFO("key of " << k.size() << " bytes: " << k);
    REQUIRE(rep->type == REDIS_REPLY_INTEGER);
    CHECK(key_slot(k) == uint32_t(rep.integer()));
  }
  CHECK(key_slot("somekey") == 11058);
  CHECK(key_slot("foo{hash_tag}") == 2515);
}

TEST_CASE("every slot has a counter key whose hash tag puts it in that slot", "[redis][slots]") {
  const auto& tags = slot_tags();
  REQUIRE(tags.size() == kSlots);
  for (uint32_t s = 0; s < kSlots; ++s) {
    REQUIRE(!tags[s].empty());
    REQUIRE(tags[s].size() <= 4);
    REQUIRE(key_slot(slot_counter_key("p{x}:", s)) == s);  // a prefix with braces does not move it
  }
  CHECK(slot_counter_key("p:", 3)[0] == '\0');  // outside every value prefix
}

TEST_CASE("INFO replication is parsed", "[redis][slots]") {
  ReplPos p;
  REQUIRE(parse_replication("# Replication\r\nrole:master\r\nmaster_replid:abc\r\nmaster_replid2:def\r\n"
                            "master_repl_offset:1234\r\nsecond_repl_offset:99\r\n",
                            &p));
  CHECK(p.replid == "abc");
  CHECK(p.replid2 == "def");
  CHECK(p.offset == 1234);
  CHECK(p.offset2 == 99);
  CHECK_FALSE(parse_replication("role:master\r\n", &p));
  REQUIRE(parse_replication("master_replid:abc\r\nmaster_replid2:0000\r\nmaster_repl_offset:0\r\nsecond_repl_offset:-1\r\n", &p));
  CHECK(p.offset2 == -1);
}

namespace {
Snapshot snap(const std::string& id, int64_t off) {
  Snapshot s;
  s.repl.replid = id;
  s.repl.offset = off;
  s.slots.assign(kSlots, 7);
  s.clears = -1;
  s.marker = "epoch";
  return s;
}
}  // namespace

TEST_CASE("the repair drops only slots whose counters moved, when Redis provably holds the snapshot",
          "[redis][slots]") {
  std::vector<bool> drop;
  size_t n = 0;
  std::string why;
  const Snapshot before = snap("A", 100);

  SECTION("nothing moved") {
    Snapshot after = snap("A", 150);
    CHECK(compare(&before, after, &drop, &n, &why) == Verdict::nothing);
    CHECK(n == 0);
  }
  SECTION("moved, missing (evicted) and reset counters are dropped, the rest kept") {
    Snapshot after = snap("A", 150);
    after.slots[10] = 8;
    after.slots[20] = -1;
    after.slots[30] = 0;
    Snapshot b2 = before;
    b2.slots[40] = -1;  // never written before: unknown
    REQUIRE(compare(&b2, after, &drop, &n, &why) == Verdict::slots);
    CHECK(n == 4);
    CHECK((drop[10] && drop[20] && drop[30] && drop[40]));
    CHECK_FALSE(drop[11]);
  }
  SECTION("no snapshot, a new replication id (restart), an offset behind it") {
    CHECK(compare(nullptr, snap("A", 150), &drop, &n, &why) == Verdict::all);
    CHECK(compare(&before, snap("B", 150), &drop, &n, &why) == Verdict::all);
    CHECK(compare(&before, snap("A", 99), &drop, &n, &why) == Verdict::all);
  }
  SECTION("a promoted replica: provable only when its old-id history covers the snapshot") {
    Snapshot after = snap("B", 500);
    after.repl.replid2 = "A";
    after.repl.offset2 = 101;  // held offsets 0..100
    CHECK(compare(&before, after, &drop, &n, &why) == Verdict::nothing);
    after.repl.offset2 = 100;  // lost the snapshot's last write
    CHECK(compare(&before, after, &drop, &n, &why) == Verdict::all);
  }
  SECTION("a restarted or failed-over Redis that still holds the snapshot's proof key compares by slot") {
    Snapshot b2 = before;
    b2.proof = "proof:1";
    Snapshot after = snap("B", 0);  // a new replication id: nothing provable by it
    after.slots[10] = 8;
    CHECK(compare(&b2, after, &drop, &n, &why) == Verdict::all);  // the proof not looked up
    after.proof_checked = "proof:1";
    CHECK(compare(&b2, after, &drop, &n, &why) == Verdict::all);  // looked up, absent (lost, evicted)
    after.holds = true;
    REQUIRE(compare(&b2, after, &drop, &n, &why) == Verdict::slots);
    CHECK((n == 1 && drop[10]));
    after.proof_checked = "proof:0";  // another snapshot's proof proves nothing of this one
    CHECK(compare(&b2, after, &drop, &n, &why) == Verdict::all);
  }
  SECTION("a flushed database or a CLEAR drops everything") {
    Snapshot after = snap("A", 150);
    after.marker = "other";
    CHECK(compare(&before, after, &drop, &n, &why) == Verdict::all);
    after = snap("A", 150);
    after.clears = 1;
    CHECK(compare(&before, after, &drop, &n, &why) == Verdict::all);
  }
  SECTION("every counter missing: all") {
    Snapshot after = snap("A", 150);
    after.slots.assign(kSlots, -1);
    CHECK(compare(&before, after, &drop, &n, &why) == Verdict::all);
  }
}
