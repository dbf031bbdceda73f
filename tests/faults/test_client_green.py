"""Fault 4 of the client issue: SOCKET_TIMEOUT holds under gevent and eventlet
monkey-patching (and with plain threads), and greenlets share a bounded pool of
daemon connections. Each case runs a real worker process against a real
daemon that the test SIGSTOPs and SIGCONTs."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.nearcached import Daemon

TESTS = Path(__file__).resolve().parents[1]

WORKER = r'''
import sys
mode, path = sys.argv[1], sys.argv[2]
if mode == "gevent":
    from gevent import monkey
    monkey.patch_all()
    import gevent
    def run_all(fn, n):
        gevent.joinall([gevent.spawn(fn, i) for i in range(n)])
elif mode == "eventlet":
    import eventlet
    eventlet.monkey_patch()
    def run_all(fn, n):
        pool = eventlet.GreenPool(n)
        for i in range(n):
            pool.spawn(fn, i)
        pool.waitall()
else:
    import threading
    def run_all(fn, n):
        ts = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
        [t.start() for t in ts]
        [t.join() for t in ts]
import json, os, time
from django.conf import settings
settings.configure()
from nearcache.django import NearCache

cache = NearCache(path, {"OPTIONS": {"SOCKET_TIMEOUT": 0.5}})
cache.set("warm", 1)

def step(msg):
    print(json.dumps(msg), flush=True)
    sys.stdin.readline()

step({"ready": True})                      # the test stops the daemon now
took, errors = [], []
def stalled(i):
    t0 = time.monotonic()
    try:
        cache.get(f"miss{i}")
        cache.set(f"s{i}", i)
        cache.get_many([f"a{i}", f"b{i}"])
    except Exception as e:
        errors.append(repr(e))
    took.append(time.monotonic() - t0)
t0 = time.monotonic()
run_all(stalled, 200)
step({"max": max(took), "total": time.monotonic() - t0, "errors": errors[:3]})   # the test resumes it
time.sleep(1.1)                              # past the fast-fail window
# The same pool limit, with a timeout that queueing a thousand greenlets on this
# loaded machine cannot exhaust.
cache = NearCache(path, {"OPTIONS": {"SOCKET_TIMEOUT": 10}})
bad = []
def live(i):
    cache.set(f"g{i}", i)
    if cache.get(f"g{i}") != i or cache.get(f"miss-live{i}") is not None:
        bad.append(i)
run_all(live, 1000)
mine = [c for c in cache._client.status()["connections"] if c["pid"] == os.getpid()]
step({"bad": len(bad), "connections": len(mine)})
'''


@pytest.mark.parametrize("mode", ["gevent", "eventlet", "threads"])
def test_socket_timeout_holds_and_connections_are_pooled(tmp_path, mode):
    # Not imported here: importing eventlet would patch this test process's fork().
    if mode != "threads" and importlib.util.find_spec(mode) is None:
        pytest.skip(f"{mode} is not installed (requirements-dev.txt)")
    d = Daemon(tmp_path, heartbeat_grace_ms=300)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    p = subprocess.Popen([sys.executable, "-c", WORKER, mode, d.socket], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)

    def read():
        line = p.stdout.readline()
        assert line, f"worker exited with {p.wait()}"
        return json.loads(line)

    def go():
        p.stdin.write("\n")
        p.stdin.flush()

    try:
        assert read() == {"ready": True}
        d.signal(signal.SIGSTOP)
        go()
        stalled = read()
        d.signal(signal.SIGCONT)
        # Every call bounded by SOCKET_TIMEOUT (0.5 s): not one greenlet waits longer.
        assert stalled["errors"] == []
        assert stalled["max"] < 0.5 + 0.35, stalled
        go()
        live = read()
        assert live["bad"] == 0
        if mode != "threads":
            # A thousand greenlets share the bounded pool (16), not a connection each;
            # each of the two clients adds its write channel.
            assert 1 <= live["connections"] <= 16 + 2, live
        go()
        assert p.wait(timeout=30) == 0
    finally:
        d.signal(signal.SIGCONT)
        if p.poll() is None:
            p.kill()
            p.wait()
        d.stop()
