"""Redis down at start, killed mid-traffic, stopped (SIGSTOP), slow to resolve;
the invalidation link lost; SIGTERM with a full queue. Through all of it the
host serves hits from shared memory, accepts sets, answers every call within
its timeout, reconnects with backoff and jitter, and hands Redis everything
it acknowledged once Redis is back (or reports, exactly, what it dropped).
"""
from __future__ import annotations

import os
import re
import signal
import time

import msgpack

from support.probe import Probe
from support.nearcached import BUILD
from support.rawproto import ADD, GET, INCR, LEASE, LEASED, NOT_FOUND, OK, SET, RawConn, mp
from support.redis_proxy import HoldingProxy
from support.tier import client, shm, status, wait_coherent, wait_flushed, wait_for

P = b"nearcache:"


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    out = fn(*args, **kwargs)
    return out, time.monotonic() - t0


def attempts(log: str, link: str) -> list[tuple[int, int]]:
    """(delay ms, consecutive failures) of each reconnect the daemon scheduled for one link."""
    return [(int(d), int(n)) for d, n in
            re.findall(rf"redis {link}: next attempt in (\d+) ms \((\d+) consecutive", log)]


def test_redis_down_at_start_then_back(host, redis_servers):
    late = redis_servers("late", start=False)
    a = host("a", url=late.url, wait=False, redis_reconnect_min_ms=20, redis_reconnect_max_ms=160,
             redis_reconnect_jitter_percent=50)
    c = client(a, strict=True)
    st = status(a)
    assert st["redis_connected"] == 0 and st["redis_degraded"] == 1
    assert "No such file" in st["redis"]["last_error"] or "connect" in st["redis"]["last_error"]
    durations = []
    for i in range(200):
        _, t = timed(c.set, f"k{i}", mp(i))
        durations.append(t)
        assert shm(c, f"k{i}".encode()) == mp(i)  # a hit from shared memory at once
    _, t = timed(c.get, "never-set")
    durations.append(t)
    assert c.add("added", mp("here")) is True  # redis_down = local: decided on this host
    assert c.incr("k5", 10) == 15
    durations.append(timed(c.add, "added", mp("again"))[1])
    assert max(durations) < 0.2, max(durations)
    time.sleep(1.0)  # a second of reconnect attempts, whose backoff is checked below
    st = status(a)
    assert st["redis_local_decisions_total"] == 3
    assert st["redis_queue_depth"] == 201  # 200 sets + the ADD; the INCR coalesced into k5's SET
    # Reconnects back off (doubling up to the ceiling) with jitter.
    delays = attempts(a.log(), "data")
    assert 3 <= len(delays) <= 20, delays
    for d, n in delays:
        nominal = min(20 << min(n - 1, 20), 160)
        assert nominal // 2 - 1 <= d <= nominal, (d, n)
    assert any(d < min(20 << min(n - 1, 20), 160) * 0.95 for d, n in delays), f"no jitter in {delays}"
    late.start()
    try:
        wait_coherent(a)
        wait_flushed(a)
        r = late.client()
        assert [r.get(P + f"k{i}".encode()) for i in range(200) if i != 5] == [mp(i) for i in range(200) if i != 5]
        assert r.get(P + b"k5") == mp(15) and r.get(P + b"added") == mp("here")
        assert status(a)["redis_degraded"] == 0
        assert c.get("k7") == mp(7)
    finally:
        a.stop()
        late.kill()


