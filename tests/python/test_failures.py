"""The daemon going away, never there, unreachable, or speaking another segment
layout: reads are misses, writes are skipped, one warning per interval, STRICT
raises, no call hangs, and the client recovers on its own."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import struct
import time

import pytest

import nearcache
import nearcache.django
from nearcache import CacheUnavailable, Client, _native
from support.nearcached import Daemon

GRACE_MS = 300


def warnings_logged(caplog):
    return [r for r in caplog.records if r.name == "nearcache.client" and r.levelno == logging.WARNING]


def test_daemon_warm_restart_under_a_running_client(tmp_path, make_cache):
    d = Daemon(tmp_path)
    c = make_cache(d, STRICT=True)
    c.set("k", "before")
    gen = c._client.segment.generation
    d.restart()
    # The table was adopted: the same generation, the mapping stays, hits go on.
    hits = _native.Segment.totals()["hits"]
    assert c.get("k") == "before"
    assert _native.Segment.totals()["hits"] == hits + 1
    c.set("k", "after")
    assert c.get("k") == "after"
    assert c._client.segment.generation == gen
    d.stop()


def test_daemon_cold_restart_under_a_running_client(tmp_path, make_cache):
    d = Daemon(tmp_path, warm_restart="false")
    c = make_cache(d, STRICT=True)
    c.set("k", "before")
    assert c.get("k") == "before"
    gen = c._client.segment.generation
    d.restart()
    # The old connection is dead and the old table is marked stopped: the next
    # calls reconnect, HELLO, and map the new table, without raising.
    assert c.get("k") is None
    c.set("k", "after")
    assert c._client.segment.generation != gen
    hits = _native.Segment.totals()["hits"]
    assert c.get("k") == "after"
    assert _native.Segment.totals()["hits"] == hits + 1
    d.stop()


def test_daemon_killed(tmp_path, make_cache, caplog):
    caplog.set_level(logging.WARNING, logger="nearcache")
    d = Daemon(tmp_path, heartbeat_grace_ms=GRACE_MS)
    c = make_cache(d, WARN_INTERVAL=60)
    strict = make_cache(d, STRICT=True)
    c.set("k", "v")
    assert c.get("k") == "v"
    d.kill()
    time.sleep(GRACE_MS / 1000 + 0.2)  # the heartbeat is now stale: the table is not trusted
    t0 = time.monotonic()
    assert c.get("k") is None and c.get("k", "dflt") == "dflt"
    assert c.get_many(["k", "x"]) == {}
    assert c.set("k", "w") is False and c.add("n", 1) is False and c.delete("k") is False
    assert c.touch("k") is False and c.has_key("k") is False
    assert c.get_or_set("g", lambda: "computed") == "computed"
    with pytest.raises(ValueError):
        c.incr("n")
    c.set_many({"a": 1}) and c.delete_many(["a"]) and c.clear()
    assert time.monotonic() - t0 < 2
    assert len(warnings_logged(caplog)) == 1  # rate-limited
    assert "unreachable" in warnings_logged(caplog)[0].getMessage()
    with pytest.raises(CacheUnavailable):
        strict.get("k")
    with pytest.raises(CacheUnavailable):
        strict.set("k", 1)
    # The daemon comes back: the same cache objects recover on their own.
    d.start()
    c.set("k", "again")
    assert c.get("k") == "again" and strict.get("k") == "again"
    assert c._client.segment.is_open and c._client.segment.alive()
    d.stop()


def test_socket_missing(tmp_path, make_cache, caplog):
    caplog.set_level(logging.WARNING, logger="nearcache")
    c = make_cache(str(tmp_path / "nowhere.sock"), WARN_INTERVAL=60)
    for _ in range(3):
        assert c.get("k", 5) == 5
        c.set("k", 1)
    assert not c._client.segment.is_open
    assert len(warnings_logged(caplog)) == 1
    assert "No such file" in warnings_logged(caplog)[0].getMessage()
    strict = make_cache(str(tmp_path / "nowhere.sock"), STRICT=True)
    with pytest.raises(CacheUnavailable, match="nowhere.sock"):
        strict.get("k")


def test_default_socket_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NEARCACHE_SOCKET", str(tmp_path / "env.sock"))
    assert Client().path == str(tmp_path / "env.sock")
    monkeypatch.delenv("NEARCACHE_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert Client("").path == str(tmp_path / "nearcache" / "nearcached.sock")
    assert Client("unix://" + str(tmp_path / "u.sock")).path == str(tmp_path / "u.sock")


def test_daemon_hung_every_call_times_out(tmp_path, make_cache):
    d = Daemon(tmp_path, heartbeat_grace_ms=GRACE_MS)
    c = make_cache(d, SOCKET_TIMEOUT=0.2)
    c.set("k", "v")
    d.signal(signal.SIGSTOP)
    try:
        time.sleep(GRACE_MS / 1000 + 0.2)
        t0 = time.monotonic()
        assert c.get("k") is None
        c.set("k", "w")
        assert c.get_or_set("g", "x") == "x"
        assert time.monotonic() - t0 < 2.0
    finally:
        d.signal(signal.SIGCONT)
    time.sleep(1.1)  # past the back-off after a timeout
    assert c.get("k") == "v"
    d.stop()


def _as_nobody(fn):
    """Runs fn in a child process with uid/gid 65534; returns its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            fn()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch to another user")
