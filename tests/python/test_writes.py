"""Writes without waiting (nearcache.writes), with real daemons and processes:
a process reads its own writes at once and in order across threads, other
processes see them within a millisecond or so, answered ops wait for earlier
writes, fork gives the child a clean channel, exit flushes, lost writes' keys
are deleted on reconnect."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nearcache import Client
from support.nearcached import Daemon


@pytest.fixture
def cache(module_daemon, make_cache):
    c = make_cache(module_daemon)
    assert not c._client.sync_writes
    c.clear()
    return c


def test_reads_its_own_writes_at_once(cache):
    for i in range(200):
        cache.set("k", i)
        assert cache.get("k") == i and cache.get_many(["k"]) == {"k": i} and cache.has_key("k")
    cache.delete_many(["k"])
    assert cache.get("k") is None and not cache.has_key("k")
    cache.set_many({"a": 1, "b": 2})
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    cache.set("z", 1, timeout=0)   # expires at once, also while pending
    assert cache.get("z") is None


def test_answered_ops_wait_for_earlier_writes(cache):
    for i in range(100):
        cache.set(f"n{i}", i)
        assert cache.incr(f"n{i}") == i + 1        # INCR sees the SET it follows
        cache.delete_many([f"n{i}"])
        assert cache.add(f"n{i}", "fresh")         # ADD sees the delete
        assert cache.touch(f"n{i}", 100) and cache.delete(f"n{i}")


def test_order_across_threads(cache, module_daemon):
    """Threads writing one key: the daemon keeps the last write made."""
    stop = time.monotonic() + 1.0
    last = {}
    lock = threading.Lock()

    def writer(t):
        i = 0
        while time.monotonic() < stop:
            with lock:       # makes "the last write made" well defined
                i += 1
                cache.set("shared", (t, i))
                last["v"] = (t, i)
            assert cache.get("shared") is not None

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert cache._client.flush()
    other = Client(module_daemon.socket, strict=True, use_shm=False)
    from nearcache import unpackb
    assert tuple(unpackb(other.get(cache._key("shared")))) == last["v"]


@pytest.mark.parametrize("sync", [False, True])
def test_another_process_sees_a_write_within_a_millisecond(module_daemon, make_cache, sync):
    """p99 of the time from set() returning here to another process reading it,
    for writes that do not wait and (for comparison) synchronous ones."""
    cache = make_cache(module_daemon, SYNC_WRITES=sync)
    script = r'''
import sys, time
sys.path.insert(0, sys.argv[2])
from nearcache import Client
c = Client(sys.argv[1], use_shm=True, strict=True)
c.get(b"warm")
print("ready", flush=True)
for line in sys.stdin:
    key = line.strip().encode()
    t0 = time.monotonic()
    while c.get(key) is None:
        pass
    print(time.monotonic(), flush=True)
'''
    p = subprocess.Popen([sys.executable, "-c", script, module_daemon.socket, str(Path(__file__).parents[1])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        lags = []
        for i in range(200):
            key = f"vis{sync}{i}"
            p.stdin.write(cache._key(key).decode() + "\n")
            p.stdin.flush()
            time.sleep(0.002)            # the reader is spinning on the key
            t = time.monotonic()
            cache.set(key, i)
            seen = float(p.stdout.readline())
            lags.append(seen - t)
        lags.sort()
        p99 = lags[int(len(lags) * 0.99) - 1]
        print(f"sync={sync} visibility median {lags[len(lags) // 2] * 1e6:.0f} us p99 {p99 * 1e6:.0f} us")
        # 1 ms is the target on an idle host; a loaded 2-core CI machine gets 10 ms.
        assert p99 < 0.010, (p99, lags[-5:])
    finally:
        p.kill()
        p.wait()


def test_fork_child_starts_clean_and_exit_flushes(cache, module_daemon):
    cache.set("parent", 1)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ch = cache._client._wchan
            assert ch is None
            for i in range(500):
                cache.set(f"child{i}", i)
            code = 0
        finally:
            # A normal exit runs atexit, which flushes; os._exit here would not,
            # so flush as atexit would.
            cache._client.flush()
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert cache.get("parent") == 1
    assert cache.get_many([f"child{i}" for i in range(500)]) == {f"child{i}": i for i in range(500)}


def test_normal_exit_flushes_pending_writes(module_daemon):
    script = r'''
import sys
sys.path.insert(0, sys.argv[2])
from django.conf import settings
settings.configure()
from nearcache.django import NearCache
c = NearCache(sys.argv[1], {})
for i in range(2000):
    c.set(f"exit{i}", i)
'''
    subprocess.run([sys.executable, "-c", script, module_daemon.socket, str(Path(__file__).parents[1])],
                   check=True, timeout=60)
    c = Client(module_daemon.socket, strict=True)
    assert c.get(b":1:exit1999") is not None and c.get(b":1:exit0") is not None


def test_writes_lost_while_unreachable_are_deleted_on_reconnect(tmp_path, make_cache):
    d = Daemon(tmp_path, heartbeat_grace_ms=300)
    try:
        c = make_cache(d, SOCKET_TIMEOUT=0.3)
        c.set("k", "old")
        assert c._client.flush()
        d.signal(signal.SIGSTOP)
        c.set("k", "new")            # sent, never acknowledged: lost with the channel
        time.sleep(0.6)
        assert c._client._wchan.counters["failed"] >= 1
        d.signal(signal.SIGCONT)
        time.sleep(1.1)              # past the fast-fail window
        c.set("other", 1)            # reconnects: deletes "k" before anything else
        assert c._client.flush()
        watch = Client(d.socket, strict=True, use_shm=False)
        assert watch.get(c._key("k")) in (None, c._nc_pack("new"))   # never "old"
        assert watch.get(c._key("other")) is not None
    finally:
        d.signal(signal.SIGCONT)
        d.stop()


def test_strict_and_sync_writes_wait(module_daemon, make_cache):
    for opts in ({"STRICT": True}, {"SYNC_WRITES": True}):
        c = make_cache(module_daemon, **opts)
        assert c._client.sync_writes
        c.set("s", 1)
        assert c._client._wchan is None


def test_first_write_after_a_daemon_restart_is_kept(tmp_path, make_cache):
    d = Daemon(tmp_path)
    try:
        c = make_cache(d)
        c.set("k", 1)
        assert c._client.flush()
        d.restart()
        c.set("k", 2)                # the channel's old connection is dead: sent on a new one
        assert c._client.flush()
        assert Client(d.socket, strict=True).get(c._key("k")) == c._nc_pack(2)
    finally:
        d.stop()
