// tests/daemon_units/test_leases.cc — lease bookkeeping without sockets.
#include <catch2/catch.hpp>

#include "engine/leases.h"

using nearcache::daemon::Leases;

TEST_CASE("first asker gets the lease, others wait, a value releases everyone") {
  Leases l;
  bool to;
  const uint64_t t = l.acquire("k", 1, 10, 1000, 5000, 0, &to);
  REQUIRE(t != 0);
  CHECK(l.acquire("k", 2, 20, 1000, 5000, 0, &to) == 0);
  CHECK_FALSE(to);
  CHECK(l.acquire("k", 3, 30, 1000, 5000, 0, &to) == 0);
  CHECK(l.waiting() == 2);
  CHECK(l.active() == 1);
  std::vector<Leases::Waiter> ws;
  REQUIRE(l.take_waiters("k", &ws));
  REQUIRE(ws.size() == 2);
  CHECK(ws[0].req == 20);
  CHECK(ws[1].req == 30);
  CHECK(l.empty());
  CHECK(l.waiting() == 0);
  CHECK(l.next_deadline() == UINT64_MAX);
}

TEST_CASE("release hands the lease to the longest waiter, a wrong token changes nothing") {
  Leases l;
  bool to;
  const uint64_t t = l.acquire("k", 1, 10, 1000, 5000, 0, &to);
  l.acquire("k", 2, 20, 1000, 5000, 0, &to);
  l.acquire("k", 3, 30, 1000, 5000, 0, &to);
  std::vector<Leases::Event> ev;
  CHECK_FALSE(l.release("k", t + 12345, 0, &ev));
  CHECK_FALSE(l.release("other", t, 0, &ev));
  CHECK(ev.empty());
  REQUIRE(l.release("k", t, 0, &ev));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].kind == Leases::Event::granted);
  CHECK(ev[0].conn == 2);
  CHECK(ev[0].token != t);
  CHECK(l.waiting() == 1);
}

TEST_CASE("deadlines: lease expiry hands over, waits time out") {
  Leases l;
  bool to;
  l.acquire("k", 1, 10, 100, 5000, 0, &to);       // lease until 100
  l.acquire("k", 2, 20, 1000, 50, 0, &to);        // waits until 50
  l.acquire("k", 3, 30, 1000, 5000, 0, &to);      // waits until 5000
  CHECK(l.next_deadline() == 50);
  std::vector<Leases::Event> ev;
  l.expire(60, &ev);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].kind == Leases::Event::timeout);
  CHECK(ev[0].req == 20);
  ev.clear();
  l.expire(100, &ev);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].kind == Leases::Event::granted);
  CHECK(ev[0].conn == 3);
  CHECK(l.next_deadline() == 1100);  // conn 3's lease
  ev.clear();
  l.expire(2000, &ev);
  CHECK(ev.empty());
  CHECK(l.empty());
  CHECK(l.timeouts_total() == 1);
  CHECK(l.granted_total() == 2);
}

TEST_CASE("wait_ms 0 does not queue") {
  Leases l;
  bool to;
  l.acquire("k", 1, 10, 100, 5000, 0, &to);
  CHECK(l.acquire("k", 2, 20, 100, 0, 0, &to) == 0);
  CHECK(to);
  CHECK(l.waiting() == 0);
}

TEST_CASE("a closed connection's leases pass on and its waits vanish") {
  Leases l;
  bool to;
  l.acquire("a", 1, 10, 1000, 5000, 0, &to);
  l.acquire("b", 2, 11, 1000, 5000, 0, &to);
  l.acquire("a", 2, 20, 1000, 5000, 0, &to);  // 2 waits on a
  l.acquire("b", 1, 21, 1000, 5000, 0, &to);  // 1 waits on b
  l.acquire("a", 3, 30, 1000, 5000, 0, &to);
  std::vector<Leases::Event> ev;
  l.drop_conn(2, 10, &ev);  // holder of b, waiter on a
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].key == "b");
  CHECK(ev[0].conn == 1);
  CHECK(l.waiting() == 1);  // only 3 on a
  ev.clear();
  l.drop_conn(1, 20, &ev);  // holder of a (and now of b)
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].key == "a");
  CHECK(ev[0].conn == 3);
  CHECK(l.active() == 1);
  l.drop_conn(3, 30, &ev);
  CHECK(l.empty());
  CHECK(l.next_deadline() == UINT64_MAX);
}