def test_redis_killed_and_restarted_during_100k_sets(host, redis_server):
    """Everything acknowledged that fit in the queue reaches Redis; the rest is
    counted as dropped, exactly, and is not served by this host either."""
    a = host("a", redis_queue_max_entries=20000)
    reader = client(a)
    n, batch = 100_000, 1000
    with RawConn(a.socket) as c:
        for start in range(0, n, batch):
            if start == 30_000:
                redis_server.kill()
            if start == 45_000:  # Redis is dead: what was set since is served from shared memory
                assert status(a)["redis_connected"] == 0
                assert all(shm(reader, b"s%d" % i) == mp(i) for i in range(40_000, 41_000))
            if start == 70_000:
                redis_server.start()
            for i in range(start, start + batch):
                c.send(SET, b"s%d" % i, mp(i), None)
            replies = c.recv_n(batch)
            assert all(rep[1] == OK for rep in replies)
    st = wait_flushed(a, timeout=30)
    dropped = st["redis_queue_dropped_total"]
    assert dropped > 0  # the outage (and the reconnection after it) overflowed the queue
    r = redis_server.client()
    missing = []
    for start in range(0, n, 5000):
        keys = [P + b"s%d" % i for i in range(start, start + 5000)]
        for i, v in zip(range(start, start + 5000), r.mget(keys)):
            if v is None:
                missing.append(i)
            else:
                assert v == mp(i)
    assert len(missing) == dropped
    assert min(missing) >= 30_000  # nothing from before the kill
    # This host does not serve what the shared tier never got.
    with RawConn(a.socket) as c:
        for i in missing[:200]:
            assert c.call(GET, b"s%d" % i)[1] == NOT_FOUND
    assert st["redis_queue_failed_total"] == 0
    assert "write-behind queue full" in a.log()


def test_redis_stopped_calls_stay_within_their_timeouts(host, redis_server):
    a = host("a", redis_wait_ms=200, redis_command_timeout_ms=400, redis_connect_timeout_ms=400)
    c = client(a, strict=True, timeout=1.0)  # strict: a timeout would raise
    c.set("warm", mp("w"))
    wait_flushed(a)
    redis_server.pause()
    try:
        durations = {}
        durations["hit"] = timed(c.get, "warm")[1]  # from shared memory
        # Redis answers nothing: within 3 heartbeats (or a command timeout) the
        # invalidation link is declared lost; the host goes on serving its table
        # for redis_stale_grace_ms (test_repair.py: what happens after it).
        wait_for(lambda: status(a)["redis_coherent"] == 0, 5, "the invalidation link to be declared lost")
        assert shm(c, b"warm") == mp("w")
        for name, call in [("set", lambda: c.set("during", mp(1))), ("miss", lambda: c.get("unknown")),
                           ("add", lambda: c.add("add-during", mp(2))), ("set2", lambda: c.set("counter", mp(0))),
                           ("incr", lambda: c.incr("counter", 1)), ("lease", lambda: c.lease("lease-during", 5, 0.5))]:
            result, durations[name] = timed(call)
            if name == "miss":
                assert result is None
            if name == "add":
                assert result is True  # Redis did not decide in time: redis_down = local
            if name == "incr":
                assert result == 1
            if name == "lease":
                assert result.token is not None
        for _ in range(20):
            durations["set"] = max(durations["set"], timed(c.set, "more", mp(3))[1])
            assert shm(c, b"during") == mp(1) and shm(c, b"more") == mp(3)  # hits go on
        assert max(durations.values()) < 0.8, durations
        assert durations["hit"] < 0.1 and durations["set"] < 0.1, durations
        assert status(a)["redis_local_decisions_total"] >= 3
    finally:
        redis_server.resume()
    wait_coherent(a)
    wait_flushed(a)
    r = redis_server.client()
    assert r.get(P + b"during") == mp(1) and r.get(P + b"more") == mp(3) and r.get(P + b"add-during") == mp(2)
    assert r.get(P + b"counter") == mp(1)


def test_sigterm_with_a_full_queue_flushes_before_exit(host, redis_server):
    a = host("a", redis_drain_timeout_ms=10000, redis_command_timeout_ms=300, redis_connect_timeout_ms=300)
    redis_server.pause()
    with RawConn(a.socket) as c:
        for start in range(0, 20000, 1000):
            for i in range(start, start + 1000):
                c.send(SET, b"q%d" % i, mp(i), None)
            assert all(rep[1] == OK for rep in c.recv_n(1000))
    assert status(a)["redis_queue_depth"] == 20000
    a.signal(signal.SIGTERM)
    time.sleep(0.5)  # the daemon drains while Redis is still stopped ...
    assert a.proc.poll() is None
    redis_server.resume()  # ... and gets it all to Redis once it answers
    assert a.proc.wait(15) == 0
    r = redis_server.client()
    keys = [P + b"q%d" % i for i in range(20000)]
    assert r.mget(keys) == [mp(i) for i in range(20000)]
    assert "write-behind queue flushed" in a.log()


