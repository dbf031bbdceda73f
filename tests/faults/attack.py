"""Tools of the fault-isolation tests: the attack's size (short or long
version), a process's memory, and a bystander that measures how promptly the
daemon answers while it is attacked."""
from __future__ import annotations

import os
import threading
import time

from support.probe import Probe
from support.rawproto import GET, OK, NOT_FOUND, RawConn

LONG = os.environ.get("NEARCACHE_FAULTS_LONG", "") not in ("", "0")


def scale(short, long):
    """The short version's size of an attack, or the long one's with NEARCACHE_FAULTS_LONG=1."""
    return long if LONG else short


def memory_kib(pid: int) -> dict:
    """VmRSS and VmHWM (peak RSS) of a process in KiB, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(rest.split()[0])
    return out


class Bystander(threading.Thread):
    """Another client of the daemon, asking GETs one at a time while the attack
    runs, and a segment reader checking the heartbeat: what it saw is in
    .latencies (seconds) and .dead (checks that found the segment not alive)."""

    def __init__(self, daemon, key: bytes = b"small"):
        super().__init__(daemon=True)
        self.d, self.key = daemon, key
        self.latencies: list[float] = []
        self.dead = 0
        self.checks = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self):
        probe = Probe()
        try:
            probe.open(self.d.segment)
            with RawConn(self.d.socket) as c:
                while not self.stop.is_set():
                    t0 = time.monotonic()
                    r = c.call(GET, self.key)
                    self.latencies.append(time.monotonic() - t0)
                    if r[1] not in (OK, NOT_FOUND):
                        self.errors.append(repr(r))
                    self.checks += 1
                    self.dead += not probe.alive()
                    time.sleep(0.002)
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))
        finally:
            probe.close()

    def finish(self) -> "Bystander":
        self.stop.set()
        self.join(10)
        return self

    def p99(self) -> float:
        s = sorted(self.latencies)
        return s[int(len(s) * 0.99)] if s else float("inf")
