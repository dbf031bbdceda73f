// tests/redis/test_slot_map.cc — the slot map from a real one-node cluster's
// CLUSTER SHARDS and CLUSTER SLOTS, redirection errors, and the cluster
// forms of the tier's own keys (each in the slot it belongs to).
#include <catch2/catch.hpp>

#include "harness.h"
#include "redis/replies.h"
#include "redis/slot_map.h"
#include "redis/slots.h"

using namespace nearcache::redis;

TEST_CASE("CLUSTER SHARDS and CLUSTER SLOTS of a real cluster node give the same map", "[redis][cluster]") {
  nctest::RedisServer::Options o;
  o.aof = false;
  o.tcp = true;
  o.extra_args = {"--cluster-enabled", "yes"};
  nctest::RedisServer r(o);
  CHECK(cluster_enabled(r.cmdv({"INFO", "cluster"}).str()));
  REQUIRE(r.cmdv({"CLUSTER", "ADDSLOTSRANGE", "0", "9999"})->type == REDIS_REPLY_STATUS);
  SlotMap shards, slots;
  std::string err;
  // The node learns its slots at once; its own address may take a moment (cluster cron).
  for (int i = 0; i < 200; ++i) {
    REQUIRE(parse_cluster_shards(r.cmdv({"CLUSTER", "SHARDS"}).get(), "127.0.0.1", false, &shards, &err));
    if (shards.covered() == 10000) break;
    usleep(10000);
  }
  REQUIRE(parse_cluster_slots(r.cmdv({"CLUSTER", "SLOTS"}).get(), "127.0.0.1", &slots, &err));
  for (const SlotMap* m : {&shards, &slots}) {
    REQUIRE(m->masters.size() == 1);
    CHECK(m->masters[0] == HostPort{"127.0.0.1", uint16_t(r.port)});
    CHECK(m->covered() == 10000);
    CHECK(m->owner[0] == 0);
    CHECK(m->owner[9999] == 0);
    CHECK(m->owner[10000] == -1);
  }
  CHECK(!parse_cluster_shards(r.cmdv({"PING"}).get(), "127.0.0.1", false, &shards, &err));
}

// A node with tls-cluster reports both ports; a TLS client must use tls-port
// (the plain port would hang its handshake), a plain client the port.
TEST_CASE("CLUSTER SHARDS names the TLS port to a TLS client and the plain port otherwise", "[redis][cluster]") {
  auto shards = [](const std::string& port, const std::string& tls_port) {
    const std::string node = "*10\r\n$2\r\nid\r\n$1\r\nx\r\n$4\r\nport\r\n:" + port +
                             "\r\n$8\r\ntls-port\r\n:" + tls_port +
                             "\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
                             "$6\r\nhealth\r\n$6\r\nonline\r\n";
    return "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n" + node;
  };
  struct Case {
    std::string port, tls_port;
    bool tls;
    uint16_t want;
  };
  for (const Case& c : {Case{"7000", "7100", true, 7100}, Case{"7000", "7100", false, 7000},
                        Case{"0", "7100", true, 7100}, Case{"0", "7100", false, 7100},
                        Case{"7000", "0", true, 7000}}) {
    ReplyParser p(1 << 20);
    std::string err;
    const std::string text = shards(c.port, c.tls_port);
    REQUIRE(p.feed(text.data(), text.size(), &err));
    redisReply* r = nullptr;
    REQUIRE(p.next(&r, &err));
    REQUIRE(r);
    SlotMap m;
    INFO(c.port << " " << c.tls_port << " tls " << c.tls);
    CHECK(parse_cluster_shards(r, "127.0.0.1", c.tls, &m, &err));
    freeReplyObject(r);
    REQUIRE(m.masters.size() == 1);
    CHECK(m.masters[0] == HostPort{"127.0.0.1", c.want});
    CHECK(m.covered() == 16384);
  }
}

TEST_CASE("redirection errors are parsed", "[redis][cluster]") {
  Redirect m = parse_redirect("MOVED 3999 127.0.0.1:6381");
  CHECK(m.kind == Redirect::moved);
  CHECK(m.slot == 3999);
  CHECK(m.to == HostPort{"127.0.0.1", 6381});
  Redirect a = parse_redirect("ASK 16383 [::1]:7000");
  CHECK(a.kind == Redirect::ask);
  CHECK(a.to == HostPort{"::1", 7000});
  CHECK(parse_redirect("TRYAGAIN Multiple keys request during rehashing of slot").kind == Redirect::tryagain);
  CHECK(parse_redirect("CLUSTERDOWN The cluster is down").kind == Redirect::clusterdown);
  CHECK(parse_redirect("MOVED 16384 h:1").kind == Redirect::none);
  CHECK(parse_redirect("MOVED 1 nohostport").kind == Redirect::none);
  CHECK(parse_redirect("ERR wrong number of arguments").kind == Redirect::none);
}

TEST_CASE("the cluster forms of the lease, clear and marker keys are in their slots", "[redis][cluster]") {
  for (const std::string& k : std::vector<std::string>{"nearcache:a", "nearcache:{user1}x", "nearcache:b{}", std::string("p:\0", 3)}) {
    const std::string lk = tagged_lease_key(k);
    CHECK(key_slot(lk) == key_slot(k));
    CHECK(lk.substr(0, 9) == std::string("\0nclease{", 9));
    CHECK(lk.substr(lk.size() - k.size()) == k);
  }
  for (int slot : {0, 77, 16383}) {
    CHECK(key_slot(clear_counter_key("nearcache:", slot)) == uint32_t(slot));
    CHECK(key_slot(flush_marker_key("nearcache:", slot)) == uint32_t(slot));
  }
  // One server keeps the earlier forms.
  CHECK(clear_counter_key("p:") == std::string("\0ncclear\0p:", 11));
  CHECK(flush_marker_key("p:") == std::string("\0ncepoch\0p:", 11));
}
