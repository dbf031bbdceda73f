"""Values over value_limit with a Redis tier (doc/redis.md, "Large values"):
stored in Redis only, served from there, never installed in any host's
table; bounded by redis_relay_max_bytes; redis_large_values = false and no
Redis tier refuse them as VALUE_TOO_LARGE.

Two real nearcached on one real redis-server are two hosts.
"""
from __future__ import annotations

import asyncio
import logging
import os

from support.nearcached import Daemon
from support.rawproto import (ADD, GET, GET_MANY, HAS_KEY, HELLO, NOT_FOUND, OK, SET, SET_MANY, VALUE_TOO_LARGE,
                              RawConn)
from support.tier import client, shm, status, wait_flushed, wait_for

KIB = 1 << 10
LIMITS = dict(value_limit="64K", redis_relay_max_bytes="1M")


def binval(n: int) -> bytes:
    """n bytes that are one msgpack bin (stored in Redis as they are), incompressible."""
    body = os.urandom(n - 5)
    return b"\xc6" + len(body).to_bytes(4, "big") + body


def hello(d) -> dict:
    with RawConn(d.socket) as c:
        r = c.call(HELLO, 2)
        assert r[1] == OK
        return r[2]


def test_a_large_value_lives_in_redis_only_and_every_host_serves_it(host, redis_server):
    a, b = host("a", **LIMITS), host("b", **LIMITS)
    big, old = binval(200 * KIB), binval(100)
    ca, cb = client(a), client(b)
    with RawConn(a.socket) as ra, RawConn(b.socket) as rb:
        # An older, small value, installed on both hosts.
        assert ra.call(SET, b"k", old, None)[1] == OK
        wait_flushed(a)
        assert rb.call(GET, b"k")[1:3] == [OK, old]
        assert shm(ca, b"k") == old and shm(cb, b"k") == old
        # b remembers that Redis has no "fresh" (a negative entry).
        assert rb.call(GET, b"fresh")[1] == NOT_FOUND

        assert ra.call(SET, b"k", big, None)[1] == OK
        assert ra.call(SET, b"fresh", big, 60000)[1] == OK  # ms
        assert shm(ca, b"k") is None  # a's old copy went at once
        assert ra.call(GET, b"k")[1:3] == [OK, big]  # read-your-writes (queue or Redis)
        wait_flushed(a)
        r = redis_server.client()
        assert r.get("nearcache:k") == big and 0 < r.pttl("nearcache:fresh") <= 60000
        # b dropped its old copy and its negative entry (invalidations) and reads Redis.
        wait_for(lambda: shm(cb, b"k") is None, 10, "b to drop its old copy")
        before = status(b)
        for _ in range(3):
            assert rb.call(GET, b"k")[1:3] == [OK, big]
        assert rb.call(GET, b"fresh")[1:3] == [OK, big]
        assert rb.call(HAS_KEY, b"k")[1] == OK
        assert rb.call(GET_MANY, [b"k", b"none"])[1:3] == [OK, [[big, 0], None]]
        # Never installed: each read asked Redis, nothing is in either table.
        assert shm(ca, b"k") is None and shm(cb, b"k") is None and shm(cb, b"fresh") is None
        after = status(b)
        assert after["redis_readthrough_large_total"] - before["redis_readthrough_large_total"] == 6
        assert after["redis_readthrough_hits_total"] - before["redis_readthrough_hits_total"] == 6
        assert status(a)["sets_redis_only_total"] == 2
        # The Python client reads it through the socket (a segment miss).
        assert cb.get(b"k") == big

        # SET_MANY: the small value in the table, the large one in Redis only.
        small = binval(50)
        assert ra.call(SET_MANY, [[b"m1", small, 0], [b"m2", big, 0]], None)[1:3] == [OK, []]
        assert shm(ca, b"m1") == small and shm(ca, b"m2") is None
        wait_flushed(a)
        assert rb.call(GET, b"m2")[1:3] == [OK, big]
        assert status(a)["sets_redis_only_total"] == 3

        # A smaller value afterwards is local again.
        assert ra.call(SET, b"k", old, None)[1] == OK
        assert shm(ca, b"k") == old
        wait_flushed(a)
        assert rb.call(GET, b"k")[1:3] == [OK, old]
    ca.close(), cb.close()


