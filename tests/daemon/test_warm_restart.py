"""Warm restarts: a restarted nearcached adopts the table the previous one left
(after SIGTERM and after kill -9), readers keep serving through a quick
restart, and whatever adoption cannot vouch for is dropped with its reason in
STATUS. Geometry changes and warm_restart=false start cold, in place.

Short versions run by default; NEARCACHE_WARM_LONG=1 runs the kill -9 loop
under write load for many rounds.
"""
from __future__ import annotations

import os
import random
import time

import pytest

from helpers import Probe, kill_under_flood, served_from_model, small_tmpfs, two_hosts_on_redis, wait_snapshot
from support.nearcached import Daemon
from support.rawproto import DELETE, GET, OK, SET, RawConn, mp
from support.wait import wait_for

LONG = os.environ.get("NEARCACHE_WARM_LONG") == "1"


def status(d: Daemon) -> dict:
    with RawConn(d.socket) as c:
        return c.status()


def fill(d: Daemon, n: int, tag: str = "v") -> dict:
    with RawConn(d.socket) as c:
        model = {}
        for i in range(n):
            k, v = b"k%d" % i, mp(f"{tag}{i}:" + "x" * (i % 300))
            assert c.call(SET, k, v, None)[1] == OK
            model[k] = v
        return model


def read_all(d: Daemon, model: dict) -> dict:
    with RawConn(d.socket) as c:
        return {k: (r[2] if r[1] == OK else None) for k in model for r in [c.call(GET, k)]}


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restart_keeps_entries(tmp_path, how):
    d = Daemon(tmp_path)
    model = fill(d, 500)
    with RawConn(d.socket) as c:
        assert c.call(SET, b"ttl", mp("soon"), 60000)[1] == OK
        g1 = c.status()["generation"]
    d.stop() if how == "sigterm" else d.kill()
    d.start()
    st = status(d)
    assert st["start"]["warm"] is True, st["start"]
    assert st["start"]["clean_shutdown"] is (how == "sigterm")
    assert st["start"]["kept"] == 501 and st["start_kept_entries"] == 501
    assert st["start_warm"] == 1 and st["start_dropped_entries"] == 0
    assert st["generation"] == g1 and st["entries"] == 501
    assert read_all(d, model) == model
    with RawConn(d.socket) as c:
        assert c.call(GET, b"ttl")[2] == mp("soon")
    assert "warm start: adopted the table" in d.log()
    d.stop()




def test_kill9_under_write_load_adopts_only_acknowledged_values(tmp_path):
    """kill -9 at random moments while a separate process floods sets: every adopted
    entry is byte-identical to the last acknowledged value of its key (or the one in
    flight at the kill), or absent; never corrupt."""
    d = Daemon(tmp_path, segment_size="4M", value_limit="64K")  # small: the logs wrap and evict
    rng = random.Random(os.getpid())
    model: dict[str, set] = {}  # key -> values it may hold
    rounds = 25 if LONG else 3
    kept_total = 0
    for rnd in range(rounds):
        kill_under_flood(d, model, rnd * 10**7, rng)
        d.start()
        st = status(d)["start"]
        assert st["warm"] is True and st["clean_shutdown"] is False, st
        kept_total += st["kept"]
        served_from_model(d, model)
    assert kept_total > 0
    d.stop()


def test_a_running_reader_keeps_hitting_through_a_quick_restart(tmp_path):
    d = Daemon(tmp_path)
    model = fill(d, 300)
    keys = [k.decode() for k in model]
    with Probe() as p:
        assert p.open(d.segment)["rc"] == "0"
        before = sum(p.get(k) == "hit" for k in keys) / len(keys)
        assert before == 1.0
        d.stop()
        d.start()
        time.sleep(0.5)
        after = sum(p.get(k) == "hit" for k in keys) / len(keys)
        assert after >= 0.95 * before, after
        assert p.alive()
    # A daemon that stays down longer than the grace still makes readers stop.
    d2 = Daemon(tmp_path / "short", heartbeat_interval_ms=50, heartbeat_grace_ms=300)
    fill(d2, 10)
    with Probe() as p:
        p.open(d2.segment)
        d2.stop()
        assert p.get("k1") == "hit"  # within the grace
        wait_for(lambda: p.get("k1") == "unavailable", 5, "the heartbeat to go stale")
    d.stop()


def test_the_heartbeat_runs_through_the_redis_drain(tmp_path):
    """SIGTERM with a write-behind queue that cannot drain (Redis unreachable): the
    drain lasts redis_drain_timeout_ms, longer than the grace; readers keep serving."""
    d = Daemon(tmp_path, redis_url="redis://127.0.0.1:9", redis_drain_timeout_ms=2500,
               heartbeat_interval_ms=50, heartbeat_grace_ms=500, redis_reconnect_min_ms=20)
    with RawConn(d.socket) as c:
        c.call(SET, b"a", mp(1), None)  # queued; Redis is not there
    with Probe() as p:
        p.open(d.segment)
        d.proc.send_signal(15)
        t0 = time.monotonic()
        alive_during = []
        while d.proc.poll() is None and time.monotonic() - t0 < 10:
            alive_during.append(p.alive())
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert d.proc.wait(10) == 0
    assert took > 1.0, took  # the drain really outlasted the grace
    assert all(alive_during), alive_during.count(False)


