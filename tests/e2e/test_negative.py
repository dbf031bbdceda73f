"""Negative entries (doc/redis.md, "Negative entries"): a key Redis does not
have is remembered in the near tier, so that a repeated miss is answered in
the client without a round trip; dropped by the invalidations and repairs
that drop values, not served while the table is suspended, bounded, and
absent for ADD, INCR, LEASE, HAS_KEY and TOUCH. Two daemons as two hosts on a
real redis-server; requests counted with STATUS.
"""
from __future__ import annotations

from support.rawproto import GET, HAS_KEY, NOT_FOUND, TOUCH, RawConn, mp
from support.redis_proxy import HoldingProxy
from support.tier import client, status, wait_flushed, wait_for
from test_repair import cut_and_wait, fresh_snapshot, heal_and_repair


def negatives(d) -> int:
    return status(d)["negative_entries"]


def seg_status(c, key: bytes) -> int:
    return c.segment.get(key)[0]


def make_negative(d, c, *keys: bytes) -> None:
    """Misses of keys Redis does not have: each leaves a negative entry."""
    n = negatives(d)
    for k in keys:
        assert c.get(k) is None
    wait_for(lambda: negatives(d) >= n + len(keys), 5, "the negative entries")
    from nearcache.client import NEGATIVE

    assert all(seg_status(c, k) == NEGATIVE for k in keys)


def round_trips(d, fn) -> int:
    before = status(d)["requests_total"]
    fn()
    return status(d)["requests_total"] - before - 1


def test_a_repeated_miss_is_answered_in_the_client(host):
    a = host("a")
    ca = client(a)
    st = status(a)
    assert st["shm_authoritative"] == 0  # a Redis tier: a plain miss is never definite
    assert st["config"]["redis_negative_ttl_ms"] > 0
    make_negative(a, ca, b"nx")
    reads = status(a)["redis_readthrough_misses_total"]

    def lookups():
        for _ in range(100):
            assert ca.get(b"nx") is None
            assert ca.has_key(b"nx") is False
            assert ca.get_many([b"nx"]) == {}

    assert round_trips(a, lookups) == 0
    # The daemon's own GET answers it too, without asking Redis, and counts it.
    hits = status(a)["negative_hits_total"]
    with RawConn(a.socket) as raw:
        assert raw.call(GET, b"nx")[1] == NOT_FOUND
    st = status(a)
    assert st["negative_hits_total"] == hits + 1
    assert st["redis_readthrough_misses_total"] == reads
    # Off in the client: every miss asks the daemon (which answers from the negative entry).
    off = client(a, local_misses=False)
    assert round_trips(a, lambda: [off.get(b"nx") for _ in range(50)]) == 50
    assert status(a)["redis_readthrough_misses_total"] == reads


def test_another_host_writing_the_key_drops_the_negative_entry(host):
    a, b = host("a"), host("b")
    ca, cb = client(a), client(b)
    make_negative(a, ca, b"k", b"mine")
    cb.set(b"k", mp("from b"))
    wait_flushed(b)
    wait_for(lambda: ca.get(b"k") == mp("from b"), 5, "the invalidation to drop a's negative entry")
    # A local write replaces it at once.
    assert ca.set(b"mine", mp(1))
    assert ca.get(b"mine") == mp(1)
    assert negatives(a) == 0


def test_a_write_to_redis_behind_the_tiers_back_is_seen_through_invalidation(host, redis_server):
    a = host("a")
    ca = client(a)
    make_negative(a, ca, b"raw")
    redis_server.client().set(b"nearcache:raw", mp("direct"))
    wait_for(lambda: ca.get(b"raw") == mp("direct"), 5, "the invalidation of the negative entry")