TEST_CASE("drain hands back every waiter") {
  Leases l;
  bool to;
  l.acquire("a", 1, 10, 1000, 5000, 0, &to);
  l.acquire("a", 2, 20, 1000, 5000, 0, &to);
  l.acquire("b", 3, 30, 1000, 5000, 0, &to);
  l.acquire("b", 4, 40, 1000, 5000, 0, &to);
  std::vector<Leases::Waiter> ws;
  l.drain(&ws);
  CHECK(ws.size() == 2);
  CHECK(l.empty());
  CHECK(l.waiting() == 0);
}

TEST_CASE("a lease held in Redis: recorded, ended by a value, a release, its holder or its deadline") {
  Leases l;
  std::vector<Leases::Event> ev;
  std::vector<Leases::Waiter> ws;
  const uint64_t t1 = l.next_token(), t2 = l.next_token();
  CHECK(t1 != t2);
  REQUIRE(l.hold("a", 1, t1, 1000, 0));
  CHECK_FALSE(l.hold("a", 2, t2, 1000, 0));  // one lease per key here
  CHECK_FALSE(l.local_lease("a"));
  CHECK(l.active() == 1);
  uint64_t redis_token = 0;
  REQUIRE(l.take_waiters("a", &ws, &redis_token));  // a value: release t1 in Redis
  CHECK(redis_token == t1);
  CHECK(ws.empty());

  REQUIRE(l.hold("b", 1, t2, 1000, 0));
  CHECK(l.release("b", t2, 10, &ev));
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].kind == Leases::Event::ended);
  CHECK(ev[0].key == "b");
  CHECK(ev[0].token == t2);
  ev.clear();

  const uint64_t t3 = l.next_token();
  REQUIRE(l.hold("c", 7, t3, 1000, 0));
  l.drop_conn(7, 20, &ev);
  REQUIRE(ev.size() == 1);
  CHECK((ev[0].kind == Leases::Event::ended && ev[0].token == t3));
  ev.clear();

  const uint64_t t4 = l.next_token();
  REQUIRE(l.hold("d", 1, t4, 100, 0));
  CHECK(l.next_deadline() == 100);
  l.expire(100, &ev);
  REQUIRE(ev.size() == 1);
  CHECK((ev[0].kind == Leases::Event::ended && ev[0].token == t4));
  CHECK(l.empty());
}

TEST_CASE("waiters that joined a Redis-held lease while Redis was down get it locally when it ends") {
  Leases l;
  bool to;
  std::vector<Leases::Event> ev;
  const uint64_t t = l.next_token();
  REQUIRE(l.hold("k", 1, t, 1000, 0));
  CHECK(l.acquire("k", 2, 20, 1000, 5000, 0, &to) == 0);  // queued behind it
  CHECK(l.release("k", t, 5, &ev));
  REQUIRE(ev.size() == 2);
  CHECK((ev[0].kind == Leases::Event::ended && ev[0].token == t));
  CHECK((ev[1].kind == Leases::Event::granted && ev[1].conn == 2 && ev[1].req == 20));
  CHECK(l.local_lease("k"));  // decided here now
  uint64_t redis_token = 1;
  std::vector<Leases::Waiter> ws;
  REQUIRE(l.take_waiters("k", &ws, &redis_token));
  CHECK(redis_token == 0);
}

TEST_CASE("drain reports the leases held in Redis") {
  Leases l;
  const uint64_t t = l.next_token();
  REQUIRE(l.hold("k", 1, t, 1000, 0));
  bool to;
  l.acquire("local", 2, 1, 1000, 0, 0, &to);
  std::vector<Leases::Waiter> ws;
  std::vector<std::pair<std::string, uint64_t>> held;
  l.drain(&ws, &held);
  REQUIRE(held.size() == 1);
  CHECK((held[0].first == "k" && held[0].second == t));
  CHECK(l.empty());
}
