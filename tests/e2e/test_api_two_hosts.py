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


def test_scan_patterns_mean_what_redis_s_mean(host, redis_server):
    """The same keys in this host's table and in Redis: SCAN and Redis's KEYS agree on every pattern."""
    from support.rawproto import SCAN

    a = host("a")
    r = redis_server.client()
    keys = [b"u:1", b"u:12", b"u:2x", b"u:*", b"u:?", b"u:[", b"u:]", b"u:\\", b"U:1", b"u:a-b", b"u:", b"v:1"]
    with RawConn(a.socket) as c:
        for k in keys:
            assert c.call(SET, k, mp(1), None)[1] == OK
        wait_flushed(a)
        for pattern in [b"u:*", b"u:?", b"u:1*", b"u:[12]*", b"u:[^1]*", b"u:[a-c]-b", b"u:\\*", b"u:\\?",
                        b"u:[\\]]", b"u:\\\\", b"[uU]:1", b"*", b"u:[*]", b"u:*x", b"u:", b"nothing"]:
            r_keys = sorted(k[len(P):] for k in r.keys(glob_escape(P) + pattern))
            got = c.call(SCAN, 0, pattern, 10000)
            assert got[1] == OK and got[2] == 0
            assert sorted(got[3]) == r_keys, pattern


def glob_escape(b: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in b)


def test_scan_covers_this_host_and_delete_pattern_covers_redis(host, redis_server):
    from support.rawproto import DELETE_PATTERN, SCAN

    a, b = host("a"), host("b")
    r = redis_server.client()
    ca, cb = client(a), client(b)
    for i in range(20):
        ca.set(f"s:{i}", mp(i))
    r.set(P + b"s:only-redis", mp(0))
    wait_flushed(a)
    assert cb.get("s:3") == mp(3)  # b has one of them
    assert sorted(cb.iter_keys("s:*")) == [b"s:3"]               # this host's table only
    assert len(list(ca.iter_keys("s:*"))) == 20
    with RawConn(b.socket) as c:
        assert c.call(DELETE_PATTERN, b"s:1*")[1:] == [OK, 0]   # b had none of them ...
    wait_flushed(b)
    # ... and Redis lost every match, also those only Redis had; a dropped its copies (invalidations).
    assert sorted(k for k in r.keys(P + b"s:*")) == sorted(P + b"s:%d" % i for i in [0, *range(2, 10)]) + \
        [P + b"s:only-redis"]
    wait_for(lambda: ca.get("s:15") is None and ca.get("s:1") is None, 10, "a to drop the deleted keys")
    assert ca.get("s:5") == mp(5)
    assert cb.delete_pattern("s:*") == 1
    wait_flushed(b)
    assert r.keys(P + b"s:*") == []
    with RawConn(a.socket) as c:
        wait_for(lambda: c.call(SCAN, 0, b"s:*", 100)[3] == [], 10, "a's table to lose them")


def test_the_cli_s_ttl_is_redis_s(host, redis_server):
    import subprocess

    from support.nearcached import NEARCACHE_CLI

    a = host("a", redis_local_ttl_max_ms=2000)
    redis_server.client().set(P + b"k", mp(1), px=60_000)
    r = subprocess.run([str(NEARCACHE_CLI), "--socket", a.socket, "ttl", "k"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    n, unit = r.stdout.rstrip("\n").split(" ")
    assert unit == "ms" and 58_000 < int(n) <= 60_000


def test_locks_are_decided_in_redis_across_hosts(host, redis_server):
    from nearcache.lock import LockNotOwnedError

    a, b = host("a"), host("b")
    r = redis_server.client()
    la = client(a).lock("job", timeout=10)
    lb = client(b).lock("job", timeout=10)
    assert la.acquire(blocking=False)
    assert lb.acquire(blocking=False) is False      # the other host sees it held
    assert lb.locked() and not lb.owned()
    key = b"\0nclock\0" + P + b"job"
    assert r.get(key) == la.local.token and 9_000 < r.pttl(key) <= 10_000
    assert r.get(P + b"job") is None                # not a value
    assert la.extend(20)
    assert 29_000 < r.pttl(key) <= 30_000
    la.release()
    assert r.exists(key) == 0
    assert lb.acquire(blocking=False)
    r.set(key, b"someone-else", px=10_000)          # lb's lock expired and another took it
    import pytest
    with pytest.raises(LockNotOwnedError):
        lb.release()
    assert r.get(key) == b"someone-else"            # compare-and-delete: not removed


def test_a_lock_is_never_granted_by_one_host_when_redis_does_not_decide(host, redis_servers):
    import pytest

    from nearcache.protocol import CacheUnavailable
    from support.rawproto import LOCK, LOCK_QUERY, UNLOCK

    late = redis_servers("never", start=False)
    a = host("a", url=late.url, wait=False, redis_down="local", redis_drain_timeout_ms=100)
    with RawConn(a.socket) as c:
        rep = c.call(LOCK, b"job", b"t", 1000)
        assert rep[1] == UNAVAILABLE and "whatever redis_down says" in rep[2]
        assert c.call(UNLOCK, b"job", b"t")[1] == UNAVAILABLE
        assert c.call(LOCK_QUERY, b"job")[1] == UNAVAILABLE
    with pytest.raises(CacheUnavailable):
        client(a, strict=False).lock("job").acquire(blocking=False)
