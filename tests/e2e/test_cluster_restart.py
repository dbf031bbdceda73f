"""A warm restart on Redis Cluster (doc/redis.md, "Restarts" and the Cluster
section): host A saves one counter snapshot per master in `<segment>.repair`
(version 2: each master's home slot, replication tags and the counters of the
slots it serves), and a restarted A adopts its table, repairs each master's
slots against the saved snapshot of that master, and drops only the slots host
B wrote while A was down: after SIGTERM (served through the restart, within
the grace) and after kill -9 with the grace run out (suspended until every
master repaired). A master restarted empty cannot prove it holds its snapshot:
only its slots are dropped.
"""
from __future__ import annotations

import os
import stat
import struct
import time

from support.rawproto import mp
from support.tier import client, shm, status, wait_coherent, wait_flushed, wait_for

P = b"nearcache:"
N = 150
SLOTS = 16384


def key(i: int) -> bytes:
    return b"k%d" % i


def read_snapshots(path: str) -> list[dict] | None:
    """The masters' snapshots of a version-2 repair file (daemon/server/repair_file.cc), or None."""
    try:
        b = open(path, "rb").read()
    except FileNotFoundError:
        return None
    if b[:8] != b"NCSNAP02":
        return None
    at = 8

    def get(fmt):
        nonlocal at
        v = struct.unpack_from("<" + fmt, b, at)
        at += struct.calcsize("<" + fmt)
        return v[0]

    def get_str():
        nonlocal at
        n = get("I")
        at += n
        return b[at - n:at]

    get("Q"), get_str(), get("Q")  # generation, prefix, oldest snapshot time
    masters = []
    for _ in range(get("I")):
        m = {"home": get("i"), "mono_ms": get("Q"), "replid": get_str(), "replid2": get_str(), "offset": get("q"),
             "offset2": get("q"), "clears": get("q"), "marker": get_str(), "proof": get_str(), "slots": {}}
        for _ in range(get("I")):
            s = get("H")
            m["slots"][s] = get("q")
        masters.append(m)
    return masters


def fresh_snapshots(a, cluster) -> list[dict]:
    """Waits until every master's saved snapshot was begun after now; checks the file's shape."""
    since = time.monotonic() * 1000 + 1000  # a snapshot that ends a second later began after now

    def fresh():
        ms = read_snapshots(a.segment + ".repair")
        return ms if ms and len(ms) == 3 and all(m["mono_ms"] > since for m in ms) else None

    ms = wait_for(fresh, 20, "a snapshot of every master, saved")
    assert stat.S_IMODE(os.stat(a.segment + ".repair").st_mode) == 0o600
    # One entry per master; their slots partition the 16384.
    owned = [s for m in ms for s in m["slots"]]
    assert len(owned) == len(set(owned)) == SLOTS
    for m in ms:
        assert m["home"] in m["slots"] and m["replid"] and m["marker"] and m["proof"]
        node = cluster.owner(m["home"])
        assert all(cluster.owner(s).port == node.port for s in (min(m["slots"]), max(m["slots"])))
    return ms


def warm(a, b, cluster):
    """B writes N keys (on every master); A reads them (installed from Redis, synced) and saves fresh snapshots."""
    cb = client(b)
    for i in range(N):
        cb.set(key(i), mp(i))
    wait_flushed(b)
    ca = client(a)
    for i in range(N):
        assert ca.get(key(i)) == mp(i)
    assert all(shm(ca, key(i)) == mp(i) for i in range(N))
    fresh_snapshots(a, cluster)
    return cb


def repaired(a) -> dict:
    """Waits until each of the three masters' parts repaired and the table is served; returns the status."""
    return wait_for(lambda: (lambda st: st if st["redis_repairs_total"] >= 3 and st["redis_suspended"] == 0
                             else None)(status(a)), 20, "a to repair every master's slots")


def dropped_slots(cluster, written) -> int:
    """What the repairs drop: the written keys' slots (B's snapshots and proofs bump no counter), and the slots
    without a counter (no key of this test there: nothing to drop)."""
    counted = {cluster.slot(P + key(i)) for i in range(N)}
    return SLOTS - len(counted) + len({cluster.slot(P + key(i)) for i in written})


def check(a, cluster, written: dict[int, int]) -> None:
    """Keys in the slots written while A was down are gone from A's table (and read anew); the rest stay warm."""
    touched = {cluster.slot(P + key(i)) for i in written}
    ca = client(a)
    kept = 0
    for i in range(N):
        if cluster.slot(P + key(i)) in touched:
            assert shm(ca, key(i)) is None, i
        else:
            assert shm(ca, key(i)) == mp(i), i
            kept += 1
    assert kept > 0
    for i, v in written.items():
        assert ca.get(key(i)) == mp(v)


def hosts(host, cluster, **a_options):
    for n in cluster.masters():
        n.client().flushall()
    return host("a", url=cluster.url, **a_options), host("b", url=cluster.url)


def test_a_graceful_restart_keeps_the_table_and_drops_only_the_slots_written_meanwhile(host, cluster):
    a, b = hosts(host, cluster)
    cb = warm(a, b, cluster)
    assert a.stop() == 0
    written = {3: 1003, 77: 1077, 121: 1121}
    for i, v in written.items():
        cb.set(key(i), mp(v))
    wait_flushed(b)
    a.start()
    st = status(a)["start"]
    assert st["warm"] is True and st["kept"] == N, st
    wait_coherent(a, timeout=20)
    st = repaired(a)
    assert st["redis_repairs_full_total"] == 0, st
    assert st["redis_repair_slots_dropped_total"] == dropped_slots(cluster, written), st
    check(a, cluster, written)
    assert a.log().count("entries from before the slot map are not trusted") == 1  # the first start's only


def test_kill9_past_the_grace_stays_suspended_until_every_master_repaired(host, cluster):
    grace_ms = 4000
    a, b = hosts(host, cluster, redis_stale_grace_ms=grace_ms)
    cb = warm(a, b, cluster)
    a.kill()
    written = {10: 2010, 99: 2099}
    for i, v in written.items():
        cb.set(key(i), mp(v))
    wait_flushed(b)
    time.sleep(grace_ms / 1000 + 0.2)  # the saved snapshots are now older than the grace
    a.start()
    st = status(a)["start"]
    assert st["warm"] is True and st["kept"] == N, st
    st = repaired(a)
    assert st["redis_repairs_full_total"] == 0, st
    assert st["redis_repair_slots_dropped_total"] == dropped_slots(cluster, written), st
    log = a.log()
    assert "stays suspended until the repair of 3 master(s)" in log, log
    assert "every master's slots are repaired or dropped" in log, log
    check(a, cluster, written)


def test_a_master_restarted_empty_drops_its_slots_only(host, cluster):
    a, b = hosts(host, cluster)
    warm(a, b, cluster)
    assert a.stop() == 0
    victim = cluster.masters()[-1]
    on_victim = {i for i in range(N) if cluster.node_of(P + key(i)).port == victim.port}
    assert 0 < len(on_victim) < N
    victim.kill()
    victim.start()  # no AOF: back empty (its slots and identity from nodes.conf), its proof key gone
    wait_for(cluster.ok, 30, "the cluster to be ok again")
    a.start()
    assert status(a)["start"]["kept"] == N
    st = repaired(a)
    assert st["redis_repairs_full_total"] == 1, st  # the victim's part only
    ca = client(a)
    for i in range(N):
        if i in on_victim:
            assert shm(ca, key(i)) is None, i
        else:
            assert shm(ca, key(i)) == mp(i), i
