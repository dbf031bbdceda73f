"""`nearcache top` against a real daemon under load: in a pseudo-terminal
(the Python pty module: a redrawn screen, q and Ctrl-C quit and restore the
terminal) and as plain lines when its output is not a terminal."""
from __future__ import annotations

import fcntl
import os
import re
import select
import subprocess
import termios
import threading
import time

import pytest

from helpers import Probe, cli
from support.nearcached import NEARCACHE_CLI
from support.rawproto import GET, SET, RawConn, mp


class Load:
    """Requests in a loop on their own connection (SET then GETs: hits, and a miss each round)."""

    def __init__(self, socket_path: str):
        self.c = RawConn(socket_path)
        self.stop = threading.Event()
        self.rounds = 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            k = b"load:%d" % (i % 50)
            self.c.call(SET, k, mp(i), None)
            self.c.call(GET, k)
            self.c.call(GET, k)
            self.c.call(GET, b"absent:%d" % i)
            i += 1
            self.rounds = i

    def close(self):
        self.stop.set()
        self.t.join(10)
        self.c.close()


@pytest.fixture
def load(daemon):
    lo = Load(daemon.socket)
    deadline = time.monotonic() + 10
    while lo.rounds < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    yield lo
    lo.close()


class PtyTop:
    """`nearcache top` on a pseudo-terminal that is its controlling terminal."""

    def __init__(self, *args: str):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, b"\x28\x00\x78\x00\x00\x00\x00\x00")  # 40 rows, 120 cols
        self.saved = termios.tcgetattr(self.slave)
        slave = self.slave

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([str(NEARCACHE_CLI), *args], stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=controlling_tty, close_fds=True)
        self.out = b""

    def read_until(self, pred, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while not pred(self.out):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return pred(self.out)
                if not chunk:
                    return pred(self.out)
                self.out += chunk
        return True

    def frames(self) -> list[list[str]]:
        """The complete frames drawn so far: each starts with cursor-home and
        ends with clear-to-end-of-screen; lines end with clear-to-end-of-line."""
        text = self.out.decode()
        return [[line.rstrip("\r").removesuffix("\x1b[K") for line in body.split("\x1b[J")[0].split("\n")[:-1]]
                for body in text.split("\x1b[H")[1:] if "\x1b[J" in body]

    def wait(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read_until(lambda _: False, 0.05)
        rc = self.proc.wait(1)
        self.read_until(lambda _: False, 0.3)  # what it wrote last (the parent holds the slave open: no EOF)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)
        os.close(self.slave)


def frame_with_rates(top: PtyTop):
    for f in reversed(top.frames()):
        if any(line.startswith("operations") for line in f):
            return f
    return None


def check_frame(f: list[str], daemon, interval: str) -> None:
    assert re.fullmatch(rf"nearcache top: {re.escape(daemon.socket)} every {interval} s, \d\d:\d\d:\d\d   \(q quits\)",
                        f[0]), f[0]
    assert re.fullmatch(rf"nearcached \S+, pid {daemon.pid}, up \d+s", f[1]), f[1]
    assert f[2] == ""
    rows = {line[:12].strip(): line[12:] for line in f[3:] if line[:12].strip()}
    ops = re.fullmatch(r"\s+(\d+)/s   daemon requests (\d+)/s, shared-memory lookups (\d+)/s", rows["operations"])
    assert ops and int(ops.group(1)) > 0 and int(ops.group(1)) == int(ops.group(2)) + int(ops.group(3)), rows
    hits = re.fullmatch(r"\s+(\d+)/s   from shared memory (\d+)/s, from the daemon (\d+)/s", rows["hits"])
    assert hits and int(hits.group(1)) > 0, rows["hits"]
    misses = re.fullmatch(r"\s+(\d+)/s   from the daemon (\d+)/s, answered in readers 0/s", rows["misses"])
    assert misses and int(misses.group(1)) > 0 and misses.group(1) == misses.group(2), rows["misses"]
    # The load's GETs: two hits and one miss a round, so the interval's ratio is near 2/3.
    ratio = re.fullmatch(r"\s+(\d+\.\d)%   last interval; STATUS: (\d+\.\d)% last minute, (\d+\.\d)% since start",
                         rows["hit ratio"])
    assert ratio and 55 < float(ratio.group(1)) < 75, rows["hit ratio"]
    assert re.fullmatch(r"\s+(\d+)/s   deletes 0/s", rows["writes"]), rows["writes"]
    assert re.fullmatch(r"\s+0/s   expirations 0/s", rows["evictions"]), rows["evictions"]
    assert re.fullmatch(r"\s+\d+\.\d KiB   of 15\.\d MiB \(0\.\d%\), 50 entries", rows["memory"]), rows["memory"]
    assert re.fullmatch(r"\s+(\d+)   connections, 0 reader processes", rows["clients"]), rows["clients"]
    assert rows["redis"] == f" {'-':>12}   (no Redis tier)"
    at = f.index(next(line for line in f if line.startswith("traffic by key prefix")))
    assert f[at + 1].split() == ["PREFIX", "HITS", "MISSES", "HIT", "RATIO"]
    assert f[at + 2].split()[0] in ("load:", "absent:") and f[at + 3].split()[0] in ("load:", "absent:")


def test_top_in_a_terminal_quits_on_q_and_restores_it(daemon, load):
    top = PtyTop("--socket", daemon.socket, "top", "--interval", "0.3")
    try:
        assert top.read_until(lambda out: b"\x1b[?1049h" in out), top.out  # the alternate screen
        assert top.read_until(lambda _: frame_with_rates(top) is not None), top.out[-2000:]
        check_frame(frame_with_rates(top), daemon, "0.3")
        n = len(top.frames())
        assert top.read_until(lambda _: len(top.frames()) >= n + 2), "not redrawn every interval"
        attrs = termios.tcgetattr(top.slave)
        assert not attrs[3] & (termios.ECHO | termios.ICANON) and attrs[3] & termios.ISIG  # keys, Ctrl-C live
        os.write(top.master, b"q")
        assert top.wait() == 0
        assert top.out.endswith(b"\x1b[?25h\x1b[?1049l"), top.out[-100:]  # cursor shown, screen restored
        assert termios.tcgetattr(top.slave) == top.saved
    finally:
        top.close()


def test_top_in_a_terminal_quits_on_ctrl_c(daemon, load):
    top = PtyTop("--socket", daemon.socket, "top", "--interval", "0.2")
    try:
        assert top.read_until(lambda _: len(top.frames()) >= 2), top.out[-2000:]
        os.write(top.master, b"\x03")  # the terminal sends SIGINT to its foreground process group
        assert top.wait() == 0
        assert top.out.endswith(b"\x1b[?25h\x1b[?1049l"), top.out[-100:]
        assert termios.tcgetattr(top.slave) == top.saved
    finally:
        top.close()


def test_top_in_a_terminal_shows_the_daemon_going_away(daemon):
    top = PtyTop("--socket", daemon.socket, "top", "--interval", "0.2")
    try:
        assert top.read_until(lambda _: len(top.frames()) >= 2), top.out[-2000:]
        assert daemon.stop() == 0
        assert top.read_until(lambda _: any(len(f) > 2 and f[2].startswith("daemon not reachable: ")
                                            for f in top.frames())), top.out[-2000:]
        f = next(f for f in top.frames() if len(f) > 2 and f[2].startswith("daemon not reachable"))
        assert f[1] == "" and f[3] == "(trying again every interval)"
        os.write(top.master, b"q")
        assert top.wait() == 0 and termios.tcgetattr(top.slave) == top.saved
    finally:
        top.close()
        daemon.start()  # the fixture stops it again


HEADER = "TIME        OPS/S     HITS/S   MISSES/S   RATIO       USED    ENTRIES  EVICT/S  CONNS  REDIS  QUEUE"


def test_top_plain_lines_when_not_a_terminal(daemon, load):
    with Probe() as p:  # a shared-memory reader: its lookups count as operations
        p.open(daemon.segment)
        reg = p.register(daemon.socket)
        assert p.get("load:1") == "hit"
        r = cli("--socket", daemon.socket, "top", "--interval", "0.2", "--count", "3")
        reg.close()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == HEADER and len(lines) == 4, r.stdout
    for line in lines[1:]:
        m = re.fullmatch(r"(\d\d:\d\d:\d\d) +(\d+) +(\d+) +(\d+) +(\d+\.\d)% +(\d+\.\d KiB) +50 +0 +(\d+)  - +-",
                         line)
        assert m, line
        ops, hits, misses = int(m.group(2)), int(m.group(3)), int(m.group(4))
        assert ops > 0 and hits > 0 and misses > 0 and 55 < float(m.group(5)) < 75, line
        assert int(m.group(7)) >= 3  # the load, the probe's registration, top itself


def test_top_plain_unreachable(tmp_path):
    r = cli("--socket", str(tmp_path / "none.sock"), "top", "--interval", "0.1", "--count", "2")
    assert r.returncode == 3
    lines = r.stdout.splitlines()
    assert lines[0] == HEADER and len(lines) == 3
    for line in lines[1:]:
        assert re.fullmatch(r"\d\d:\d\d:\d\d  daemon not reachable: cannot connect to .*none\.sock: .*", line), line


def test_top_usage_errors(daemon):
    r = cli("--socket", daemon.socket, "top", "--interval", "0")
    assert r.returncode == 2 and r.stderr == "nearcache: --interval must be between 0.1 and 3600 seconds\n"
    r = cli("--socket", daemon.socket, "top", "--count=-1")
    assert r.returncode == 2 and r.stderr == "nearcache: --count must be 0 or more\n"
