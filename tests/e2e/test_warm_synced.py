"""A warm restart keeps what this host wrote once Redis acknowledged it: the
write-behind's acknowledgement (its MULTI/EXEC with the slot counter) marks
the local item synced, if the key still holds that same write. After kill -9,
the acknowledged keys are adopted and served from shared memory; the keys
whose write was still queued (Redis held with SIGSTOP) are dropped, and so is
a key whose acknowledged value a newer, still queued local write replaced;
host A then reads those from Redis, as host B does.
"""
from __future__ import annotations

import os
import time

from support.probe import Probe
from support.rawproto import GET, OK, SET, RawConn, mp
from support.tier import status, wait_coherent, wait_flushed, wait_for


def sets(d, items: dict) -> None:
    with RawConn(d.socket) as c:
        for k, v in items.items():
            assert c.call(SET, k, v, None)[1] == OK


def gets(d, keys) -> dict:
    with RawConn(d.socket) as c:
        return {k: (r[2] if r[1] == OK else None) for k in keys for r in [c.call(GET, k)]}


def test_acknowledged_local_writes_survive_kill9_queued_ones_are_dropped(host, redis_server):
    a, b = host("a"), host("b")
    acked = {b"acked%d" % i: mp(f"a{i}:" + "x" * i) for i in range(30)}
    sets(a, acked)
    wait_flushed(a)  # every one acknowledged by Redis
    snap = a.segment + ".repair"
    written = time.time()
    # The counter snapshot adoption reconciles against, taken after those writes.
    wait_for(lambda: os.path.exists(snap) and os.stat(snap).st_mtime > written + 0.05, 15,
             "a snapshot saved after the writes")
    redis_server.pause()  # from here on host A's writes stay queued
    queued = {b"queued%d" % i: mp(f"q{i}") for i in range(10)}
    sets(a, queued)
    sets(a, {b"acked0": mp("newer, never acknowledged")})
    assert status(a)["redis_queue_depth"] == 11
    a.kill()  # the queue is lost with the process
    a.start()
    st = status(a)["start"]
    assert st["warm"] is True, st
    assert st["kept"] == 29, st  # acked1..acked29
    assert st["dropped"]["unsynced"] == 11, st  # queued0..9 and acked0's newer write
    with Probe() as p:
        p.open(a.segment)
        assert p.get("acked5") == "hit"  # adopted and served, within the grace, until the repair
        assert p.get("queued5") == "miss"
        redis_server.resume()
        wait_coherent(a)
        wait_for(lambda: status(a)["redis_repairs_total"] >= 1, 15, "the repair")
        assert status(a)["redis_repairs_full_total"] == 0
        for k in acked:
            if k != b"acked0":
                assert p.get(k.decode()) == "hit", k  # kept, served from shared memory
        for k in queued:
            assert p.get(k.decode()) == "miss", k
        assert p.get("acked0") == "miss"
    # The queued writes sat in the paused Redis's socket buffer: Redis may
    # still apply them. Either way host A now serves what Redis has, as B does.
    keys = list(acked) + list(queued)
    seen_a, seen_b = gets(a, keys), gets(b, keys)
    assert seen_a == seen_b
    assert all(seen_a[k] == v for k, v in acked.items() if k != b"acked0")
