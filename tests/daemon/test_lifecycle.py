"""Lifecycle: signals, reload, refusing a second daemon, restarts and kill -9,
default paths, systemd notification and journald-style logs."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from helpers import Probe, cli
from support.nearcached import NEARCACHED, Daemon
from support.rawproto import (GET, HELLO, OK, PING, SET, SHUTTING_DOWN, STATUS, Closed, RawConn, mp, pack)
from support.wait import wait_for, wait_logged


def test_sigterm_stops_cleanly(daemon):
    """warm_restart (the default): the segment stays for the next daemon, readers keep it
    until the heartbeat is older than the grace."""
    with Probe() as p:
        assert p.open(daemon.segment)["rc"] == "0"
        assert daemon.stop() == 0
        assert not os.path.exists(daemon.socket)
        assert os.path.exists(daemon.segment)  # kept for the next daemon
        assert p.alive()  # still within the heartbeat grace
    assert "stopped" in daemon.log()


def test_sigterm_without_warm_restart_removes_the_segment(tmp_path):
    d = Daemon(tmp_path, warm_restart="false")
    with Probe() as p:
        assert p.open(d.segment)["rc"] == "0"
        assert d.stop() == 0
        assert not os.path.exists(d.socket)
        assert not os.path.exists(d.segment)  # names removed; the mapping stays valid
        assert not p.alive()  # marked stopped
    assert "stopped" in d.log()


def test_sigint_stops_cleanly(daemon):
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(10) == 0
    assert not os.path.exists(daemon.socket)


def test_sigterm_while_clients_pipeline(daemon):
    """Every reply a client gets is well-formed and in order; then SHUTTING_DOWN or EOF; exit 0."""
    results = {}

    def client(n):
        c = RawConn(daemon.socket)
        sent = got = 0
        errors = []
        try:
            while True:
                batch = b"".join(pack(SET, sent + i + 1, b"k%d" % (i % 50), mp(i), None) if i % 2
                                 else pack(GET, sent + i + 1, b"k%d" % (i % 50)) for i in range(100))
                c.send_raw(batch)
                sent += 100
                while got < sent:
                    r = c.recv()
                    if r[1] == SHUTTING_DOWN:
                        results[n] = ("shutdown", got, errors)
                        return
                    if r[0] != got + 1 or r[1] not in (OK, 1):
                        errors.append(r)
                    got += 1
        except (Closed, ConnectionResetError, BrokenPipeError):
            results[n] = ("eof", got, errors)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: sum(c["requests"] >= 1000 for c in RawConn(daemon.socket).status()["connections"]) == 4,
             what="4 clients in full flow")
    t0 = time.monotonic()
    rc = daemon.stop()
    for t in threads:
        t.join(10)
    assert rc == 0
    assert time.monotonic() - t0 < 5
    assert len(results) == 4
    for how, got, errors in results.values():
        assert errors == []
        assert got > 100  # they were really pipelining
    assert not os.path.exists(daemon.socket)


def test_sighup_reloads_what_it_can(tmp_path):
    conf = tmp_path / "nearcached.conf"
    conf.write_text("max_ttl_ms = 0\nkey_limit = 1024\nmax_outstanding = 4096\n")
    with Daemon(tmp_path, config=conf, log_level="info") as d:
        c = RawConn(d.socket)
        c.call(SET, b"a", b"v", None)
        assert c.call(GET, b"a")[4] is None
        conf.write_text("# edited\nmax_ttl_ms = 1000\nkey_limit = 10\nmax_outstanding = 7\n")
        d.signal(signal.SIGHUP)
        wait_logged(d, "configuration reloaded", 5)
        cfg = c.status()["config"]
        assert cfg["max_ttl_ms"] == 1000
        assert cfg["max_outstanding"] == 7
        assert cfg["key_limit"] == 1024  # fixed by the segment: needs a restart
        assert "key_limit changed (1K -> 10) but needs a restart" in d.log()
        c.call(SET, b"b", b"v", None)
        assert 0 < c.call(GET, b"b")[4] <= 1000  # the new max TTL applies
        # A broken file is reported and changes nothing.
        conf.write_text("max_ttl_ms = soon\n")
        d.signal(signal.SIGHUP)
        wait_logged(d, "not reloaded", 5)
        assert "max_ttl_ms" in d.log().split("not reloaded")[-1]
        assert c.status()["config"]["max_ttl_ms"] == 1000
        assert c.call(PING)[1] == OK


def test_sighup_log_level(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("log_level = info\n")
    d = Daemon(tmp_path, start=False, config=conf)
    del d.options["log_level"]
    d.start()
    try:
        RawConn(d.socket).call(PING)
        assert "[debug]" not in d.log()
        conf.write_text("log_level = debug\n")
        d.signal(signal.SIGHUP)
        wait_logged(d, "configuration reloaded")
        RawConn(d.socket).call(PING)  # its "connected" line is logged (and flushed) before the reply
        assert "[debug] conn" in d.log()
    finally:
        d.stop()


def test_second_daemon_refused(daemon, tmp_path):
    c = RawConn(daemon.socket)
    c.call(SET, b"k", b"v", None)
    # Same socket and segment.
    second = subprocess.run(Daemon(tmp_path, start=False).args(), capture_output=True, text=True, timeout=10)
    assert second.returncode == 1
    assert "already listening" in second.stderr
    # Same socket, another segment: refused before touching anything.
    other = subprocess.run(Daemon(tmp_path, start=False, segment=tmp_path / "other.seg").args(),
                           capture_output=True, text=True, timeout=10)
    assert other.returncode == 1 and "already listening" in other.stderr
    assert not (tmp_path / "other.seg").exists()
    # Same segment, another socket: the segment's lock refuses.
    third = subprocess.run(Daemon(tmp_path, start=False, socket=tmp_path / "other.sock").args(),
                           capture_output=True, text=True, timeout=10)
    assert third.returncode == 1 and daemon.segment in third.stderr
    assert not (tmp_path / "other.sock").exists()
    # The first one never noticed.
    assert c.call(GET, b"k")[1:3] == [OK, b"v"]
    with Probe() as p:
        assert p.open(daemon.segment)["pid"] == str(daemon.pid)
        assert p.alive()


def test_refuses_a_file_that_is_not_a_socket(tmp_path):
    (tmp_path / "nc.sock").write_text("precious")
    r = subprocess.run(Daemon(tmp_path, start=False).args(), capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "not a socket" in r.stderr
    assert (tmp_path / "nc.sock").read_text() == "precious"


def test_cold_restart_makes_a_new_generation_and_readers_remap(tmp_path):
    daemon = Daemon(tmp_path, warm_restart="false")
    c = RawConn(daemon.socket)
    g1 = c.call(HELLO, 2)[2]["generation"]
    c.call(SET, b"k", mp("v"), None)
    with Probe() as p:
        assert p.open(daemon.segment)["generation"] == str(g1)
        assert p.get("k") == "hit"
        daemon.restart()
        assert not p.alive()  # the old table says stopped
        assert p.get("k") == "unavailable"
        g2 = RawConn(daemon.socket).call(HELLO, 2)[2]["generation"]
        assert g2 > g1
        assert p.open(daemon.segment)["generation"] == str(g2)
        assert p.alive()
        assert p.get("k") == "miss"
    daemon.stop()


def test_kill9_readers_see_stale_heartbeat_then_new_daemon_starts(tmp_path):
    d = Daemon(tmp_path, heartbeat_interval_ms=50, heartbeat_grace_ms=400)
    c = RawConn(d.socket)
    g1 = c.call(HELLO, 2)[2]["generation"]
    assert c.call(HELLO, 2)[2]["heartbeat_grace_ms"] == 400
    c.call(SET, b"k", mp("v"), None)
    with Probe() as p:
        opened = p.open(d.segment)
        assert opened["grace_ms"] == "400"
        time.sleep(0.2)  # four heartbeat intervals pass
        assert p.alive()  # heartbeats keep it fresh
        d.kill()
        killed = time.monotonic()
        assert p.get("k") == "hit"  # within the grace period the table is still trusted
        while p.alive():
            time.sleep(0.02)
            assert time.monotonic() - killed < 2
        assert time.monotonic() - killed > 0.2
        assert p.get("k") == "unavailable"
        # Leftovers: a stale socket and the old segment. A new daemon adopts the table.
        assert os.path.exists(d.socket) and os.path.exists(d.segment)
        d.start()
        assert "replacing stale socket" in d.log()
        g2 = RawConn(d.socket).call(HELLO, 2)[2]["generation"]
        assert g2 == g1  # adopted: the same table, the mapping stays good
        assert p.alive()
        assert p.get("k") == "hit"
    d.stop()


@pytest.mark.parametrize("url, says", [
    ("ftp://cache:6380", "must start with redis://, rediss:// or unix://"),
    ("http://u:secret@h", "must start with redis://, rediss:// or unix://"),
    ("redis://h:99999", "port must be 1-65535"),
    ("redis://secret@h", "user:password@"),
])
def test_a_bad_redis_url_is_refused_clearly(tmp_path, url, says):
    r = subprocess.run(Daemon(tmp_path, start=False, redis_url=url).args(), capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2
    assert says in r.stderr and "secret" not in r.stderr
    assert not (tmp_path / "nc.sock").exists() and not (tmp_path / "nc.seg").exists()
    shown = subprocess.run([str(NEARCACHED), "--redis_url=redis://u:pw@h:6379", "--print-config"],
                           capture_output=True, text=True, timeout=10)
    assert "redis_url = redis://***@h:6379" in shown.stdout and "pw" not in shown.stdout


def test_help_print_config_and_bad_flags(tmp_path):
    h = subprocess.run([str(NEARCACHED), "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "--segment_size=<size>" in h.stdout and "reloaded on SIGHUP" in h.stdout
    pc = subprocess.run([str(NEARCACHED), "--segment_size=8M", "--print-config"], capture_output=True, text=True)
    assert pc.returncode == 0 and "segment_size = 8M" in pc.stdout and "socket_mode = 0660" in pc.stdout
    # The printed configuration is a valid config file.
    conf = tmp_path / "printed.conf"
    conf.write_text(pc.stdout)
    again = subprocess.run([str(NEARCACHED), f"--config={conf}", "--print-config"], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == pc.stdout
    bad = subprocess.run([str(NEARCACHED), "--segment_size=huge"], capture_output=True, text=True)
    assert bad.returncode == 2 and "segment_size" in bad.stderr
    unknown = subprocess.run([str(NEARCACHED), "--no_such_thing=1"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "no_such_thing" in unknown.stderr


def test_default_paths_under_xdg_runtime_dir(tmp_path):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(xdg)}
    d = Daemon(tmp_path, start=False)
    for k in ("socket", "segment"):
        del d.options[k]
    d.socket = str(xdg / "nearcache" / "nearcached.sock")
    d.segment = str(xdg / "nearcache" / "nearcached.seg")
    d.start(env=env)
    try:
        rundir = xdg / "nearcache"
        assert stat.S_IMODE(rundir.stat().st_mode) == 0o750
        assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660
        assert stat.S_IMODE(os.stat(d.segment).st_mode) == 0o640
        assert not os.path.exists(d.segment + ".hints")  # layout 2: no object clients write
        r = cli("ping", env=env)  # the CLI resolves the same default
        assert r.returncode == 0 and d.socket in r.stdout
        assert cli("ping", env={"NEARCACHE_SOCKET": d.socket, "XDG_RUNTIME_DIR": str(tmp_path)}).returncode == 0
    finally:
        d.stop()


def test_print_socket_banner(tmp_path):
    d = Daemon(tmp_path, start=False)
    proc = subprocess.Popen(d.args() + ["--print-socket-banner"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert d.socket in line and "listening" in line
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_systemd_notify_and_journal_logs(tmp_path):
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(notify))
        s.settimeout(10)
        d = Daemon(tmp_path, start=False, log_level="info")
        d.start(env={"NOTIFY_SOCKET": str(notify), "JOURNAL_STREAM": "8:1234"})
        assert b"READY=1" in s.recv(4096)
        d.stop()
        assert b"STOPPING=1" in s.recv(4096)
    lines = [l for l in d.log().splitlines() if l]
    assert lines and all(l.startswith("<") for l in lines)  # syslog priority, no timestamp
    assert any(l.startswith("<6>nearcached") for l in lines)


def test_posix_shm_segment(tmp_path):
    name = f"/nearcache-test-{os.getpid()}"
    with Daemon(tmp_path, posix_shm="true", segment=name) as d:
        c = RawConn(d.socket)
        info = c.call(HELLO, 2)[2]
        assert info["posix_shm"] is True and info["segment"] == name and "hints" not in info
        assert os.path.exists("/dev/shm" + name)
        assert stat.S_IMODE(os.stat("/dev/shm" + name).st_mode) == 0o640
        c.call(SET, b"k", b"v", None)
        assert c.call(GET, b"k")[2] == b"v"
    assert os.path.exists("/dev/shm" + name)  # kept for the next daemon (warm_restart)
    with Daemon(tmp_path, posix_shm="true", segment=name, warm_restart="false") as d:
        assert RawConn(d.socket).status()["start"]["warm"] is False
    assert not os.path.exists("/dev/shm" + name)
    lock = "/dev/shm" + name + ".lock"  # the writer's lock file stays (shm/ design); not ours to keep
    if os.path.exists(lock):
        os.unlink(lock)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")
def test_segment_and_socket_group(tmp_path):
    import grp
    gid = grp.getgrnam("nogroup").gr_gid
    with Daemon(tmp_path, segment_group="nogroup", socket_group=gid) as d:
        assert os.stat(d.segment).st_gid == gid
        assert os.stat(d.socket).st_gid == gid
