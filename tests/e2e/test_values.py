"""Values in Redis (doc/redis.md, "Values in Redis"): a value nearcache did not
write is a miss for the Django backend on every host, never an exception,
STRICT or not; every (bytes, flags) a client stores reads back exactly on
another host; a version-1 value (what an old host wrote) reads as it was
written; what an old host serves for a version-2 value is a miss.

Two real nearcached on one real redis-server are two hosts; values are
planted with redis-cli, as an operator or another tool would.
"""
from __future__ import annotations

import asyncio
import logging
import pickle
import subprocess

import pytest

from support.rawproto import mp
from support.tier import client, status, wait_flushed, wait_for

P = b"nearcache:"
V2 = b"\xc1nc\x02"  # the version-2 envelope's magic and version (daemon/redis/value.h)


def v1_envelope(value: bytes, flags: int) -> bytes:
    """What a version-1 host stored for (value, flags != 0): msgpack ext 126 of flags + value."""
    assert len(value) + 1 <= 0xff
    return bytes([0xc7, len(value) + 1, 126, flags]) + value


def redis_cli(redis_server, *args: bytes | str) -> str:
    out = subprocess.run(["redis-cli", "-s", redis_server.socket, *args], check=True, capture_output=True,
                         timeout=10)
    return out.stdout.decode().strip()


def django_cache(d, **options):
    from django.conf import settings

    if not settings.configured:
        settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
    from nearcache.django import NearCache

    return NearCache(d.socket, {"OPTIONS": options})


@pytest.mark.parametrize("strict", [False, True])
def test_a_value_another_tool_wrote_is_a_miss_on_every_host(host, redis_server, caplog, strict):
    from nearcache import get_cached_data

    a, b = host("a"), host("b")
    ca, cb = django_cache(a, STRICT=strict), django_cache(b, STRICT=strict)
    for k in ("k", "many", "gos", "gcd", "ak", "agos"):
        assert redis_cli(redis_server, "SET", f"nearcache::1:{k}", "not msgpack") == "OK"
    caplog.set_level(logging.WARNING, "nearcache.django")
    undecodable = ca._client.counters["undecodable"]
    for c in (ca, cb):
        assert c.get("k") is None
        assert c.get("k", "dflt") == "dflt"
        assert c.get("k") is None  # again: now from this host's table, still a miss
        assert c.get_many(["k", "many"]) == {}
        assert asyncio.run(c.aget("ak")) is None
        assert asyncio.run(c.aget_many(["ak", "k"])) == {}
    assert ca._client.counters["undecodable"] > undecodable
    # Logged once per key and WARN_INTERVAL by each host's backend, with the reason.
    lines = [r.getMessage() for r in caplog.records if "b':1:k'" in r.getMessage()]
    assert len(lines) == 2 and "not a value nearcache wrote" in lines[0], lines
    for d in (a, b):
        st = status(d)
        assert st["redis_readthrough_foreign_total"] >= 3
        assert st["redis_readthrough_hits_total"] >= 3
    # get_or_set computes, and its value replaces the foreign one for every host.
    assert cb.get_or_set("gos", lambda: {"computed": 1}) == {"computed": 1}
    wait_flushed(b)
    assert redis_server.client().get(P + b":1:gos") == mp({"computed": 1})
    wait_for(lambda: ca.get("gos") == {"computed": 1}, 5, "a to read b's computed value")
    assert get_cached_data("gcd", lambda: [1, 2], cache=ca) == [1, 2]
    assert asyncio.run(ca.aget_or_set("agos", lambda: "async")) == "async"
    wait_flushed(a)
    assert cb.get("agos") == "async"
    # The raw client gets the foreign bytes whole, flagged.
    assert client(a).get_entry(b":1:k") == (b"not msgpack", 0x80)


