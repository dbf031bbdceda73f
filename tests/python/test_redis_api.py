"""NearCache's django-redis methods (nearcache.redis_api) against a real daemon:
ttl/pttl/expire/pexpire/expire_at/pexpire_at/persist, set(nx=, xx=), incr_version,
sync and async, with django-redis's documented results."""
from __future__ import annotations

import asyncio
import datetime
import time

import pytest


def test_ttl_seconds_none_for_no_expiry_zero_for_missing(cache):
    cache.set("timed", 1, timeout=60)
    cache.set("forever", 2, timeout=None)
    assert cache.ttl("timed") == 60                # rounded as Redis's TTL
    assert 59_000 < cache.pttl("timed") <= 60_000
    assert cache.ttl("forever") is None and cache.pttl("forever") is None
    assert cache.ttl("missing") == 0 and cache.pttl("missing") == 0
    cache.set("gone", 3, timeout=0)
    assert cache.ttl("gone") == 0


def test_expire_pexpire_and_persist(cache):
    cache.set("k", 1, timeout=None)
    assert cache.expire("k", 100) is True
    assert cache.ttl("k") == 100
    assert cache.pexpire("k", 2500) is True
    assert 2000 < cache.pttl("k") <= 2500
    assert cache.expire("k", datetime.timedelta(minutes=2)) is True
    assert cache.ttl("k") == 120
    assert cache.persist("k") is True
    assert cache.ttl("k") is None
    assert cache.get("k") == 1
    assert cache.expire("missing", 10) is False and cache.persist("missing") is False
    assert cache.expire("k", 0) is True            # as Redis's EXPIRE 0: deleted
    assert cache.get("k") is None


def test_expire_at_and_pexpire_at(cache):
    cache.set("k", 1, timeout=None)
    assert cache.expire_at("k", datetime.datetime.now() + datetime.timedelta(seconds=50)) is True
    assert 48 <= cache.ttl("k") <= 50
    assert cache.pexpire_at("k", int(time.time() * 1000) + 7000) is True
    assert 6000 < cache.pttl("k") <= 7000
    assert cache.expire_at("k", int(time.time()) + 30) is True
    assert 28 <= cache.ttl("k") <= 30
    assert cache.expire_at("k", int(time.time()) - 1) is True   # in the past: deleted
    assert cache.get("k") is None


def test_expiry_set_by_expire_is_served_from_shared_memory_too(cache):
    cache.set("k", "v", timeout=None)
    cache.pexpire("k", 300)
    assert cache.get("k") == "v"
    deadline = time.monotonic() + 10
    while cache.get("k") is not None:
        assert time.monotonic() < deadline, "the key did not expire"
        time.sleep(0.05)
    assert cache.ttl("k") == 0


def test_set_nx_xx_return_whether_they_stored(cache):
    assert cache.set("k", 1, xx=True) is False
    assert cache.get("k") is None
    assert cache.set("k", 1, nx=True) is True
    assert cache.set("k", 2, nx=True) is False
    assert cache.get("k") == 1
    assert cache.set("k", 3, timeout=40, xx=True) is True
    assert cache.get("k") == 3 and cache.ttl("k") == 40
    assert cache.set("k", 4) is True
    with pytest.raises(ValueError):
        cache.set("k", 5, nx=True, xx=True)


def test_incr_version_keeps_the_remaining_ttl(cache):
    cache.set("k", {"a": 1}, timeout=50, version=1)
    cache.set("p", "forever", timeout=None, version=1)
    assert cache.incr_version("k", version=1) == 2
    assert cache.get("k", version=1) is None
    assert cache.get("k", version=2) == {"a": 1}
    assert 49 <= cache.ttl("k", version=2) <= 50
    assert cache.incr_version("p", version=1) == 2
    assert cache.ttl("p", version=2) is None
    assert cache.decr_version("k", version=2) == 1
    assert 48 <= cache.ttl("k", version=1) <= 50
    with pytest.raises(ValueError):
        cache.incr_version("missing")


