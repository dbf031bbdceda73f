"""A restart with another segment_size cannot adopt the table, but copies its
entries into the new one when the filesystem holds both at once (shm/copy.cc):
values and TTLs carry over, a running reader moves to the new table as after
any new table (the old one is stopped, the client re-opens by name), STATUS
says `copied` with the counts. A smaller table keeps what fits; a filesystem
too small for two tables starts cold, and still starts.
"""
from __future__ import annotations

import os
import random
import time

from helpers import Probe, kill_under_flood, served_from_model, small_tmpfs, two_hosts_on_redis, wait_snapshot
from support.nearcached import Daemon
from support.rawproto import OK, SET, RawConn, mp
from support.wait import wait_for


def status(d: Daemon) -> dict:
    with RawConn(d.socket) as c:
        return c.status()


def fill(d: Daemon, n: int, size: int = 300, ttl_every: int = 0) -> dict:
    """n keys of about `size` bytes; every ttl_every-th with a 10-minute TTL."""
    with RawConn(d.socket) as c:
        model = {}
        for i in range(n):
            k, v = b"k%d" % i, mp(f"v{i}:" + "x" * (i % size))
            ttl = 600000 if ttl_every and i % ttl_every == 0 else None
            assert c.call(SET, k, v, ttl)[1] == OK
            model[k] = v
        return model


def client(d: Daemon):
    from nearcache import Client

    c = Client(d.socket)
    assert c.ping()
    return c


def shm_hits(c, keys) -> int:
    from nearcache.client import HIT

    return sum(c.segment.get(k)[0] == HIT for k in keys)


def test_a_bigger_segment_keeps_every_entry_and_readers_move_to_it(tmp_path):
    d = Daemon(tmp_path, segment_size="16M")
    model = fill(d, 600, ttl_every=5)
    ino = os.stat(d.segment).st_ino
    g1 = status(d)["generation"]
    running = client(d)
    assert running.get(b"k1") == model[b"k1"] and shm_hits(running, model) == len(model)
    ttl_before = running.pttl(b"k0")
    with Probe() as p:
        assert p.open(d.segment)["rc"] == "0"
        d.restart(segment_size="24M")
        assert not p.alive()  # the old table is stopped: its readers re-open
        st = status(d)
        start = st["start"]
        assert start["warm"] is False and start["copied"] is True, start
        assert start["kept"] == len(model) and sum(start["dropped"].values()) == 0, start
        assert "segment size changed" in start["reason"]
        assert st["entries"] == len(model) and st["generation"] > g1 and st["memory_total_bytes"] == 24 << 20
        assert st["start_kept_entries"] == len(model) and st["start_warm"] == 0
        assert os.stat(d.segment).st_ino != ino
        assert "the old table's entries copied into it: 600 entries kept, 0 dropped" in d.log()
        assert p.open(d.segment)["rc"] == "0"
        assert all(p.get(k.decode()) == "hit" for k in model)
    # The running client: its first lookup finds the old table stopped, asks the
    # daemon (HELLO names the new table) and maps it; hits are local again.
    assert running.get(b"k3") == model[b"k3"]
    wait_for(lambda: running.get(b"k3") == model[b"k3"] and running.segment.generation == st["generation"], 10,
             "the running client to map the new table")
    assert shm_hits(running, model) == len(model)
    assert all(running.get(k) == v for k, v in model.items())
    fresh = client(d)
    assert shm_hits(fresh, model) == len(model)
    # TTLs carry over: absolute expiries on the host's monotonic clock.
    ttl_after = fresh.pttl(b"k0")
    assert 0 < ttl_after <= ttl_before and ttl_before - ttl_after < 60000, (ttl_before, ttl_after)
    assert fresh.pttl(b"k1") == -1  # no TTL stays no TTL
    running.close()
    fresh.close()
    d.stop()


def test_a_smaller_segment_keeps_what_fits(tmp_path):
    d = Daemon(tmp_path, segment_size="16M", value_limit="64K")
    model = fill(d, 12000, size=1000)  # about 6 MB of items: a 4M table cannot hold them
    d.restart(segment_size="4M")
    st = status(d)
    start = st["start"]
    assert start["copied"] is True, start
    kept, no_room = start["kept"], start["dropped"]["no_room"]
    assert 0 < kept < len(model) and no_room > 0, start
    assert kept + no_room == len(model), start
    assert st["entries"] == kept
    c = client(d)
    served = {k: v for k in model if (v := c.get(k)) is not None}
    assert len(served) == kept
    assert all(model[k] == v for k, v in served.items())
    assert shm_hits(c, served) == kept
    c.close()
    # The copy is an ordinary table: a later restart of the same size adopts it.
    d.restart()
    assert status(d)["start"]["warm"] is True and status(d)["start"]["kept"] == kept
    d.stop()