def test_permission_denied(tmp_path, make_cache):
    os.chmod(tmp_path, 0o755)
    d = Daemon(tmp_path)  # socket 0660, segment 0640, owned by root: nobody may not use them
    c = make_cache(d, STRICT=True)
    c.set("k", "v")

    def other_user():
        nearcache.django._clients.clear()  # a process of that user has clients of its own
        soft = make_cache(d)
        assert soft.get("k") is None and soft.set("k", 1) is False
        assert not soft._client.segment.is_open
        strict = make_cache(d, STRICT=True)
        try:
            strict.get("k")
        except CacheUnavailable as e:
            assert "Permission denied" in str(e), e
        else:
            raise AssertionError("no CacheUnavailable")
        s = _native.Segment()
        try:
            s.open(d.segment)
        except OSError as e:
            assert e.errno == errno.EACCES, e
        else:
            raise AssertionError("segment opened")

    assert _as_nobody(other_user) == 0
    d.stop()


def test_incompatible_segment_layout(tmp_path, make_cache, caplog):
    caplog.set_level(logging.WARNING, logger="nearcache")
    d = Daemon(tmp_path)
    c = make_cache(d, STRICT=True)
    c.set("k", "v")
    # A copy of a real segment, with Header::layout_version (offset 8, u32) changed.
    future = tmp_path / "future.seg"
    shutil.copyfile(d.segment, future)
    with open(future, "r+b") as f:
        f.seek(8)
        assert struct.unpack("<I", f.read(4))[0] == _native.LAYOUT_VERSION
        f.seek(8)
        f.write(struct.pack("<I", _native.LAYOUT_VERSION + 1))
    s = _native.Segment()
    with pytest.raises(OSError) as e:
        s.open(str(future))
    assert e.value.errno == errno.EPROTONOSUPPORT and "layout version" in str(e.value)
    # Point the client at it, as a HELLO naming that segment would.
    client = c._client
    st, now = os.stat(future), time.monotonic()
    client._sync_segment(dict(client.info, segment=str(future), generation=client.info["generation"] + 1,
                              segment_dev=st.st_dev, segment_ino=st.st_ino, clock_ms=int(now * 1000)), now, now)
    assert not client.segment.is_open and "layout" in client.shm_disabled_reason
    assert any("socket alone" in r.getMessage() for r in warnings_logged(caplog))
    assert c.get("k") == "v"        # over the socket
    c.set("k2", [1])
    assert c.get("k2") == [1]
    # A HELLO reporting a layout this client does not know: socket only as well.
    client._sync_segment(dict(client.info, layout=_native.LAYOUT_VERSION + 1), now, now)
    assert not client.segment.is_open and c.get("k2") == [1]
    d.stop()


def test_key_and_value_limits(module_daemon, make_cache):
    c = make_cache(module_daemon)
    long_key = "k" * 2000  # over the daemon's key_limit (1024 bytes)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert c.get(long_key) is None
        c.set(long_key, 1)  # not stored, logged
        assert c.get(long_key) is None
        strict = make_cache(module_daemon, STRICT=True)
        with pytest.raises(nearcache.KeyTooLong):
            strict.set(long_key, 1)


def test_threads_keep_reading_while_the_daemon_restarts(tmp_path, make_cache):
    """Re-mapping happens under readers in other threads: no crash, no error,
    only values that were stored, and hits from the new table afterwards."""
    import threading

    d = Daemon(tmp_path)
    c = make_cache(d, STRICT=False)
    c.set("k", "v1")
    stop = threading.Event()
    seen, errors = set(), []

    def reader():
        try:
            while not stop.is_set():
                seen.add(c.get("k"))
                c.get_many(["k", "x"])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for value in ("v2", "v3"):
            time.sleep(0.2)
            d.restart()
            c.set("k", value)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert seen <= {"v1", "v2", "v3", None} and "v3" in seen
    hits = _native.Segment.totals()["hits"]
    assert c.get("k") == "v3" and _native.Segment.totals()["hits"] == hits + 1
    d.stop()