def test_bytes_with_any_flags_round_trip_between_hosts(host, redis_server):
    a, b = host("a"), host("b")
    ca, cb = client(a), client(b)
    r = redis_server.client()
    values = [b"not msgpack", b"", b"\x05\x05", mp("plain"), mp(7), v1_envelope(b"ab", 1),
              b"\xc7\x05\x7e\x01ab", V2 + b"\x07xyz", b"\xc1nc\x03\x00", b"\xc1", bytes(range(256))]
    expected = {}
    for i, v in enumerate(values):
        for flags in (0, 1, 0x41, 0x80):
            k = f"rt{i}.{flags}"
            assert ca.set(k, v, flags=flags)
            expected[k] = (v, flags)
    wait_flushed(a)
    for k, entry in expected.items():
        assert cb.get_entry(k) == entry, k
    # msgpack with flags 0 is stored as its bytes (any Redis client reads it, old hosts too) ...
    assert r.get(P + b"rt3.0") == mp("plain") and r.get(P + b"rt4.0") == mp(7)
    # ... everything else in the version-2 envelope.
    assert r.get(P + b"rt0.0") == V2 + b"\x00not msgpack"
    assert r.get(P + b"rt5.0") == V2 + b"\x00" + v1_envelope(b"ab", 1)
    assert r.get(P + b"rt3.1") == V2 + b"\x01" + mp("plain")
    assert status(b)["redis_readthrough_foreign_total"] == 0


def test_version_1_values_an_old_host_wrote_read_as_written(host, redis_server):
    a, b = host("a"), host("b")
    pickled = pickle.dumps({"x": (1, 2)})
    r = redis_server.client()
    r.set(P + b":1:pickled", bytes([0xc9, 0, 0, 0, len(pickled) + 1, 126, 1]) + pickled)  # ext 32, as v1 wrote
    r.set(P + b":1:small", v1_envelope(b"\x80\x04K\x05.", 1))  # pickle of 5, ext 8
    r.set(P + b":1:plain", mp({"session": "data"}))  # flags 0: bare, as version 1 wrote it
    r.set(P + b":1:counter", v1_envelope(mp(41), 3))
    cp = django_cache(b, SERIALIZER="pickle")
    assert cp.get("pickled") == {"x": (1, 2)} and cp.get("small") == 5
    assert django_cache(b).get("plain") == {"session": "data"}
    cb = client(b)
    assert cb.get_entry(b":1:counter") == (mp(41), 3)
    # INCR in Redis keeps version 1's envelope: an old host still reads its counter.
    assert cb.incr(b":1:counter") == 42
    assert r.get(P + b":1:counter") == v1_envelope(mp(42), 3)
    assert client(a).get_entry(b":1:counter") == (mp(42), 3)
    assert status(b)["redis_readthrough_foreign_total"] == 0


def test_what_an_old_host_serves_for_a_version_2_value_is_a_miss(host, redis_server, caplog):
    """A version-1 daemon does not know the envelope: it answers the stored bytes
    with flags 0. Stored here the same way (raw bytes, flags 0), the backend's
    decode fails (0xc1 is no msgpack type): a miss, never an exception or other data."""
    a = host("a")
    raw, cache = client(a), django_cache(a, STRICT=True)
    for k, stored in {"pickled": V2 + b"\x01" + pickle.dumps([1]), "empty": V2 + b"\x00",
                      "odd": V2 + b"\x00not msgpack"}.items():
        assert raw.set(f":1:{k}".encode(), stored)
        assert cache.get(k, "miss") == "miss"
        assert cache.get_many([k]) == {}
        assert cache.get_or_set(k, lambda: "computed") == "computed"


def test_redis_value_format_1_writes_what_old_hosts_read(host, redis_server):
    """The rolling upgrade's switch: an upgraded host writes version 1's forms,
    which hosts of both versions read; STATUS shows it."""
    a, b = host("a", redis_value_format=1), host("b")
    ca, cb = client(a), client(b)
    r = redis_server.client()
    assert ca.set("pickled", b"\x80\x04K\x05.", flags=1) and ca.set("plain", mp([1]))
    wait_flushed(a)
    assert r.get(P + b"pickled") == v1_envelope(b"\x80\x04K\x05.", 1)  # what a version-1 host reads
    assert r.get(P + b"plain") == mp([1])
    assert cb.get_entry("pickled") == (b"\x80\x04K\x05.", 1)
    assert status(a)["config"]["redis_value_format"] == 1
    assert status(b)["config"]["redis_value_format"] == 2
