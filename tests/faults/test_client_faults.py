"""Faults 1, 2, 3, 5 and 7 of the client issue, reproduced with real processes:
a busy worker that never reconnected, a call that waited twice SOCKET_TIMEOUT,
fail-open leaking exceptions, a nested get_or_set waiting for itself, and the
values and timeouts LocMem takes."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time

import pytest
from django.core.cache.backends.locmem import LocMemCache

from nearcache import CacheUnavailable, Client
from nearcache.django import NearCache
from support.nearcached import Daemon


def nearcache(d, **options):
    return NearCache(d.socket if hasattr(d, "socket") else d, {"OPTIONS": options})


# -- fault 1: every client resumes within 1 s of the daemon answering again ------
def _worker(path: str, name: str, period: float, stop_file: str) -> None:
    """A forked worker writing its counter every `period` seconds until stop_file exists."""
    cache = nearcache(path)
    n = 0
    while not os.path.exists(stop_file):
        n += 1
        cache.set(name, n)
        time.sleep(period)
    os._exit(0)


def _fork_workers(path, periods, stop_file):
    pids = []
    for i, period in enumerate(periods):
        pid = os.fork()
        if pid == 0:
            try:
                _worker(path, f"w{i}", period, stop_file)
            finally:
                os._exit(1)
        pids.append(pid)
    return pids


def _resumed_within(watch: Client, names, since: float, limit: float) -> dict:
    """Seconds after `since` at which each key's value changed (None: not within limit)."""
    names = {n: f":1:{n}" for n in names}    # the keys NearCache makes (prefix:version:key)
    first = {n: watch.get(k) for n, k in names.items()}
    out = {n: None for n in names}
    while time.monotonic() - since < limit and any(v is None for v in out.values()):
        for n in names:
            if out[n] is None and watch.get(names[n]) != first[n]:
                out[n] = time.monotonic() - since
        time.sleep(0.005)
    return out


@contextlib.contextmanager
def _workers(d: Daemon, periods, tmp_path):
    """Forked workers writing w0, w1, ... every period; stopped (each must exit 0) when the block ends."""
    stop_file = str(tmp_path / "stop")
    pids = _fork_workers(d.socket, periods, stop_file)
    try:
        yield [f"w{i}" for i in range(len(periods))]
    finally:
        open(stop_file, "w").close()
        codes = [os.waitpid(p, 0)[1] for p in pids]
        d.stop()
    assert codes == [0] * len(pids)


def _assert_resumed(watch: Client, names, periods, since: float, slack: float) -> None:
    """Every worker wrote again within 1 s of `since`, plus its own period and some slack."""
    resumed = _resumed_within(watch, names, since, 3.0)
    for name, period in zip(names, periods):
        assert resumed[name] is not None and resumed[name] < 1.0 + period + slack, resumed


@pytest.mark.parametrize("stop_s", [3, 5])
def test_busy_workers_resume_after_a_stop(tmp_path, stop_s):
    d = Daemon(tmp_path, heartbeat_grace_ms=300)
    periods = [0.001, 0.01, 0.2, 0.5]
    with _workers(d, periods, tmp_path) as names:
        watch = Client(d.socket, use_shm=False, strict=True, timeout=5)
        time.sleep(0.5)
        assert None not in _resumed_within(watch, names, time.monotonic(), 2).values()
        d.signal(signal.SIGSTOP)
        time.sleep(stop_s)
        d.signal(signal.SIGCONT)
        _assert_resumed(watch, names, periods, time.monotonic(), 0.2)


def test_busy_workers_write_to_a_restarted_daemon(tmp_path):
    d = Daemon(tmp_path, heartbeat_grace_ms=300)
    periods = [0.001, 0.05, 0.3]
    with _workers(d, periods, tmp_path) as names:
        time.sleep(0.5)
        d.signal(signal.SIGSTOP)
        time.sleep(5)
        d.kill()          # kill -9 of the stopped daemon, then a new one on the same paths
        d.start()
        t0 = time.monotonic()
        watch = Client(d.socket, use_shm=False, strict=True, timeout=5)
        _assert_resumed(watch, names, periods, t0, 0.3)


# -- fault 2: one deadline for the whole call --------------------------------------
@pytest.mark.parametrize("fresh", [False, True])
def test_one_call_takes_at_most_socket_timeout(tmp_path, fresh):
    d = Daemon(tmp_path, heartbeat_grace_ms=200)
    warm = nearcache(d, SOCKET_TIMEOUT=0.5)
    warm.set("k", "v")
    d.signal(signal.SIGSTOP)
    try:
        time.sleep(0.4)  # the heartbeat is stale: the segment is not trusted, a refresh is due
        calls = {
            "get": lambda c: c.get("k"),
            "get_many": lambda c: c.get_many(["k", "x"]),
            "set": lambda c: c.set("k", 1),
            "get_or_set": lambda c: c.get_or_set("g", 1),
            "incr": lambda c: pytest.raises(ValueError, c.incr, "n"),
        }
        for name, call in calls.items():
            # A new client each time (fresh: connect + HELLO + request), so that no
            # fast-fail window from an earlier call shortens this one.
            c = nearcache(d, SOCKET_TIMEOUT=0.5, CLIENT_NAME=f"{name}{fresh}{time.monotonic()}") if fresh else warm
            if not fresh:
                c._client.policy.down_until = 0.0
            t0 = time.monotonic()
            call(c)
            took = time.monotonic() - t0
            assert took < 0.5 + 0.15, (name, took)
    finally:
        d.signal(signal.SIGCONT)
        d.stop()


