"""The segment probe (tests/support/segment_probe.cc): a real shared-memory
reader in its own process, driven line by line."""
from __future__ import annotations

import os
import socket
import subprocess
import time

from support.nearcached import BUILD
from support.rawproto import HELLO, HITS, OK, RawConn, pack

PROBE = BUILD / "tests" / "support" / "segment_probe"


class Probe:
    """Holds one read-only mapping of a segment across daemon restarts."""

    def __init__(self):
        self.proc = subprocess.Popen([str(PROBE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _cmd(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        return dict(kv.split("=", 1) for kv in reply[1:] if "=" in kv)

    def open(self, path: str) -> dict:
        return self._cmd(f"open {path}")

    def alive(self) -> bool:
        return self._cmd("check")["alive"] == "1"

    def generation(self) -> int:
        return int(self._cmd("check")["generation"])

    def get(self, key: str) -> str:
        return self._cmd(f"get {key}")["status"]

    def attach_hits(self) -> str:
        """Creates the probe's hit region and records into it; returns a path
        (/proc/PID/fd/N) that opens the same memfd, for a test to register."""
        r = self._cmd("attach")
        assert r["fd"] != "-1", r
        return f"/proc/{r['pid']}/fd/{r['fd']}"

    def counts(self) -> dict:
        return {k: int(v) for k, v in self._cmd("counts").items()}

    def flags(self) -> dict:
        return {k: v == "1" for k, v in self._cmd("flags").items()}

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(5)

    def register(self, socket_path: str) -> RawConn:
        """Creates the probe's hit region and registers it with the daemon
        (HELLO, then HITS with the fd), as a client does; the region is
        reported while the returned connection stays open."""
        return register_hits(socket_path, self.attach_hits())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def register_hits(socket_path: str, region: str | int) -> RawConn:
    """Registers a hit region (an fd, or a path such as /proc/PID/fd/N that
    opens it) on a new connection: [HITS, id] with the fd in SCM_RIGHTS."""
    c = RawConn(socket_path)
    assert c.call(HELLO, 2)[1] == OK
    fd = os.open(region, os.O_RDWR) if isinstance(region, str) else region
    try:
        c.next_id += 1
        socket.send_fds(c.sock, [pack(HITS, c.next_id)], [fd])
    finally:
        if isinstance(region, str):
            os.close(fd)
    r = c.recv()
    assert r[1] == OK, r
    return c


def unregister(c: RawConn, status_conn: RawConn, timeout: float = 5.0) -> None:
    """Closes a registering connection and waits until the daemon has read
    its region a last time (STATUS shows one reader process fewer)."""
    before = status_conn.status()["reader_processes"]
    c.close()
    deadline = time.monotonic() + timeout
    while status_conn.status()["reader_processes"] >= before and time.monotonic() < deadline:
        time.sleep(0.01)