def test_sigterm_when_redis_never_returns_exits_after_the_drain_deadline(host, redis_server):
    a = host("a", redis_drain_timeout_ms=800)
    redis_server.kill()
    with RawConn(a.socket) as c:
        for i in range(10):
            assert c.call(SET, b"lost%d" % i, mp(i), None)[1] == OK
    t0 = time.monotonic()
    assert a.stop() == 0
    assert 0.7 < time.monotonic() - t0 < 5
    assert "10 operation(s) not in Redis" in a.log()


def test_invalidation_link_dropped_flushes_the_host(host, redis_server):
    """redis_stale_grace_ms = 0: today's strictness (test_repair.py has the grace)."""
    a, b = host("a", redis_stale_grace_ms=0), host("b", redis_stale_grace_ms=0)
    cb = client(b)
    for i in range(500):
        cb.set(f"b{i}", mp(i))
    client(a).set("x", mp("old"))
    wait_flushed(a)
    # Read again until kept: a's write's invalidation may still be on its way to b.
    wait_for(lambda: cb.get("x") == mp("old") and shm(cb, b"x") == mp("old"), 5, "b to keep x")
    assert shm(cb, b"b1") == mp(1)
    before = status(b)
    # Kill the subscriber connections (a's and b's): invalidations may have been missed from now on.
    r = redis_server.client()
    assert r.client_kill_filter(_type="pubsub") == 2
    wait_for(lambda: status(b)["redis_coherence_lost_total"] > before["redis_coherence_lost_total"], 5,
             "b to notice the lost link")
    # Flushed: not one entry of b's table is readable from shared memory any more.
    assert all(shm(cb, f"b{i}".encode()) is None for i in range(500)) and shm(cb, b"x") is None
    wait_coherent(a, b)
    client(a).set("x", mp("new"))
    wait_flushed(a)
    wait_for(lambda: cb.get("x") == mp("new"), 5, "b to read the new value")
    assert cb.get("b7") == mp(7)  # its own writes come back from Redis
    st = status(b)
    assert st["redis_local_flushes_total"] >= before["redis_local_flushes_total"] + 1


def test_a_stuck_invalidation_connection_is_detected_and_flushed(host, redis_server, tmp_path):
    """The subscriber connection stays open but delivers nothing (as a half-open
    TCP connection would): the heartbeat notices within 3 periods, the host
    flushes its table and reconnects; the write it missed is never served."""
    a = host("a")
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        b = host("b", url=proxy.url, redis_heartbeat_ms=100, redis_stale_grace_ms=0)
        ca, cb = client(a), client(b)
        ca.set("x", mp("old"))
        wait_flushed(a)
        # A read-through is kept only when no invalidation of its key arrives
        # meanwhile: a's own write's may still be on its way to b. Read again.
        wait_for(lambda: cb.get("x") == mp("old") and shm(cb, b"x") == mp("old"), 5, "b to keep x")
        assert proxy.hold_where(b"SUBSCRIBE") == 1  # b's invalidation connection goes silent
        t0 = time.monotonic()
        ca.set("x", mp("new"))  # its invalidation never reaches b
        wait_for(lambda: shm(cb, b"x") != mp("old"), 5, "b to flush the value it may have missed")
        assert time.monotonic() - t0 < 1.5
        assert cb.get("x") == mp("new")
        wait_coherent(b)
        assert cb.get("x") == mp("new")
        assert "no heartbeat on the invalidation connection" in b.log()