def test_the_relay_bound_caps_sets_and_reads_and_hello_reports_it(host, redis_server):
    a = host("a", **LIMITS)
    h = hello(a)
    assert h["value_limit"] == 64 * KIB and h["set_value_limit"] == 1 << 20
    assert status(a)["config"]["redis_large_values"] is True
    # The automatic frame limit lets a SET of the largest value through.
    assert h["max_frame_bytes"] == (4 << 20) + 1024 + (1 << 20)
    with RawConn(a.socket) as c:
        assert c.call(SET, b"edge", binval(1 << 20), None)[1] == OK
        over = c.call(SET, b"over", binval((1 << 20) + 1), None)
        assert over[1] == VALUE_TOO_LARGE and "limit 1048576" in over[2]
        assert c.call(SET_MANY, [[b"over", binval((1 << 20) + 1), 0]], None)[1:3] == [OK, [b"over"]]
        # ADD keeps value_limit (Redis decides it; the table would have to hold it).
        assert c.call(ADD, b"added", binval(100 * KIB), None)[1] == VALUE_TOO_LARGE
        # A value over the bound in Redis is refused before it is read.
        redis_server.client().set("nearcache:huge", binval(2 << 20))
        assert c.call(GET, b"huge")[1] == NOT_FOUND
        edge = c.call(GET, b"edge")
        assert edge[1] == OK and len(edge[2]) == 1 << 20
    st = status(a)
    assert st["redis_readthrough_oversize_total"] == 1
    assert "over the 1048576 this daemon relays (redis_relay_max_bytes)" in a.log()


def test_redis_large_values_false_refuses_them_as_before(host, redis_server):
    a = host("a", redis_large_values="false", **LIMITS)
    h = hello(a)
    assert h["set_value_limit"] == h["value_limit"] == 64 * KIB
    assert h["max_frame_bytes"] == (4 << 20) + 1024 + 64 * KIB
    assert status(a)["config"]["redis_large_values"] is False
    with RawConn(a.socket) as c:
        r = c.call(SET, b"k", binval(100 * KIB), None)
        assert r[1] == VALUE_TOO_LARGE and "limit 65536" in r[2]
        redis_server.client().set("nearcache:planted", binval(100 * KIB))
        assert c.call(GET, b"planted")[1] == NOT_FOUND
    st = status(a)
    assert st["redis_readthrough_oversize_total"] == 1 and st["sets_redis_only_total"] == 0


def test_without_a_redis_tier_a_large_value_is_refused(tmp_path):
    d = Daemon(tmp_path, name="solo", **LIMITS)
    try:
        h = hello(d)
        assert h["set_value_limit"] == h["value_limit"] == 64 * KIB
        assert h["max_frame_bytes"] == (4 << 20) + 1024 + 64 * KIB
        with RawConn(d.socket) as c:
            assert c.call(SET, b"k", binval(100 * KIB), None)[1] == VALUE_TOO_LARGE
    finally:
        assert d.stop() == 0, d.log()


def django_cache(d):
    from django.conf import settings

    if not settings.configured:
        settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
    from nearcache.django import NearCache

    return NearCache(d.socket, {"OPTIONS": {}})


def test_the_django_backend_stores_a_large_value_in_redis_and_warns_without_a_tier(host, tmp_path, caplog):
    a, b = host("a", **LIMITS), host("b", **LIMITS)
    da, db = django_cache(a), django_cache(b)
    value = os.urandom(300 * KIB)  # bytes: not compressed, well over value_limit
    da.set("page", value, 60)
    da.set_many({"p1": value, "p2": "small"})
    asyncio.run(da.aset("apage", value))
    wait_flushed(a)
    assert db.get("page") == value and db.get("p1") == value and db.get("p2") == "small"
    assert asyncio.run(db.aget("apage")) == value
    assert da.get("page") == value
    assert db.get_many(["page", "p2"]) == {"page": value, "p2": "small"}
    # Over the relay bound: not stored, a warning naming the key.
    caplog.set_level(logging.WARNING, "nearcache")
    da.set("huge", os.urandom(2 << 20))
    assert da.get("huge") is None
    assert any("huge" in r.getMessage() and "VALUE_TOO_LARGE" in r.getMessage() for r in caplog.records)

    solo = Daemon(tmp_path, name="solo", **LIMITS)
    try:
        ds = django_cache(solo)
        assert ds._client.ping()  # HELLO: the client knows the limits and refuses before sending
        caplog.clear()
        ds.set("alone", value)
        assert ds.get("alone") is None
        msgs = [r.getMessage() for r in caplog.records]
        assert any("alone" in m and "value_limit of 65536" in m for m in msgs), msgs
    finally:
        assert solo.stop() == 0, solo.log()
