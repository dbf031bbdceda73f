"""Lease fills are conditional in Redis (doc/redis.md, "Lease fills"): the SET
that ends a lease a host holds reaches Redis only if no write of the key's
slot reached Redis since the lease was granted (by Redis: the counter its
LEASE script answered; decided on the host while Redis was unreachable: the
last counter snapshot). Two daemons as two hosts on a real redis-server; host
A's link through a loopback proxy for the gaps. A refused fill leaves Redis
with the other host's write (or without the key) and A drops its own copy.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.rawproto import DELETE, LEASE, LEASED, OK, SET, RawConn, mp
from support.redis_proxy import HoldingProxy
from support.tier import client, shm, status, wait_coherent, wait_flushed, wait_for

P = b"nearcache:"


def fresh_snapshot(d) -> None:
    n = status(d)["redis_repair_snapshots_total"]
    wait_for(lambda: status(d)["redis_repair_snapshots_total"] >= n + 2, 15, f"{d.name} to snapshot the counters")


def lease(c: RawConn, k: bytes) -> int:
    r = c.call(LEASE, k, 30000, 0)
    assert r[1] == LEASED, r
    return r[2]


def refused_at_least(d, n: int) -> None:
    wait_for(lambda: status(d)["redis_fills_refused_total"] >= n, 10, f"{d.name} to have {n} fill(s) refused")


def test_a_fill_with_no_other_writer_reaches_redis(host, redis_server):
    a, b = host("a"), host("b")
    r = redis_server.client()
    with RawConn(a.socket) as ra:
        lease(ra, b"k")
        assert ra.call(SET, b"k", mp("v1"), None)[1] == OK
    st = wait_flushed(a)
    assert st["redis_fills_total"] == 1 and st["redis_fills_refused_total"] == 0
    assert r.get(P + b"k") == mp("v1")
    assert client(b).get("k") == mp("v1")
    # The script's write invalidates this host too (NOLOOP does not cover script writes): read through.
    assert client(a).get("k") == mp("v1")


@pytest.mark.parametrize("other", ["set", "delete"])
def test_a_write_made_after_the_lease_wins_over_the_fill(host, redis_server, other):
    a, b = host("a"), host("b")
    r = redis_server.client()
    ca, cb = client(a), client(b)
    with RawConn(a.socket) as ra:
        lease(ra, b"k")  # granted by Redis: the counter of k's slot is recorded
        if other == "set":
            cb.set("k", mp("v2"))
        else:
            cb.delete("k")
        wait_flushed(b)
        assert ra.call(SET, b"k", mp("v1"), None)[1] == OK  # the value A read before B's write
    refused_at_least(a, 1)
    wait_flushed(a)
    assert r.get(P + b"k") == (mp("v2") if other == "set" else None)
    # A dropped its copy: the next read reads through.
    assert shm(ca, b"k") is None
    assert ca.get("k") == (mp("v2") if other == "set" else None)
    assert cb.get("k") == (mp("v2") if other == "set" else None)


def test_the_python_clients_lease_then_set_is_a_fill(host, redis_server):
    """The client asks LEASE on one connection and sends SET on its write channel: one process, one holder."""
    a, b = host("a"), host("b")
    r = redis_server.client()
    ca, cb = client(a), client(b)
    assert ca.lease(b"k", 30, 0).token
    cb.set("k", mp("v2"))
    wait_flushed(b)
    assert ca.set(b"k", mp("v1"))
    refused_at_least(a, 1)
    assert r.get(P + b"k") == mp("v2")
    assert ca.get("k") == mp("v2")
    # Another process's SET of a key this process leased is a write, not a fill: it reaches Redis.
    with RawConn(a.socket) as ra:
        lease(ra, b"w")
        cb.set("w", mp("v2"))
        wait_flushed(b)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from support.rawproto import RawConn, SET, OK, mp; "
                "c = RawConn(sys.argv[2]); assert c.call(SET, b'w', mp('v3'), None)[1] == OK")
        subprocess.run([sys.executable, "-c", code, str(Path(__file__).parents[1]), str(a.socket)], check=True)
    wait_flushed(a)
    assert r.get(P + b"w") == mp("v3")
    assert status(a)["redis_fills_refused_total"] == 1


def test_a_queued_write_is_not_lost_with_a_refused_fill(host, redis_server, tmp_path):
    """A's own DELETE queued during a gap goes ahead of A's later fill of the key (never replaced by it)."""
    r = redis_server.client()
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a = host("a", url=proxy.url, redis_stale_grace_ms=20000)
        b = host("b")
        client(b).set("k", mp("v0"))
        wait_flushed(b)
        fresh_snapshot(a)
        before = status(a)["redis_coherence_lost_total"]
        proxy.cut()
        wait_for(lambda: status(a)["redis_coherence_lost_total"] > before, 10, "a to lose its links")
        with RawConn(a.socket) as ra:
            ra.call(DELETE, b"k")
            lease(ra, b"k")  # decided on A: Redis is unreachable
            assert ra.call(SET, b"k", mp("v1"), None)[1] == OK
        proxy.heal()
        wait_coherent(a)
        wait_flushed(a)
        # The DELETE reached Redis and bumped the counter, so the fill behind it was refused.
        assert r.get(P + b"k") is None
        assert status(a)["redis_fills_refused_total"] == 1


@pytest.mark.parametrize("grace_ms", [20000, 300])
def test_fills_made_during_a_gap_do_not_overwrite_writes_made_meanwhile(host, redis_server, tmp_path, grace_ms):
    r = redis_server.client()
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a = host("a", url=proxy.url, redis_stale_grace_ms=grace_ms)
        b = host("b")
        ca, cb = client(a), client(b)
        fresh_snapshot(a)
        before = status(a)["redis_coherence_lost_total"]
        proxy.cut()
        wait_for(lambda: status(a)["redis_coherence_lost_total"] > before and status(a)["redis_connected"] == 0, 10,
                 "a to lose its links")
        with RawConn(a.socket) as ra:
            for k in (b"set", b"deleted", b"alone"):
                lease(ra, k)  # decided on A, conditional on the last snapshot's counters
                assert ra.call(SET, k, mp("v1"), None)[1] == OK
        cb.set("set", mp("v2"))
        cb.delete("deleted")
        wait_flushed(b)
        if grace_ms < 1000:
            wait_for(lambda: status(a)["redis_suspended"] == 1, 10, "a to suspend its table")
            assert shm(ca, b"set") is None
        repairs = status(a)["redis_repairs_total"]
        proxy.heal()
        wait_for(lambda: status(a)["redis_repairs_total"] > repairs, 15, "a to repair")
        wait_flushed(a)
        refused_at_least(a, 2)
        assert r.get(P + b"set") == mp("v2")
        assert r.get(P + b"deleted") is None
        assert r.get(P + b"alone") == mp("v1")  # no other writer: the fill reached Redis
        # A serves what Redis has, never its own older fill.
        wait_for(lambda: ca.get("set") == mp("v2"), 10, "a to serve the other host's write")
        assert shm(ca, b"set") in (None, mp("v2"))
        assert ca.get("deleted") is None
        assert cb.get("alone") == mp("v1")


def test_conditional_fills_off_is_a_plain_set(host, redis_server):
    a, b = host("a", redis_conditional_fills="false"), host("b")
    r = redis_server.client()
    with RawConn(a.socket) as ra:
        lease(ra, b"k")
        client(b).set("k", mp("v2"))
        wait_flushed(b)
        assert ra.call(SET, b"k", mp("v1"), None)[1] == OK
    st = wait_flushed(a)
    assert st["redis_fills_total"] == 0
    assert st["config"]["redis_conditional_fills"] is False and status(b)["config"]["redis_conditional_fills"] is True
    assert r.get(P + b"k") == mp("v1")  # today's race: the older value overwrites


def test_fills_on_a_cluster_run_on_the_keys_master_also_after_its_slot_moved(host, cluster):
    c = cluster
    for n in c.masters():
        n.client().flushall()
    a, b = host("a", url=c.url), host("b", url=c.url)
    cb = client(b)
    with RawConn(a.socket) as ra:
        for i in range(12):  # keys on every master: the counter is in the key's slot
            k = f"f{i}".encode()
            lease(ra, k)
            assert ra.call(SET, k, mp(i), None)[1] == OK
        wait_flushed(a)
        assert all(c.get(P + f"f{i}".encode()) == mp(i) for i in range(12))
        # Leases granted on the slots' masters; the slots move before the fills are sent (a
        # fill answered MOVED runs on the new master, where the slot's counter moved too).
        lease(ra, b"{mv}race")
        lease(ra, b"{mw}alone")  # another slot: B's write does not refuse it
        cb.set("{mv}race", mp("v2"))
        wait_flushed(b)
        slot = c.slot(P + b"{mv}race")
        dst = next(n for n in c.masters() if n.port != c.owner(slot).port)
        c.move_slot(slot, dst)
        slot2 = c.slot(P + b"{mw}alone")
        dst2 = next(n for n in c.masters() if n.port != c.owner(slot2).port)
        c.move_slot(slot2, dst2)
        assert ra.call(SET, b"{mv}race", mp("v1"), None)[1] == OK
        assert ra.call(SET, b"{mw}alone", mp("v1"), None)[1] == OK
    st = wait_flushed(a, timeout=20)
    assert st["redis_queue_failed_total"] == 0, st["redis"]
    assert st["redis_fills_refused_total"] == 1 and st["redis_fills_total"] >= 14
    assert st["redis_cluster_moved_total"] >= 1  # the fills went to the old masters first
    assert dst.client().get(P + b"{mv}race") == mp("v2")
    assert dst2.client().get(P + b"{mw}alone") == mp("v1")
