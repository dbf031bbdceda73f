"""Moving from django-redis to NearCache (nearcache.migrate.SwitchCache): sessions
and rate-limit counters django-redis holds survive the switch, with their TTLs;
writes during the switch reach both, so switching back loses nothing. Real
redis-server, real django-redis, real nearcached (with and without a Redis
tier on the same Redis)."""
from __future__ import annotations

import shutil

import pytest
from django.test import override_settings

from support.nearcached import Daemon
from support.rawproto import RawConn
from support.redis_server import RedisServer
from support.tier import wait_coherent

GET = 3


@pytest.fixture(params=["local", "redis-tier"])
def env(request, tmp_path):
    r = RedisServer(tmp_path / "redis")
    tier = request.param == "redis-tier"
    d = Daemon(tmp_path / "nc", **({"redis_url": r.url, "redis_prefix": "nc:"} if tier else {}))
    if tier:
        wait_coherent(d)
    caches = {
        "default": {"BACKEND": "nearcache.migrate.SwitchCache", "OPTIONS": {"NEW": "nearcache", "OLD": "redis"}},
        "nearcache": {"BACKEND": "nearcache.django.NearCache", "LOCATION": d.socket, "KEY_PREFIX": "app",
                      "OPTIONS": {"SYNC_WRITES": True}},
        "redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": r.url, "KEY_PREFIX": "app"},
    }
    with override_settings(CACHES=caches, SESSION_ENGINE="django.contrib.sessions.backends.cache",
                           SESSION_CACHE_ALIAS="default"):
        yield d, r
    d.stop()
    r.kill()
    shutil.rmtree(tmp_path, ignore_errors=True)


def nc_ttl_ms(d, key: str):
    with RawConn(d.socket) as c:
        reply = c.call(GET, key.encode())
    return reply[4] if len(reply) > 4 else None


def test_sessions_and_counters_survive_the_switch(env):
    from django.contrib.sessions.backends.cache import SessionStore
    from django.core.cache import caches
    d, _ = env
    old, new, switch = caches["redis"], caches["nearcache"], caches["default"]
    # Before the switch: django-redis holds a session and a rate-limit counter (django-ratelimit: add + incr).
    with override_settings(SESSION_CACHE_ALIAS="redis"):
        s = SessionStore()
        s["user_id"] = 42
        s.save()
        skey = s.session_key
    assert old.add("rl:1.2.3.4", 0, 60) and old.incr("rl:1.2.3.4") == 1 and old.incr("rl:1.2.3.4") == 2
    old.set("forever", {"x": 1}, None)
    assert new.get("rl:1.2.3.4") is None

    # During the switch: the session loads, the counter goes on where it was.
    assert SessionStore(skey).load() == {"user_id": 42}
    assert switch.add("rl:1.2.3.4", 0, 60) is False   # django-ratelimit's add: the window is not restarted
    assert switch.incr("rl:1.2.3.4") == 3
    assert new.get("rl:1.2.3.4") == 3 and old.get("rl:1.2.3.4") == 3  # WRITE_OLD: both count
    assert switch.get("forever") == {"x": 1}
    assert switch.copied >= 2
    # copied with django-redis's remaining TTL (and no expiry where it had none)
    assert 0 < nc_ttl_ms(d, new.make_key("rl:1.2.3.4")) <= 60_000
    assert nc_ttl_ms(d, new.make_key("forever")) is None
    sess_ttl = old.ttl(SessionStore.cache_key_prefix + skey)
    assert 0 < nc_ttl_ms(d, new.make_key(SessionStore.cache_key_prefix + skey)) <= sess_ttl * 1000

    # A session modified during the switch is in both: switching back to django-redis loses nothing.
    s2 = SessionStore(skey)
    s2["cart"] = [1, 2]
    s2.save()
    with override_settings(SESSION_CACHE_ALIAS="redis"):
        assert SessionStore(skey).load() == {"user_id": 42, "cart": [1, 2]}
    assert SessionStore(skey).load() == {"user_id": 42, "cart": [1, 2]}
    # Logging out deletes it in both.
    SessionStore(skey).delete()
    assert old.get(SessionStore.cache_key_prefix + skey) is None
    assert new.get(SessionStore.cache_key_prefix + skey) is None
    # After the switch NEW alone serves what was copied.
    assert new.get("forever") == {"x": 1} and new.incr("rl:1.2.3.4") == 4


def test_get_many_has_key_and_miss(env):
    from django.core.cache import caches
    old, new, switch = caches["redis"], caches["nearcache"], caches["default"]
    old.set_many({"a": 1, "b": "two"}, 60)
    new.set("c", 3.5)
    assert switch.get_many(["a", "b", "c", "zz"]) == {"a": 1, "b": "two", "c": 3.5}
    assert new.get_many(["a", "b"]) == {"a": 1, "b": "two"}
    assert switch.has_key("c") and not switch.has_key("zz")
    assert switch.get("zz", "dflt") == "dflt"
    with pytest.raises(ValueError):
        switch.incr("zz")
    assert switch.get_or_set("gos", lambda: [9]) == [9] and old.get("gos") == [9]


def test_missing_options_raise():
    from django.core.exceptions import ImproperlyConfigured

    from nearcache.migrate import SwitchCache
    with pytest.raises(ImproperlyConfigured, match="NEW and OLD"):
        SwitchCache("", {"OPTIONS": {"NEW": "x"}})


def test_async_calls_use_the_two_levels(env):
    import asyncio

    from django.core.cache import caches
    old, new, switch = caches["redis"], caches["nearcache"], caches["default"]
    old.set("async-k", "v", 60)

    async def run():
        assert await switch.aget("async-k") == "v"
        await switch.aset("async-n", 1, 60)
        return await switch.aincr("async-n")

    assert asyncio.run(run()) == 2
    assert new.get("async-k") == "v" and old.get("async-n") == 2