def test_operations_on_a_negative_key_treat_it_as_absent(host):
    a, b = host("a"), host("b")
    ca, cb = client(a), client(b)
    keys = [b"add", b"incr", b"lease", b"has", b"touch", b"del"]
    make_negative(a, ca, *keys)
    assert ca.add(b"add", mp(1)) is True
    assert ca.get(b"add") == mp(1)
    wait_flushed(a)
    assert cb.get(b"add") == mp(1)  # decided in Redis
    assert ca.incr(b"incr") is None
    lease = ca.lease(b"lease", 5.0, 0.0)
    assert not lease.hit and lease.token is not None  # the lease is granted, not a "hit" of nothing
    assert ca.set(b"lease", mp("computed"))
    assert ca.get(b"lease") == mp("computed")
    assert ca.has_key(b"has") is False
    assert ca.touch(b"touch", 60) is False
    assert ca.delete(b"del") is False
    hits = status(a)["negative_hits_total"]
    with RawConn(a.socket) as raw:
        assert raw.call(HAS_KEY, b"has")[1] == NOT_FOUND
        assert raw.call(TOUCH, b"touch", 60000)[1] == NOT_FOUND
    assert status(a)["negative_hits_total"] == hits + 2


def test_an_add_racing_the_invalidation_of_a_negative_entry_finds_the_value(host, redis_server):
    """Redis has the key while this host holds a negative entry (its invalidation
    not yet applied): ADD's EXISTS says so, and the entry goes."""
    a = host("a")
    ca = client(a)
    make_negative(a, ca, b"x")
    a.pause()  # the invalidation waits in the socket
    try:
        redis_server.client().set(b"nearcache:x", mp("there"))
    finally:
        a.resume()
    assert ca.add(b"x", mp("mine")) is False
    assert ca.get(b"x") == mp("there")


def test_a_suspended_table_serves_no_negative_entry_and_repair_drops_it(host, redis_server, tmp_path):
    from nearcache.client import NEGATIVE, UNAVAILABLE
    from nearcache import _native

    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a = host("a", url=proxy.url, redis_stale_grace_ms=500)
        b = host("b")
        ca, cb = client(a), client(b)
        for k in (b"s1", b"s2"):  # their slots get counters (the repair drops a slot it cannot compare)
            cb.set(k, mp(0))
            cb.delete(k)
        wait_flushed(b)
        make_negative(a, ca, b"s1", b"s2")
        fresh_snapshot(a)
        cut_and_wait(proxy, a)
        cb.set(b"s1", mp("written in the gap"))
        wait_flushed(b)
        wait_for(lambda: status(a)["redis_suspended"] == 1, 5, "a to suspend its table")
        assert seg_status(ca, b"s1") in (_native.SUSPENDED, UNAVAILABLE)
        assert seg_status(ca, b"s2") != NEGATIVE
        hits = status(a)["negative_hits_total"]
        assert ca.get(b"s1") is None  # Redis is unreachable from a: a miss, not the negative entry
        assert status(a)["negative_hits_total"] == hits
        st = heal_and_repair(proxy, a)
        assert st["redis_repairs_full_total"] == 0
        assert ca.get(b"s1") == mp("written in the gap")  # its slot was dropped: read anew
        assert seg_status(ca, b"s2") == NEGATIVE  # its slot did not change: kept


def test_the_bound_holds(host):
    a = host("a", redis_negative_max=5)
    ca = client(a)
    for i in range(20):
        assert ca.get(b"absent%d" % i) is None
    wait_for(lambda: status(a)["negative_installs_skipped_total"] == 15, 5, "the misses over the bound")
    assert negatives(a) == 5


def test_negative_ttl_bounds_them_and_zero_turns_them_off(host):
    from nearcache.client import MISS

    a = host("a", redis_negative_ttl_ms=300)
    ca = client(a)
    make_negative(a, ca, b"short")
    wait_for(lambda: seg_status(ca, b"short") == MISS, 5, "the negative entry to expire")
    off = host("off", redis_negative_ttl_ms=0)
    co = client(off)
    assert co.get(b"k") is None
    assert negatives(off) == 0 and seg_status(co, b"k") == MISS
    assert round_trips(off, lambda: [co.get(b"k") for _ in range(10)]) == 10
