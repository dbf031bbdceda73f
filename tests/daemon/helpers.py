"""Helpers for the daemon's end-to-end tests: the segment probe (a real
shared-memory reader, tests/support/segment_probe.cc; in support.probe) and the
nearcache CLI."""
from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
from pathlib import Path

from support.nearcached import NEARCACHE_CLI
from support.probe import PROBE, Probe  # noqa: F401 (used by the tests)


# A process that floods SETs of keys w0..w<keys-1> until the daemon goes away,
# then prints what was acknowledged and what was in flight (JSON): argv is the
# tests directory, the socket, a value base and the key count.
FLOOD_WRITER = textwrap.dedent("""
    import json, socket, sys
    sys.path.insert(0, sys.argv[1])
    from support.rawproto import RawConn, SET, OK, mp, Closed
    sock, base, keys = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    acked, inflight = {}, None
    try:
        c = RawConn(sock)
        print("ready", flush=True)
        i = 0
        while True:
            k = "w%d" % (i % keys)
            v = "%s:%d:%s" % (k, base + i, "y" * ((base + i) % 700))
            inflight = (k, v)
            r = c.call(SET, k.encode(), mp(v), None)
            if r[1] != OK:
                break
            acked[k] = v
            inflight = None
            i += 1
    except Exception:
        pass
    print(json.dumps({"acked": acked, "inflight": inflight}), flush=True)
""")


def kill_under_flood(d, model: dict, base: int, rng, keys: int = 20000) -> None:
    """kill -9 of the daemon at a random moment (0.05 to 0.6 s) while FLOOD_WRITER
    floods it from another process; records in `model` (key -> the values it may
    hold) what was acknowledged, and the write in flight at the kill."""
    import json
    import sys
    import time

    from support.nearcached import ROOT

    w = subprocess.Popen([sys.executable, "-c", FLOOD_WRITER, str(ROOT / "tests"), d.socket, str(base), str(keys)],
                         stdout=subprocess.PIPE, text=True)
    assert w.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.05, 0.6))
    d.kill()
    out = json.loads(w.stdout.readline())
    w.wait(10)
    for k, v in out["acked"].items():
        model[k] = {v}
    if out["inflight"]:
        k, v = out["inflight"]
        model.setdefault(k, set()).add(v)


def served_from_model(d, model: dict) -> int:
    """GETs every key of `model` (key -> allowed values); each one served must hold
    one of its allowed values. Returns how many were served."""
    from support.rawproto import GET, OK, RawConn, mp

    served = 0
    with RawConn(d.socket) as c:
        for k, allowed in model.items():
            r = c.call(GET, k.encode())
            if r[1] == OK:
                assert r[2] in {mp(v) for v in allowed}, (k, r[2][:60])
                served += 1
    return served


def cli(*args: str, env: dict | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([str(NEARCACHE_CLI), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@contextlib.contextmanager
def small_tmpfs(directory, size: str = "20m"):
    """A tmpfs of `size` mounted at `directory`/small for the block, unmounted after
    (lazily: a reader may still map a file in it); skips the test unless it can mount."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = Path(directory) / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@contextlib.contextmanager
def two_hosts_on_redis(tmp_path):
    """A Redis and two daemons on it (hosts `a` and `b`, support.tier.FAST),
    receiving invalidations: yields (redis, a, b); stops all three after."""
    from support.nearcached import Daemon
    from support.redis_server import RedisServer
    from support.tier import FAST, wait_coherent

    r = RedisServer(tmp_path)
    made = []
    try:
        made += [Daemon(tmp_path, name=n, redis_url=r.url, **FAST) for n in ("a", "b")]
        wait_coherent(*made)
        yield r, made[0], made[1]
    finally:
        for d in made:
            if d.proc and d.proc.poll() is None:
                d.stop()
        r.kill()


def wait_snapshot(d, since: float, what: str) -> str:
    """The path of `d`'s repair snapshot file, once saved after `since` (time.time())."""
    from support.wait import wait_for

    snap = d.segment + ".repair"
    wait_for(lambda: os.path.exists(snap) and os.stat(snap).st_mtime > since + 0.05, 10, what)
    return snap