def test_a_table_left_by_kill9_is_copied_with_the_checks_of_adoption(tmp_path):
    """kill -9 while a separate process floods sets, then a start with another
    size: every copied entry is the last acknowledged value of its key (or the
    one in flight at the kill), or absent; never corrupt."""
    d = Daemon(tmp_path, segment_size="4M", value_limit="64K")  # small: the logs wrap and evict
    rng = random.Random(os.getpid())
    model: dict[str, set] = {}  # key -> values it may hold
    for rnd, size in enumerate(["6M", "4M", "5M"]):
        kill_under_flood(d, model, rnd * 10**7, rng)
        d.options["segment_size"] = size
        d.start()
        start = status(d)["start"]
        assert start["copied"] is True and start["kept"] > 0, start
        assert served_from_model(d, model) == status(d)["entries"] == start["kept"]
    d.stop()


def test_warm_restart_off_starts_empty(tmp_path):
    d = Daemon(tmp_path, segment_size="16M")
    fill(d, 100)
    d.restart(segment_size="24M", warm_restart="false")
    st = status(d)
    assert st["start"]["copied"] is False and st["entries"] == 0, st["start"]
    assert "warm_restart is off" in st["start"]["reason"]
    d.stop()


def test_a_filesystem_too_small_for_both_starts_cold(tmp_path):
    with small_tmpfs(tmp_path, "20m") as mnt:
        d = Daemon(tmp_path, segment=str(mnt / "nc.seg"), segment_size="8M", value_limit="64K")
        try:
            model = fill(d, 300)
            d.restart(segment_size="10M")  # 8M + 10M fit in 20M: copied
            start = status(d)["start"]
            assert start["copied"] is True and start["kept"] == len(model), start
            c = client(d)
            assert shm_hits(c, model) == len(model)
            c.close()
            c.segment.close()  # a table still mapped keeps its memory (doc/segment.md)
            d.restart(segment_size="12M")  # 10M + 12M do not: the old one goes first, cold
            st = status(d)
            start = st["start"]
            assert start["copied"] is False and start["warm"] is False, start
            assert "no room for both: its entries were not copied" in start["reason"], start
            assert st["entries"] == 0 and st["memory_total_bytes"] == 12 << 20
            assert "no room for both" in d.log()
            assert sorted(os.listdir(mnt)) == ["nc.seg", "nc.seg.lock"]  # no temporary object left
        finally:
            d.stop()


def test_with_a_redis_tier_the_copy_is_repaired_like_an_adopted_table(tmp_path):
    """Entries read from Redis are copied into the new table with the previous
    daemon's snapshot of the old one, and the first repair drops the slots
    another host wrote while this one was down."""
    from support.tier import wait_coherent, wait_flushed

    with two_hosts_on_redis(tmp_path) as (r, a, b):
        model = fill(b, 40)  # written through host b: host a reads them from Redis
        wait_flushed(b)
        c = client(a)
        assert all(c.get(k) == v for k, v in model.items())
        c.close()
        c.segment.close()
        wait_snapshot(a, time.time(), "a snapshot saved after the reads")
        a.stop()
        with RawConn(b.socket) as cb:  # while a is down, another host rewrites one key
            assert cb.call(SET, b"k20", mp("changed"), None)[1] == OK
        wait_flushed(b)
        a.options["segment_size"] = "24M"
        a.start()
        st = status(a)
        assert st["start"]["copied"] is True and st["start"]["kept"] == 40, st["start"]
        wait_coherent(a)
        wait_for(lambda: status(a)["redis_repairs_total"] >= 1, 10, "the repair")
        after = status(a)
        assert after["redis_repairs_full_total"] == 0, after
        assert after["entries"] == 39  # only k20's slot was written meanwhile
        model[b"k20"] = mp("changed")
        c = client(a)
        assert all(c.get(k) == v for k, v in model.items())
        c.close()