def test_async_call_takes_at_most_socket_timeout(tmp_path):
    d = Daemon(tmp_path, heartbeat_grace_ms=200)
    c = nearcache(d, SOCKET_TIMEOUT=0.5)
    c.set("k", "v")

    async def run():
        await c.aget("warm")
        d.signal(signal.SIGSTOP)
        await asyncio.sleep(0.4)
        out = []
        for call in (lambda: c.aget("k"), lambda: c.aset("k", 2), lambda: c.aget_or_set("g", 3)):
            c._client.policy.down_until = 0.0
            t0 = time.monotonic()
            await call()
            out.append(time.monotonic() - t0)
        return out

    try:
        took = asyncio.run(run())
    finally:
        d.signal(signal.SIGCONT)
        d.stop()
    assert max(took) < 0.65, took


# -- fault 3: fail-open leaks no exception -----------------------------------------
def test_max_connections_refusal_is_fail_open(tmp_path):
    d = Daemon(tmp_path, max_connections=2)
    held = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket)
            held.append(s)
        time.sleep(0.1)
        c = nearcache(d)
        errors = []
        for i in range(20):
            try:
                c.set(f"k{i}", i)
                c.get(f"k{i}")
                c.get_many([f"k{i}", "x"])
                c.add("a", 1)
                c.delete("a")
                c.touch("a")
                c.has_key("a")
                c.set_many({"m": 1})
                c.delete_many(["m"])
                c.get_or_set("g", 1)
                with pytest.raises(ValueError):
                    c.incr("n")
            except Exception as e:  # noqa: BLE001 - the fault: any exception here
                errors.append(e)

        async def acalls():
            # asyncio reads the refusal frame ([nil, UNAVAILABLE]) rather than failing to send.
            for i in range(20):
                try:
                    await c.aset(f"k{i}", i)
                    await c.aget(f"k{i}")
                    await c.aget_many([f"k{i}", "x"])
                    await c.aadd("a", 1)
                    await c.ahas_key("a")
                    await c.aget_or_set("g", 1)
                    with pytest.raises(ValueError):
                        await c.aincr("n")
                except Exception as e:  # noqa: BLE001
                    errors.append(e)

        asyncio.run(acalls())
        assert errors == []
        strict = nearcache(d, STRICT=True)
        with pytest.raises(CacheUnavailable):
            strict.get("k0")
    finally:
        for s in held:
            s.close()
        d.stop()


def test_set_many_splits_by_bytes(daemon):
    c = nearcache(daemon, STRICT=True)
    data = {f"big{i}": "x" * 10_000 for i in range(1000)}   # 10 MB: more than one frame
    assert c.set_many(data) == []
    got = c.get_many(list(data))
    assert len(got) == 1000 and got["big999"] == "x" * 10_000
    c.delete_many(list(data))
    assert c.get_many(list(data)) == {}


def test_frame_too_large_is_fail_open(tmp_path, caplog):
    d = Daemon(tmp_path, max_frame_bytes="64K", value_limit="32K")
    try:
        c = nearcache(d, SYNC_WRITES=True)
        c.get("warm")
        c._client.limits["max_frame_bytes"] = 10 << 20   # a client that believes a larger limit
        data = {f"v{i}": "y" * 20_000 for i in range(10)}
        failed = c.set_many(data)                          # one 200 KB frame: FRAME_TOO_LARGE
        assert sorted(failed) == sorted(data)
        assert c.get_many(list(data)) == {}
        # Writes that do not wait: no exception either; the failure is counted and logged.
        a = nearcache(d, CLIENT_NAME="async")
        a.get("warm")
        a._client.limits["max_frame_bytes"] = 10 << 20
        assert a.set_many(data) == []
        assert a._client.flush()
        assert a.get_many(list(data)) == {}
        assert a._client._wchan.counters["failed"] >= 1
        strict = nearcache(d, STRICT=True)
        strict._client.limits["max_frame_bytes"] = 10 << 20
        with pytest.raises(Exception, match="FRAME_TOO_LARGE|max_frame"):
            strict.set_many(data)
        # With the limits HELLO reports, the same call is split and stored.
        ok = nearcache(d, STRICT=True, CLIENT_NAME="ok")
        ok.get("warm")
        assert ok.set_many(data) == [] and len(ok.get_many(list(data))) == 10
    finally:
        d.stop()


