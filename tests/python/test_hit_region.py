"""The client hands the daemon its process's hit region (HITS): hits served
from shared memory count in STATUS once each, per process, after fork too."""
from __future__ import annotations

import os
import time

import nearcache


def status_when(client, pred, timeout=5.0):
    """STATUS once pred(STATUS) holds (the daemon reads hit regions every 20 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        st = client.status()
        if pred(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_hits_from_shared_memory_are_counted_once_per_hit(daemon):
    a, b = nearcache.Client(daemon.socket), nearcache.Client(daemon.socket)  # two clients, one process
    a.set(b"k", b"\x01")
    for _ in range(300):
        assert a.get(b"k") == b"\x01" and b.get(b"k") == b"\x01"
    st = status_when(a, lambda s: s["hits_total"] >= 600)
    # One region per process, registered once: every hit counted once (a
    # client's first lookup, before it has mapped the segment, is the daemon's).
    assert st["hits_total"] == 600 and st["shm_hits_total"] >= 598, st
    assert st["reader_processes"] == 1


def test_a_forked_child_reports_its_own_hits(daemon):
    c = nearcache.Client(daemon.socket)
    c.set(b"k", b"\x02")
    assert c.get(b"k") == b"\x02"
    pid = os.fork()
    if pid == 0:
        try:
            child = nearcache.Client(daemon.socket)
            ok = all(child.get(b"k") == b"\x02" for _ in range(500))
            st = status_when(child, lambda s: s["reader_processes"] >= 2 and s["hits_total"] >= 501)
            os._exit(0 if ok and st["hits_total"] == 501 and st["reader_processes"] == 2 else 1)
        except BaseException:
            os._exit(2)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