@pytest.mark.parametrize("change, reason, in_place", [
    ({"segment_size": "24M"}, "segment size changed", False),
    ({"expected_item_size": "1024"}, "bucket count", True),
    ({"value_limit": "64K"}, "value_limit changed", True),
    ({"warm_restart": "false"}, "warm_restart is off", True),
])
def test_what_cannot_be_adopted_starts_cold_and_says_why(tmp_path, change, reason, in_place):
    d = Daemon(tmp_path)
    fill(d, 50)
    ino = os.stat(d.segment).st_ino
    g1 = status(d)["generation"]
    d.restart(**change)
    st = status(d)
    assert st["start"]["warm"] is False and st["start_warm"] == 0
    assert reason in st["start"]["reason"], st["start"]
    assert st["start"]["reused_in_place"] is in_place
    assert (os.stat(d.segment).st_ino == ino) is in_place
    # A new size copies the entries into the new table (test_resize_restart.py).
    assert st["entries"] == (50 if "segment_size" in change else 0) and st["generation"] > g1
    assert st["start"]["copied"] is ("segment_size" in change)
    assert "cold start: " + reason in d.log() or reason in d.log()
    d.stop()


def test_restart_on_a_tmpfs_with_room_for_one_segment(tmp_path):
    with small_tmpfs(tmp_path) as mnt:
        d = Daemon(tmp_path, segment=str(mnt / "nc.seg"), segment_size="16M")
        model = fill(d, 100)
        d.kill()
        d.start()  # warm: the same object
        assert status(d)["start"]["warm"] is True
        assert read_all(d, model) == model
        with Probe() as p:  # a reader maps it while the next start is cold
            p.open(d.segment)
            d.restart(expected_item_size="512")
            st = status(d)["start"]
            assert st["warm"] is False and st["reused_in_place"] is True, st
            assert not p.alive()
        # A size change needs a new object: with no reader mapping the old one,
        # the old name goes first and the new one fits.
        d.restart(segment_size="12M")
        st = status(d)["start"]
        assert st["warm"] is False and "removed first to make room" in st["reason"], st
        d.stop()


def test_redis_tier_drops_unsynced_and_reconciles_what_came_from_redis(tmp_path):
    """Entries written on this host are kept once Redis acknowledged their write
    (tests/e2e/test_warm_synced.py: queued ones are dropped); entries read from
    Redis too. The restart is a gap that began at the previous daemon's last
    slot-counter snapshot: within redis_stale_grace_ms of it they are served until
    the repair against it, which drops the slots another host wrote while this one
    was down; past it they are suspended until the repair; without a snapshot they
    are dropped."""
    from support.tier import wait_coherent, wait_flushed

    with two_hosts_on_redis(tmp_path) as (r, a, b):
        model = fill(b, 40)  # written through host b: host a reads them from Redis
        wait_flushed(b)
        local = fill(a, 10, tag="local")  # k0..k9 rewritten on host a itself
        wait_flushed(a)
        model.update(local)
        assert read_all(a, model) == model
        # A snapshot taken after those writes (one every 10 x redis_heartbeat_ms).
        snap = wait_snapshot(a, time.time(), "a snapshot saved after the writes")
        a.kill()
        with RawConn(b.socket) as c:  # while a is down, another host rewrites one key
            assert c.call(SET, b"k20", mp("changed"), None)[1] == OK
        wait_flushed(b)
        r.pause()  # no repair until the probe has seen the adopted table
        a.start()
        st = status(a)["start"]
        assert st["warm"] is True, st
        assert st["dropped"]["unsynced"] == 0 and st["kept"] == 40, st  # k0..k9: acknowledged
        with Probe() as p:
            p.open(a.segment)
            assert p.get("k30") == "hit"  # within the grace: served until the repair
            assert status(a)["redis_suspended"] == 0
            r.resume()
            wait_coherent(a)
            wait_for(lambda: status(a)["redis_repairs_total"] >= 1, 10, "the repair")
            after = status(a)
            assert after["redis_repairs_total"] >= 1 and after["redis_repairs_full_total"] == 0, after
            assert after["entries"] == 39  # only k20's slot was written meanwhile
            assert p.get("k30") == "hit"  # kept, and served from shared memory again
            assert p.get("k20") == "miss"
        model[b"k20"] = mp("changed")
        assert read_all(a, model) == model  # k20: the new value, never the adopted one
        a.kill()
        # A snapshot older than the grace: the adopted table waits for the repair.
        r.pause()
        a.options["redis_stale_grace_ms"] = "1"
        a.start()
        with Probe() as p:
            p.open(a.segment)
            assert status(a)["start"]["kept"] > 0
            assert p.get("k30") == "suspended"  # not served before the repair
            r.resume()
            wait_coherent(a)
            wait_for(lambda: status(a)["redis_suspended"] == 0, 10, "the repair")
            assert p.get("k30") == "hit"
        a.kill()
        del a.options["redis_stale_grace_ms"]
        os.unlink(snap)  # no snapshot: nothing from Redis can be vouched for
        a.start()
        st = status(a)["start"]
        assert st["kept"] == 0 and st["dropped"]["unreconciled"] > 0, st
        assert read_all(a, model) == model