def test_the_async_methods(cache):
    async def main():
        await cache.aset("k", 1, timeout=None)
        assert await cache.attl("k") is None
        assert await cache.aexpire("k", 30) is True
        assert await cache.attl("k") == 30
        assert await cache.apexpire("k", 9000) is True
        assert 8000 < await cache.apttl("k") <= 9000
        assert await cache.aexpire_at("k", int(time.time()) + 20) is True
        assert 18 <= await cache.attl("k") <= 20
        assert await cache.apexpire_at("k", int(time.time() * 1000) + 5000) is True
        assert 4000 < await cache.apttl("k") <= 5000
        assert await cache.apersist("k") is True
        assert await cache.attl("k") is None
        assert await cache.aset("k", 2, xx=True) is True
        assert await cache.aset("n", 2, xx=True) is False
        assert await cache.aset("k", 3, nx=True) is False
        await cache.aset("v", "x", timeout=70, version=1)
        assert await cache.aincr_version("v", version=1) == 2
        assert await cache.aget("v", version=2) == "x"
        assert 69 <= await cache.attl("v", version=2) <= 70
        assert await cache.attl("missing") == 0

    asyncio.run(main())


def test_an_unreachable_daemon_is_an_empty_cache(tmp_path, make_cache):
    c = make_cache(str(tmp_path / "none.sock"), SOCKET_TIMEOUT=0.2)
    assert c.ttl("k") == 0 and c.pttl("k") == 0
    assert c.expire("k", 5) is False and c.persist("k") is False
    assert c.set("k", 1, xx=True) is False


def test_keys_iter_keys_and_delete_pattern_apply_prefix_and_version(module_daemon, make_cache):
    c = make_cache(module_daemon, params={"KEY_PREFIX": "site*1", "VERSION": 3}, STRICT=True)
    other = make_cache(module_daemon, params={"KEY_PREFIX": "site*12"}, STRICT=True)
    c.clear()
    for i in range(30):
        c.set(f"user:{i}", i)
        c.set(f"item:{i}", i)
    c.set("user:old", 0, version=2)
    other.set("user:x", 1)
    assert sorted(c.keys("user:*")) == sorted(f"user:{i}" for i in range(30))
    assert sorted(c.keys("user:?")) == sorted(f"user:{i}" for i in range(10))
    assert c.keys("user:old") == [] and c.keys("user:old", version=2) == ["user:old"]
    assert sorted(c.iter_keys("item:2*", itersize=3)) == ["item:2", *(f"item:2{i}" for i in range(10))]
    it = c.iter_keys("*", itersize=5)
    assert len([next(it) for _ in range(7)]) == 7
    it.close()  # abandoned early: the daemon's scan is ended
    assert len(c.keys("*")) == 60
    assert other.keys("*") == ["user:x"]          # "site*1"'s glob bytes match only themselves
    assert c.delete_pattern("user:1*") == 11
    assert c.get("user:15") is None and c.get("user:25") == 25 and c.get("item:15") == 15
    assert c.delete_pattern("*", itersize=100) == 49
    assert c.keys("*") == [] and other.get("user:x") == 1 and c.get("user:old", version=2) == 0


def _key_func(key, prefix, version):
    return f"{version}|{prefix}|{key}"


def test_keys_are_reversed_by_reverse_key_function(module_daemon, make_cache):
    # django-redis's pair: a custom KEY_FUNCTION and its REVERSE_KEY_FUNCTION
    # (a callable here, a dotted path below).
    params = {"KEY_PREFIX": "rk", "KEY_FUNCTION": _key_func}
    c = make_cache(module_daemon, params=params, STRICT=True, REVERSE_KEY_FUNCTION=lambda k: k.split("|", 2)[2])
    for i in range(3):
        c.set(f"r:{i}", i)
    assert sorted(c.keys("r:*")) == ["r:0", "r:1", "r:2"]
    d = make_cache(module_daemon, params=params, STRICT=True,
                   REVERSE_KEY_FUNCTION="test_redis_api._reverse_key_func")
    assert sorted(d.iter_keys("r:?")) == ["r:0", "r:1", "r:2"]
    assert c.delete_pattern("r:*") == 3


def _reverse_key_func(key: str) -> str:
    return key.split("|", 2)[2]


def test_async_keys_and_delete_pattern(cache):
    async def main():
        for i in range(12):
            await cache.aset(f"k{i}", i)
        assert sorted(await cache.akeys("k1*")) == ["k1", "k10", "k11"]
        assert sorted([k async for k in cache.aiter_keys("k?", itersize=2)]) == [f"k{i}" for i in range(10)]
        assert await cache.adelete_pattern("k1*") == 3
        assert len(await cache.akeys("*")) == 9

    asyncio.run(main())
