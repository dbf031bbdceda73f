"""The sans-I/O core (nearcache.core) on its own: request frames, splitting by
count and bytes, TTLs as LocMem reads them, and what a reply means."""
from __future__ import annotations

import math

import msgpack
import pytest

from nearcache import core
from nearcache import protocol as P


def test_ttl_ms_like_locmem():
    assert core.ttl_ms(None) is None
    assert core.ttl_ms(0) == 0 and core.ttl_ms(-5) == 0 and core.ttl_ms(-math.inf) == 0
    assert core.ttl_ms(0.0001) == 1 and core.ttl_ms(1.5) == 1500
    for forever in (10 ** 20, math.inf, math.nan, 2 ** 63):
        assert core.ttl_ms(forever) is None


def test_many_ops_split_by_count_and_bytes():
    limits = {"max_frame_bytes": 100_000, "key_limit": 1024, "value_limit": 60_000}
    keys = [b"k%05d" % i for i in range(2500)]
    op = core.get_many(keys, limits)
    assert [len(r[1]) for r in op.requests] == [1000, 1000, 500]
    items = [(b"v%d" % i, b"x" * 10_000, 0) for i in range(30)]
    op = core.set_many(items, 10, limits)
    for req in op.requests:
        assert len(msgpack.packb([req[0], 1, *req[1:]], use_bin_type=True)) <= limits["max_frame_bytes"]
    assert sum(len(r[1]) for r in op.requests) == 30
    assert op.result([[P.OK, []] for _ in op.requests]) == []


def test_set_many_refuses_what_the_limits_refuse_without_sending_it():
    limits = {"max_frame_bytes": 1 << 20, "key_limit": 8, "value_limit": 100}
    op = core.set_many([(b"ok", b"v", 0), (b"k" * 9, b"v", 0), (b"big", b"x" * 101, 0)], None, limits)
    sent = [it[0] for req in op.requests for it in req[1]]
    assert sent == [b"ok"]
    assert sorted(op.result([[P.OK, []]])) == [b"big", b"k" * 9]
    assert sorted(op.fallback) == [b"big", b"k" * 9, b"ok"]


def test_replies_read_the_same_for_every_transport():
    assert core.get(b"k").result([[P.OK, b"v", 3, None]]) == (b"v", 3)
    assert core.get(b"k").result([[P.NOT_FOUND]]) is None
    assert core.incr(b"k", -2).requests == [(P.DECR, b"k", 2)]
    assert core.incr(b"k", 1).result([[P.NOT_FOUND]]) is None
    with pytest.raises(P.ProtocolError):
        core.incr(b"k", 1).result([[P.NOT_INTEGER, "NOT_INTEGER: no"]])
    lease = core.lease(b"k", 30, 5)
    assert lease.extra == 5 and not lease.retry
    assert lease.result([[P.LEASED, 7]]).token == 7


def test_policy_fail_open_and_strict():
    op = core.get(b"k")
    open_ = core.Policy("/x", strict=False, warn_interval=60, timeout=1.0)
    assert open_.failed(op, TimeoutError("t")) is None and open_.window_open()
    assert open_.failed(core.set(b"k", b"v", None, 0, {}), P.error_for(P.FRAME_TOO_LARGE, "big")) is False
    with pytest.raises(P.ProtocolError):   # incr's own errors reach the API even fail-open
        open_.failed(core.incr(b"k", 1), P.error_for(P.NOT_INTEGER, "x"))
    with pytest.raises(P.CacheUnavailable):  # STATUS has no fail-open answer
        open_.failed(core.status(), ConnectionRefusedError())
    strict = core.Policy("/x", strict=True, warn_interval=60, timeout=1.0)
    with pytest.raises(P.CacheUnavailable):
        strict.failed(op, ConnectionRefusedError())
