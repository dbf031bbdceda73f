"""Repair, not flush, when invalidations stop (doc/redis.md, "Gaps in
invalidations"): two daemons as two hosts on one real redis-server, host A's
link through a loopback proxy that cuts and heals it. A keeps serving through
a gap shorter than redis_stale_grace_ms, suspends (keeps, does not serve) past
it, and on reconnect drops exactly the slots written meanwhile, also after a
Redis restart from its AOF (the snapshot's proof key came back); a Redis that
comes back empty, a flush of this database or missing counters drop what they
may have touched; a FLUSHDB of another database drops nothing.
"""
from __future__ import annotations

from support.redis_proxy import HoldingProxy
from support.rawproto import mp
from support.tier import client, shm, status, wait_coherent, wait_flushed, wait_for

P = b"nearcache:"
N = 200


def crc16(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else c << 1
            c &= 0xFFFF
    return c


def slot(redis_key: bytes) -> int:
    o = redis_key.find(b"{")
    if o >= 0:
        e = redis_key.find(b"}", o + 1)
        if e > o + 1:
            redis_key = redis_key[o + 1:e]
    return crc16(redis_key) % 16384


def key(i: int) -> bytes:
    return b"k%d" % i


def fresh_snapshot(d) -> None:
    """Waits for a snapshot of the counters begun after the writes so far."""
    n = status(d)["redis_repair_snapshots_total"]
    wait_for(lambda: status(d)["redis_repair_snapshots_total"] >= n + 2, 15, f"{d.name} to snapshot the counters")


def warm(ca, cb, b) -> None:
    """B writes N keys; A reads them (installed in A's table)."""
    for i in range(N):
        cb.set(key(i), mp(i))
    wait_flushed(b)
    # A read-through is kept only when no invalidation of its key arrives
    # meanwhile (B's own writes' may still be on their way): read again until kept.
    for i in range(N):
        wait_for(lambda: ca.get(key(i)) == mp(i) and shm(ca, key(i)) == mp(i), 5, f"A to keep {key(i)!r}")


def cut_and_wait(proxy, a) -> None:
    before = status(a)["redis_coherence_lost_total"]
    proxy.cut()
    wait_for(lambda: status(a)["redis_coherence_lost_total"] > before and status(a)["redis_connected"] == 0, 10,
             "a to lose its links")


def partitioned(host, proxy, grace_ms: int):
    """Host A (through `proxy`, with this grace) and host B, warm, with a fresh snapshot; then A is cut off."""
    a = host("a", url=proxy.url, redis_stale_grace_ms=grace_ms)
    b = host("b")
    ca, cb = client(a), client(b)
    warm(ca, cb, b)
    fresh_snapshot(a)
    cut_and_wait(proxy, a)
    return a, b, ca, cb


def heal_and_repair(proxy, a) -> dict:
    before = status(a)["redis_repairs_total"]
    proxy.heal()
    return wait_for(lambda: (lambda st: st if st["redis_repairs_total"] > before else None)(status(a)), 15,
                    "a to repair")


def check_repaired(ca, written: set[int]) -> None:
    """Keys in the slots written during the gap are gone (and read anew); the rest stay warm."""
    touched = {slot(P + key(i)) for i in written}
    for i in range(N):
        if slot(P + key(i)) in touched:
            assert shm(ca, key(i)) is None, i
        else:
            assert shm(ca, key(i)) == mp(i), i
    for i in written:
        assert ca.get(key(i)) == mp(1000 + i)


def test_a_partition_shorter_than_the_grace_keeps_serving_then_drops_only_what_changed(host, redis_server, tmp_path):
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a, b, ca, cb = partitioned(host, proxy, 20000)
        written = set(range(0, 20))
        for i in written:
            cb.set(key(i), mp(1000 + i))
        wait_flushed(b)
        # Within the grace: A serves what it has (stale by at most the stated bound).
        assert all(shm(ca, key(i)) == mp(i) for i in range(N))
        assert status(a)["redis_suspended"] == 0
        st = heal_and_repair(proxy, a)
        assert st["redis_repairs_full_total"] == 0
        assert 0 < st["redis_repair_slots_dropped_total"] < 16384
        check_repaired(ca, written)
        assert "repair dropped" in a.log()


def test_a_partition_longer_than_the_grace_suspends_without_deleting(host, redis_server, tmp_path):
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a, b, ca, cb = partitioned(host, proxy, 500)
        written = {3, 50, 150}
        for i in written:
            cb.set(key(i), mp(1000 + i))
        wait_flushed(b)
        wait_for(lambda: status(a)["redis_suspended"] == 1, 5, "a to suspend its table")
        # Suspended: nothing is served, from shared memory or by the daemon (Redis is unreachable: misses).
        assert all(shm(ca, key(i)) is None for i in range(N))
        assert ca.get(key(3)) is None and ca.get(key(4)) is None
        st = heal_and_repair(proxy, a)
        assert st["redis_suspended"] == 0 and st["redis_repairs_full_total"] == 0
        check_repaired(ca, written)  # the entries were kept: warm again at once


def test_redis_restarted_empty_drops_everything_from_redis(host, redis_servers):
    r = redis_servers("volatile", aof=False)
    a, b = host("a", url=r.url), host("b", url=r.url)
    ca, cb = client(a), client(b)
    warm(ca, cb, b)
    fresh_snapshot(a)
    before = status(a)["redis_repairs_full_total"]
    r.kill()
    r.start()
    assert not r.client().keys(P + b"*")  # came back empty (the daemons may have set their marker already)
    wait_for(lambda: status(a)["redis_repairs_full_total"] > before, 15, "a to repair after the restart")
    assert all(shm(ca, key(i)) is None for i in range(N))
    assert "cannot be shown to hold the snapshot" in a.log() or "flush marker changed" in a.log()
    wait_coherent(a, b)
    assert ca.get(key(1)) is None  # Redis lost it; so did the near tier


def test_redis_restarted_from_its_aof_repairs_by_slot(host, redis_server, tmp_path):
    """A new replication id, but the snapshot's proof key came back with the AOF:
    Redis holds the snapshot's history, so only the slots written since are dropped."""
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a, b, ca, cb = partitioned(host, proxy, 20000)
        redis_server.restart()
        wait_coherent(b)
        written = set(range(0, 20))
        for i in written:
            cb.set(key(i), mp(1000 + i))
        wait_flushed(b)
        st = heal_and_repair(proxy, a)
        assert st["redis_repairs_full_total"] == 0
        assert 0 < st["redis_repair_slots_dropped_total"] < 16384
        check_repaired(ca, written)


def test_flushdb_of_another_database_drops_nothing_of_this_one(host, redis_server):
    a, b = host("a"), host("b")
    ca, cb = client(a), client(b)
    warm(ca, cb, b)
    fresh_snapshot(a)
    flushes = status(a)["redis_local_flushes_total"]
    other = redis_server.client(db=3)
    other.set(b"x", b"1")
    other.flushdb()
    wait_for(lambda: status(a)["redis_flush_ignored_total"] >= 1, 5, "a to check its marker")
    assert all(shm(ca, key(i)) == mp(i) for i in range(N))
    assert status(a)["redis_local_flushes_total"] == flushes
    redis_server.client().flushdb()  # this database: everything goes
    wait_for(lambda: status(a)["redis_local_flushes_total"] > flushes, 5, "a to drop its table")
    assert all(shm(ca, key(i)) is None for i in range(N))


def test_missing_counters_drop_their_slots(host, redis_server, tmp_path):
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a, b, ca, cb = partitioned(host, proxy, 20000)
        # allkeys-* eviction (or anyone) removes the counters of two keys' slots during the gap.
        r = redis_server.client()
        gone = {slot(P + key(7)), slot(P + key(77))}
        counters = [k for k in r.keys(b"\x00ncslot*") if slot(k) in gone]
        assert len(counters) == 2
        r.delete(*counters)
        st = heal_and_repair(proxy, a)
        assert st["redis_repairs_full_total"] == 0
        for i in range(N):
            assert (shm(ca, key(i)) is None) == (slot(P + key(i)) in gone), i
        assert ca.get(key(7)) == mp(7)


def test_grace_zero_drops_and_suspends_until_invalidations_resume(host, redis_server, tmp_path):
    """redis_stale_grace_ms = 0: the table is dropped at the loss and suspended for the whole gap, so
    that what this host stores meanwhile (a fill another host's write may overtake) is not served."""
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        a = host("a", url=proxy.url, redis_stale_grace_ms=0)
        b = host("b")
        ca, cb = client(a), client(b)
        warm(ca, cb, b)
        cut_and_wait(proxy, a)
        assert all(shm(ca, key(i)) is None for i in range(N))
        st = status(a)
        assert st["redis_suspended"] == 1
        # Stored through A during the gap: in A's table, but neither readers nor the daemon serve it
        # from there (the daemon answers from Redis, unreachable: a miss, or from A's own queue).
        ca.set(b"gap", mp("during"))
        assert shm(ca, b"gap") is None
        assert ca.get(key(5)) is None
        proxy.heal()
        wait_for(lambda: status(a)["redis_suspended"] == 0, 15, "a to serve again once invalidations resume")
        wait_coherent(a)
        assert ca.get(key(1)) == mp(1)
        wait_flushed(a)
        assert cb.get(b"gap") == mp("during")


def test_grace_zero_after_a_warm_restart_drops_the_adopted_table_and_serves_again(host, redis_server):
    a = host("a", redis_stale_grace_ms=0)
    b = host("b")
    ca, cb = client(a), client(b)
    warm(ca, cb, b)
    fresh_snapshot(a)
    a.stop()
    a.start()
    assert status(a)["start"]["kept"] == N  # adopted, suspended: grace 0 has nothing to serve them by
    wait_coherent(a)
    wait_for(lambda: status(a)["redis_suspended"] == 0, 10, "the table to be served again")
    assert status(a)["entries"] == 0  # dropped at the first coherence, as any gap with grace 0
    assert ca.get(key(1)) == mp(1) and shm(ca, key(1)) == mp(1)


def test_a_failover_to_a_replica_that_holds_the_snapshot_repairs_by_slot(host, redis_servers, tmp_path):
    """REPLICAOF NO ONE on an in-sync replica: its master_replid2 and
    second_repl_offset prove it holds A's snapshot, so only the slots B wrote
    on the new primary are dropped."""
    p, rep = redis_servers("primary", tcp=True), redis_servers("replica", tcp=True)
    rep.client().replicaof("127.0.0.1", p.port)
    wait_for(lambda: rep.client().info("replication")["master_link_status"] == "up", 10, "the replica to sync")
    with HoldingProxy(tmp_path, p.socket, name="pa") as pa, HoldingProxy(tmp_path, p.socket, name="pb") as pb:
        a = host("a", url=pa.url, redis_stale_grace_ms=20000)
        b = host("b", url=pb.url)
        ca, cb = client(a), client(b)
        warm(ca, cb, b)
        fresh_snapshot(a)
        cut_and_wait(pa, a)
        pb.cut()

        def in_sync():
            return rep.client().info("replication")["master_repl_offset"] == \
                p.client().info("replication")["master_repl_offset"]
        wait_for(in_sync, 10, "the replica to catch up")
        p.stop()
        rep.client().replicaof("no", "one")
        pa.upstream = pb.upstream = rep.socket
        pb.heal()
        wait_coherent(b)
        written = {5, 60}
        for i in written:
            cb.set(key(i), mp(1000 + i))
        wait_flushed(b)
        st = heal_and_repair(pa, a)
        assert st["redis_repairs_full_total"] == 0, a.log()
        check_repaired(ca, written)
