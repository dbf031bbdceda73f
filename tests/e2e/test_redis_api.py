"""The django-redis API's ops with a Redis tier (two hosts on one Redis): TTL
answered by Redis, EXPIRE/PERSIST (TOUCH) written through, REPLACE (SET XX)
decided in Redis, and what redis_down = error makes of them."""
from __future__ import annotations

from support.rawproto import GET, NOT_FOUND, OK, REPLACE, SET, TOUCH, TTL, UNAVAILABLE, RawConn, mp
from support.tier import client, wait_flushed, wait_for

P = b"nearcache:"


def test_ttl_is_redis_s_not_the_local_copy_s(host, redis_server):
    a = host("a", redis_local_ttl_max_ms=2000)
    r = redis_server.client()
    r.set(P + b"k", mp(1), px=60_000)
    r.set(P + b"forever", mp(2))
    with RawConn(a.socket) as c:
        got = c.call(GET, b"k")
        assert got[1] == OK and got[4] <= 2000          # the local copy: bounded
        ttl = c.call(TTL, b"k")
        assert ttl[1] == OK and 58_000 < ttl[2] <= 60_000  # Redis's
        assert c.call(TTL, b"forever")[1:] == [OK, None]
        assert c.call(TTL, b"absent")[1:] == [NOT_FOUND]
        # A write still queued on this host goes to Redis before the PTTL.
        c.call(SET, b"new", mp(3), 90_000)
        ttl = c.call(TTL, b"new")
        assert ttl[1] == OK and 88_000 < ttl[2] <= 90_000


def test_expire_and_persist_reach_redis_and_the_other_host(host, redis_server):
    a, b = host("a"), host("b")
    ca, cb = client(a), client(b)
    r = redis_server.client()
    ca.set("k", mp(1), ttl=None)
    wait_flushed(a)
    assert cb.get("k") == mp(1)                       # b has its own copy now
    assert ca.expire_ms("k", 30_000) is True          # EXPIRE
    wait_flushed(a)
    assert 28_000 < r.pttl(P + b"k") <= 30_000
    assert 28_000 < cb.pttl("k") <= 30_000
    assert ca.expire_ms("k", None) is True            # PERSIST
    wait_flushed(a)
    assert r.pttl(P + b"k") == -1
    assert cb.pttl("k") == -1
    # A key only Redis has is read through, then expired on both tiers.
    r.set(P + b"only-redis", mp(2))
    assert cb.expire_ms("only-redis", 40_000) is True
    wait_flushed(b)
    assert 38_000 < r.pttl(P + b"only-redis") <= 40_000
    assert ca.expire_ms("k", 0) is True               # in the past: deleted everywhere
    wait_flushed(a)
    assert r.exists(P + b"k") == 0
    wait_for(lambda: cb.get("k") is None, 10, "b to drop the deleted key")


def test_replace_is_decided_in_redis(host, redis_server):
    a, b = host("a"), host("b")
    r = redis_server.client()
    r.set(P + b"there", mp(1))
    with RawConn(b.socket) as c:
        assert c.call(REPLACE, b"there", mp(2), 50_000)[1] == OK   # only Redis had it
        assert c.call(REPLACE, b"absent", mp(2), None)[1] == NOT_FOUND
    assert r.get(P + b"there") == mp(2) and 48_000 < r.pttl(P + b"there") <= 50_000
    assert r.exists(P + b"absent") == 0
    ca = client(a)
    assert ca.get("there") == mp(2)
    assert ca.replace("absent", mp(3)) is False
    assert ca.replace("there", mp(4), ttl=0) is True             # timeout 0: deleted in Redis
    assert r.exists(P + b"there") == 0


def test_redis_down_error_answers_unavailable(host, redis_servers):
    late = redis_servers("never", start=False)
    a = host("a", url=late.url, wait=False, redis_down="error", redis_drain_timeout_ms=100)
    with RawConn(a.socket) as c:
        assert c.call(SET, b"k", mp(1), None)[1] == OK
        assert c.call(TTL, b"k")[1] == UNAVAILABLE
        assert c.call(REPLACE, b"k", mp(2), None)[1] == UNAVAILABLE
        assert c.call(TOUCH, b"k", 5000)[1] == OK   # written behind, like SET


def test_redis_down_local_answers_from_this_host(host, redis_servers):
    late = redis_servers("never", start=False)
    a = host("a", url=late.url, wait=False, redis_down="local", redis_drain_timeout_ms=100)
    with RawConn(a.socket) as c:
        assert c.call(SET, b"k", mp(1), 20_000)[1] == OK
        ttl = c.call(TTL, b"k")
        assert ttl[1] == OK and 18_000 < ttl[2] <= 20_000
        assert c.call(REPLACE, b"k", mp(2), None)[1] == OK
        assert c.call(REPLACE, b"n", mp(2), None)[1] == NOT_FOUND
        assert c.call(TTL, b"k")[1:] == [OK, None]