def test_a_host_name_that_resolves_slowly_holds_up_nothing(host, redis_servers):
    """The resolver blocks for 3 s (LD_PRELOAD shim); meanwhile the heartbeat
    advances, shared-memory hits and sets go on, and then the link comes up."""
    shim = BUILD / "tests" / "support" / "libslow_resolver.so"
    r = redis_servers("tcp", tcp=True)
    d = host("a", url=f"redis://redis.slow.nearcache.test:{r.port}", fast=False, start=False,
             redis_connect_timeout_ms=500, redis_reconnect_min_ms=50, redis_reconnect_max_ms=200,
             heartbeat_interval_ms=50, heartbeat_grace_ms=400)
    d.start(env={"LD_PRELOAD": str(shim), "NEARCACHE_SLOW_RESOLVE_MS": "3000",
                 "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")})
    c = client(d, strict=True)
    c.set("local", mp(1))
    t_end = time.monotonic() + 2.0
    worst = 0.0
    with Probe() as probe:
        probe.open(d.segment)
        while time.monotonic() < t_end:
            assert probe.alive()  # heartbeat fresher than 400 ms, all along
            assert probe.get("local") == "hit"
            worst = max(worst, timed(c.set, "during", mp(2))[1])
            assert shm(c, b"during") == mp(2)
            time.sleep(0.01)  # paced: some 200 rounds in the 2 s the resolver blocks
    st = status(d)
    assert st["redis_connected"] == 0
    assert st["redis"]["state"] in ("resolving", "reconnecting")
    assert "resolving redis.slow.nearcache.test" in st["redis"]["last_error"]
    # The resolver is 3 s late; nothing on the loop waited for it.
    assert worst < 0.2 and st["loop_lag_max_ms"] < 200, (worst, st["loop_lag_max_ms"])
    wait_coherent(d, timeout=15)
    wait_flushed(d)
    assert r.client().get(P + b"during") == mp(2)
    assert d.stop() == 0


