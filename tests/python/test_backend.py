"""NearCache beyond Django's suite: values through the daemon, async without executors,
leases, CLEAR_PREFIX_ONLY, serializers, get_cached_data."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict

import pytest
from django.core.cache.backends.locmem import LocMemCache

from nearcache import _native, get_cached_data
from nc_values import VALUES, same


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}:{repr(v)[:30]}")
def test_every_value_type_round_trips_through_the_daemon(cache, value):
    cache.set("v", value)
    assert same(cache.get("v"), value)                        # shared memory
    assert same(cache._nc_get_miss(cache._key("v"), None, _native.MISS), value)  # socket
    assert same(cache.get_many(["v"])["v"], value)


def test_pickle_off_raises_naming_the_type(module_daemon, make_cache):
    c = make_cache(module_daemon, PICKLE=False)
    with pytest.raises(TypeError, match="collections.OrderedDict"):
        c.set("k", OrderedDict(a=1))
    c.set("k", {"fine": (1, 2)})
    assert c.get("k") == {"fine": (1, 2)}


def test_hits_are_served_from_shared_memory(cache):
    cache.set("k", {"a": 1})
    before = _native.Segment.totals()["hits"]
    assert cache.get("k") == {"a": 1} and cache.get_many(["k"]) == {"k": {"a": 1}}
    assert _native.Segment.totals()["hits"] == before + 2


def test_aget_hit_runs_no_executor(cache):
    cache.set("k", [1, 2, 3])
    coro = cache.aget("k")
    # One step of the coroutine finishes it: it never yielded to the event loop,
    # so nothing ran in an executor or another thread.
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == [1, 2, 3]


def test_async_api(cache):
    class NoExecutor(Exception):
        pass

    async def main():
        loop = asyncio.get_running_loop()

        def refuse(*a, **k):
            raise NoExecutor("an executor was used")

        loop.run_in_executor = refuse  # every method below must be natively async
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aget("missing", "dflt") == "dflt"
        assert await cache.aadd("a", 2) is False and await cache.aadd("b", 2) is True
        assert await cache.aget_many(["a", "b", "c"]) == {"a": 1, "b": 2}
        assert await cache.aset_many({"c": 3, "d": (4,)}) == []
        assert await cache.aincr("a", 5) == 6 and await cache.adecr("a", 2) == 4
        with pytest.raises(ValueError):
            await cache.aincr("nope")
        assert await cache.atouch("a", 10) is True
        assert await cache.ahas_key("d") is True
        assert await cache.adelete("d") is True and await cache.ahas_key("d") is False
        await cache.adelete_many(["a", "b"])
        assert await cache.aget_or_set("g", lambda: "computed") == "computed"
        assert await cache.aget_or_set("g", lambda: "again") == "computed"
        await cache.aclear()
        assert await cache.aget("c") is None
        await cache.aclose()

    asyncio.run(main())


def test_clear_prefix_only(module_daemon, make_cache):
    a = make_cache(module_daemon, {"KEY_PREFIX": "a"}, CLEAR_PREFIX_ONLY=True)
    ab = make_cache(module_daemon, {"KEY_PREFIX": "ab"})
    a.set("k", 1)
    ab.set("k", 2)
    a.clear()
    assert a.get("k") is None and ab.get("k") == 2
    ab.clear()  # the default clears the whole table
    assert ab.get("k") is None


def test_pickle_serializer_option(module_daemon, make_cache, caplog):
    c = make_cache(module_daemon, SERIALIZER="pickle")
    c.set("p", {"x": OrderedDict(a=1)})
    assert c.get("p") == {"x": OrderedDict(a=1)}
    assert c._client.get_entry(c._key("p"))[1] == 1  # flag 0x01
    c.set("n", 1)
    assert c.incr("n") == 2
    plain = make_cache(module_daemon)
    # Another SERIALIZER's value is undecodable here: a miss, and a warning that says why.
    assert plain.get("p", "miss") == "miss"
    assert any("SERIALIZER" in r.getMessage() for r in caplog.records)


def test_socket_only_mode(module_daemon, make_cache):
    c = make_cache(module_daemon, USE_SHM=False)
    before = _native.Segment.totals()["hits"]
    c.set("s", "v")
    assert c.get("s") == "v" and c.get_many(["s"]) == {"s": "v"}
    assert _native.Segment.totals()["hits"] == before


def test_close_keeps_the_connection(cache):
    cache.get("x")
    conn = cache._client._conn()
    cache.close()
    cache.set("x", 1)
    assert cache._client._conn() is conn


def test_get_or_set_computes_once_across_threads(cache):
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.2)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_set("gos", compute, 60)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["value"] * 8 and len(calls) == 1


def test_get_or_set_releases_the_lease_on_error(cache):
    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_set("err", boom)
    t0 = time.monotonic()
    assert cache.get_or_set("err", "ok") == "ok"
    assert time.monotonic() - t0 < 1  # no waiting for a lease that nobody holds


class FakeQuerySet:
    """Has a callable .all() returning an iterable, like a QuerySet or a related manager."""

    def __init__(self, rows):
        self.rows = rows

    def all(self):
        return iter(self.rows)


def test_get_cached_data_logs_and_freezes(cache, caplog):
    caplog.set_level(logging.DEBUG, logger="nearcache")
    calls = []

    def fetch():
        calls.append(1)
        return FakeQuerySet([1, 2])

    assert get_cached_data("gcd", fetch, cache=cache) == [1, 2]
    assert get_cached_data("gcd", fetch, cache=cache) == [1, 2]
    assert len(calls) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "nearcache"]
    assert lines == ["Cache | action=get status=miss key='gcd'",
                     "Cache | action=set status=success key='gcd' timeout=86400",
                     "Cache | action=get status=hit key='gcd'"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "nearcache")


def test_get_cached_data_none_is_not_stored(cache):
    calls = []

    def fetch():
        calls.append(1)
        return None

    assert get_cached_data("none", fetch, cache=cache) is None
    assert get_cached_data("none", fetch, cache=cache) is None
    assert len(calls) == 2 and cache.has_key("none") is False


def test_get_cached_data_timeout_and_errors(cache):
    assert get_cached_data("t", lambda: "v", timeout=0.3, cache=cache) == "v"
    assert cache.get("t") == "v"
    time.sleep(0.4)
    assert cache.get("t") is None
    with pytest.raises(ZeroDivisionError):
        get_cached_data("e", lambda: 1 / 0, cache=cache)
    t0 = time.monotonic()
    assert get_cached_data("e", lambda: "fine", cache=cache) == "fine"  # lease was released
    assert time.monotonic() - t0 < 1


def test_get_cached_data_other_backends(caplog):
    caplog.set_level(logging.DEBUG, logger="nearcache")
    lm = LocMemCache("gcd-test", {})
    assert get_cached_data("k", lambda: FakeQuerySet(["a"]), timeout=30, cache=lm) == ["a"]
    assert get_cached_data("k", lambda: "other", cache=lm) == ["a"]
    assert [r.getMessage() for r in caplog.records if r.name == "nearcache"] == [
        "Cache | action=get status=miss key='k'",
        "Cache | action=set status=success key='k' timeout=30",
        "Cache | action=get status=hit key='k'"]