# -- fault 5: a nested get_or_set of one key does not wait for itself ---------------
def test_nested_get_or_set_computes_directly(daemon):
    c = nearcache(daemon, LEASE_WAIT=30)

    def outer():
        return c.get_or_set("nested", lambda: c.get_or_set("nested", "inner") + "+outer")

    t0 = time.monotonic()
    assert outer() == "inner+outer"
    assert time.monotonic() - t0 < 1.0

    async def aouter():
        async def inner():
            return await c.aget_or_set("anested", "inner")

        c.delete("anested")
        lease = await c._client.alease(c._key("anested"), 30, 30)   # this task's lease...
        assert lease.token is not None
        await c._client.arelease(c._key("anested"), lease.token)
        return await c.aget_or_set("anested", lambda: "v") , await inner()

    t0 = time.monotonic()
    assert asyncio.run(aouter()) == ("v", "v")
    assert time.monotonic() - t0 < 1.0


def test_nested_get_or_set_other_threads_still_wait(daemon):
    """Re-entry is per thread: another thread's get_or_set of the key waits for the value."""
    c = nearcache(daemon, LEASE_WAIT=10)
    seen = []

    def compute():
        t = threading.Thread(target=lambda: seen.append(c.get_or_set("shared", "other")))
        t.start()
        time.sleep(0.3)
        return "first"

    assert c.get_or_set("shared", compute) == "first"
    time.sleep(0.1)
    assert seen == ["first"]


# -- fault 7: with the daemon down incr is ValueError, sync and async alike ------------
def test_incr_on_a_down_daemon(tmp_path):
    c = nearcache(str(tmp_path / "none.sock"))
    with pytest.raises(ValueError):
        c.incr("n")
    with pytest.raises(ValueError):
        c.decr("n")
    with pytest.raises(ValueError):
        asyncio.run(c.aincr("n"))
    with pytest.raises(ValueError):
        asyncio.run(c.adecr("n"))


def test_values_and_timeouts_locmem_takes(daemon):
    nc = nearcache(daemon, STRICT=True)
    lm = LocMemCache("faults", {})
    recursive = []
    recursive.append(recursive)
    rdict = {}
    rdict["self"] = rdict
    for cache in (nc, lm):
        for t in (10 ** 20, float("inf"), float("nan")):
            cache.set("t", t, timeout=t)
            assert cache.get("t") == t or t != t, (cache, t)
            assert cache.add(f"a{t}", 1, timeout=t) and cache.get(f"a{t}") == 1
            assert cache.touch(f"a{t}", timeout=t)
        for v in (10 ** 30, -(10 ** 40), 2 ** 64, [2 ** 70, {"x": -(2 ** 65)}]):
            cache.set("big", v)
            assert cache.get("big") == v
        cache.set("rec", recursive)
        got = cache.get("rec")
        assert got[0] is got
        cache.set("rdict", rdict)
        assert cache.get("rdict")["self"]["self"] is not None
        key = "lone\ud800surrogate"
        cache.set(key, "s")
        assert cache.get(key) == "s" and cache.get_many([key]) == {key: "s"}
        assert cache.has_key(key) and cache.delete(key) and cache.get(key) is None
    nopickle = nearcache(daemon, STRICT=True, PICKLE=False)
    with pytest.raises(ValueError):
        nopickle.set("rec", recursive)


def test_unreadable_segment_is_one_warning_with_the_fix(tmp_path, caplog):
    """A worker that may not read the segment: every hit goes over the socket, and it is
    told so once, at WARNING, with the group to join."""
    import pwd
    import shutil
    import tempfile
    shared = tempfile.mkdtemp(prefix="nearcache-faults-")   # a directory nobody can traverse
    os.chmod(shared, 0o755)
    nobody = pwd.getpwnam("nobody")
    d = Daemon(shared, socket_group=nobody.pw_gid, segment_mode="0600")
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                records = []

                class H(logging.Handler):
                    def emit(self, record):
                        records.append(record)

                logging.getLogger("nearcache").addHandler(H())
                c = nearcache(d.socket)
                c.set("k", "v")
                ok = all(c.get("k") == "v" for _ in range(5))
                warns = [x.getMessage() for x in records if x.levelno == logging.WARNING and "segment" in x.getMessage()]
                os.write(w, repr((ok, warns)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        out = os.read(r, 65536).decode()
        _, status = os.waitpid(pid, 0)
        assert status == 0, out
        ok, warns = eval(out)  # noqa: S307 - our own child's repr
        assert ok, warns
        assert len(warns) == 1 and "group" in warns[0], warns
    finally:
        d.stop()
        shutil.rmtree(shared, ignore_errors=True)