def test_password_right_wrong_and_from_a_file(host, redis_servers, tmp_path):
    r = redis_servers("pw", password="s3cret-pw")
    ok = host("ok", url=r.url, wait=False, fast=False)
    wait_coherent(ok)
    assert status(ok)["redis"]["url"] == f"unix://:***@{r.socket}"
    assert ok.stop() == 0

    bad = host("bad", url=r.unix_url(":wrong-pw"), wait=False, fast=False, redis_reconnect_min_ms=50)
    st = wait_for(lambda: (lambda s: s if s["redis"]["last_error"] else None)(status(bad)), 5, "an error")
    assert "AUTH failed" in st["redis"]["last_error"] and "WRONGPASS" in st["redis"]["last_error"]
    assert st["redis_connected"] == 0
    assert re.search(r"redis data: .*AUTH failed: WRONGPASS", bad.log())
    assert "wrong-pw" not in bad.log() and "wrong-pw" not in str(st)
    assert bad.stop() == 0

    pw = tmp_path / "redis.password"
    pw.write_text("s3cret-pw\n")
    pw.chmod(0o640)  # readable by the group: refused
    refused = host("refused", url=f"unix://{r.socket}", start=False, fast=False,
                   redis_password_file=str(pw))
    import subprocess

    out = subprocess.run(refused.args(), capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "mode 0640" in out.stdout + out.stderr

    pw.chmod(0o600)
    conf = tmp_path / "nc.conf"
    conf.write_text(f"redis_password_file = {pw}\n")
    f = host("file", url=f"unix://{r.socket}", wait=False, fast=False, config=str(conf))
    wait_coherent(f)
    # Rotate the password: the new file content is used from the next connection.
    pw.write_text("rotated-pw\n")
    r.client().config_set("requirepass", "rotated-pw")
    f.signal(signal.SIGHUP)
    wait_for(lambda: "redis password changed" in f.log(), 5, "the reload")
    r.password = "rotated-pw"
    r.client().client_kill_filter(_type="normal", skipme=True)
    r.client().client_kill_filter(_type="pubsub")
    wait_for(lambda: status(f)["redis_connects_total"] >= 2, 5, "a reconnect")
    wait_coherent(f)
    assert "rotated-pw" not in f.log() and "s3cret-pw" not in f.log()
    assert f.stop() == 0


def test_redis_down_error_policy_answers_unavailable(host, redis_servers, caplog):
    late = redis_servers("never", start=False)
    a = host("a", url=late.url, wait=False, redis_down="error", redis_drain_timeout_ms=100)
    with RawConn(a.socket) as c:
        assert c.call(SET, b"k", mp(1), None)[1] == OK  # writes are still accepted and queued
        assert c.call(GET, b"k")[2] == mp(1)
        rep = c.call(ADD, b"n", mp(1), None)
        assert rep[1] == 26 and "redis_down = error" in rep[2]  # UNAVAILABLE
        assert c.call(INCR, b"k", 1)[1] == 26
        assert c.call(LEASE, b"l", 1000, 0)[1] == 26
    st = status(a)
    assert st["redis_degraded"] == 0 and st["redis_local_decisions_total"] == 0
    # The Python client fails open on it, and says what happened: not "unreachable".
    py = client(a, strict=False)
    with caplog.at_level("WARNING", logger="nearcache"):
        assert py.add("n", mp(1)) is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("answers but cannot serve this" in m for m in messages), messages
    assert not any("unreachable" in m for m in messages), messages


def test_redis_decided_requests_keep_the_connection_s_order(host, redis_server):
    """A pipelined INCR then GET: the GET waits for the INCR (decided in Redis)."""
    a = host("a")
    with RawConn(a.socket) as c:
        c.call(SET, b"n", mp(10), None)
        ids = [c.send(INCR, b"n", 1) for _ in range(50)] + [c.send(GET, b"n")]
        replies = {rep[0]: rep for rep in c.recv_n(51)}
        assert [replies[i][2] for i in ids[:-1]] == list(range(11, 61))
        assert replies[ids[-1]][2] == mp(60)
        # A LEASE that waits does not hold the connection back.
        other = RawConn(a.socket)
        assert other.call(LEASE, b"held", 5000, 0)[1] == LEASED
        w = c.send(LEASE, b"held", 5000, 2000)
        assert c.call(GET, b"n")[2] == mp(60)
        other.call(SET, b"held", mp("v"), None)
        rep = c.recv()
        assert rep[0] == w and rep[1:3] == [OK, mp("v")]
        other.close()
    assert msgpack.unpackb(redis_server.client().get(P + b"n")) == 60


def test_an_acl_user_with_only_the_documented_permissions(host, redis_servers, tmp_path):
    """The permissions doc/redis.md lists are enough for everything the daemon does."""
    r = redis_servers("acl", password="admin-pw")
    admin = r.client()
    admin.execute_command(
        "ACL", "SETUSER", "nc", "on", ">nc-pw", "~*", "&__redis__:invalidate", "&__nearcache__:heartbeat:*",
        "+ping", "+select", "+client|id", "+client|tracking", "+subscribe", "+publish", "+get", "+pttl", "+strlen", "+set",
        "+unlink", "+pexpire", "+persist", "+exists", "+script|load", "+evalsha", "+eval", "+scan", "+del",
        "+multi", "+exec", "+incr", "+mget", "+info")
    pw = tmp_path / "pw"
    pw.write_text("nc-pw\n")
    pw.chmod(0o600)
    a, b = (host(name, url=f"unix://nc@{r.socket}?db=1", wait=False, fast=False, redis_password_file=str(pw))
            for name in ("a", "b"))
    wait_coherent(a, b)
    with RawConn(a.socket) as ca, RawConn(b.socket) as cb:
        assert ca.call(SET, b"k", mp(1), None)[1] == OK
        assert ca.call(ADD, b"n", mp(5), None)[1] == OK
        assert ca.call(INCR, b"n", 2)[2] == 7
        assert ca.call(LEASE, b"l", 5000, 0)[1] == LEASED
        assert ca.call(SET, b"l", mp("v"), None)[1] == OK
        wait_flushed(a)
        assert cb.call(GET, b"k")[2] == mp(1) and cb.call(GET, b"l")[2] == mp("v")
        assert cb.call(13, b"n")[1] == OK  # HAS_KEY
        assert cb.call(10, b"n", 60_000)[1] == OK  # TOUCH
        assert cb.call(14, b"")[1] == OK  # CLEAR
        wait_flushed(b)
        for d in (a, b):
            st = status(d)
            assert st["redis_queue_failed_total"] == 0 and st["redis_atomic_errors_total"] == 0, st
            assert "NOPERM" not in d.log()
    # Only the tier's bookkeeping is left (slot counters, flush marker: outside the prefix).
    assert all(k.startswith(b"\0nc") and not k.startswith(b"\0nclease") for k in r.client(db=1).keys())
    assert a.stop() == 0 and b.stop() == 0
