"""Hit hints without a shared writable object (issue 12, item 1): each reader
process reports its hits in its own sealed memfd (a hit region) that it
passes to the daemon with HITS; the daemon validates it, reads it with pread
and never maps it. A hostile process that punches holes in its region,
fills it with garbage, claims huge counters, or sends something that is not
a sealed memfd of the right size cannot crash or stall the daemon, cannot
take other readers' hits away, and moves STATUS's hit counts only by what
is plausible. No file in the runtime directory is writable by others."""
from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import stat
import tempfile
import time

import pytest

from support.nearcached import Daemon
from support.probe import Probe, register_hits
from support.rawproto import BAD_ARGS, HELLO, HITS, OK, PING, SET, RawConn, mp, pack

REGION_BYTES = 64 + 4096 * 4  # shm/layout.h kHitRegionBytes
MAGIC = 0x325449485241454E    # "NEARHIT2"
MAX_PER_MS = 20000            # shm/hits.h HitSource::kMaxLookupsPerMs
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def punch_hole(fd: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def memfd(size: int = REGION_BYTES, seals: int = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) -> int:
    fd = os.memfd_create("hostile", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def header(hits=0, misses=0, busy=0, head=0, generation=0) -> bytes:
    return (MAGIC.to_bytes(8, "little") + (2).to_bytes(4, "little") + (4096).to_bytes(4, "little") +
            b"".join(v.to_bytes(8, "little") for v in (generation, hits, misses, busy, head, 0)))


def hits_call(c: RawConn, fds: list[int]):
    """HITS with `fds` in the ancillary data of the same sendmsg."""
    c.next_id += 1
    socket.send_fds(c.sock, [pack(HITS, c.next_id)], fds)
    return c.recv()


def register(d: Daemon, region) -> RawConn:
    return register_hits(d.socket, region)


def shm_counts(c: RawConn) -> tuple[int, int, int]:
    s = c.status()
    return s["shm_hits_total"], s["shm_misses_total"], s["reader_processes"]


def wait_for(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def daemon_fds(d: Daemon) -> int:
    return len(os.listdir(f"/proc/{d.pid}/fd"))


def test_a_registered_region_reports_hits_and_a_closed_one_keeps_its_counts(tmp_path):
    with Daemon(tmp_path) as d, Probe() as probe, RawConn(d.socket) as c:
        assert c.call(SET, b"k", mp("v"), None)[1] == OK
        assert probe.open(d.segment)["rc"] == "0"
        assert probe.flags() == {"authoritative": True, "suspended": False}  # no Redis tier
        reg = register(d, probe.attach_hits())
        for _ in range(50):
            assert probe.get("k") == "hit"
        assert probe.get("nope") == "miss"
        assert probe.counts() == {"hits": 50, "misses": 1, "busy": 0}
        assert wait_for(lambda: shm_counts(c)[:2] == (50, 1)), shm_counts(c)
        assert shm_counts(c)[2] == 1
        reg.close()  # the connection goes: its region is read a last time and forgotten
        assert wait_for(lambda: shm_counts(c)[2] == 0)
        assert shm_counts(c)[:2] == (50, 1)
        for _ in range(5):
            probe.get("k")  # recorded in a region nobody reads any more
        time.sleep(0.1)
        assert shm_counts(c)[0] == 50


def test_objects_that_are_not_sealed_regions_are_refused(tmp_path):
    with Daemon(tmp_path) as d, RawConn(d.socket) as c:
        assert c.call(PING)[1] == OK  # the connection is accepted: its socket is counted
        base = daemon_fds(d)
        r, w = os.pipe()
        regular = tempfile.TemporaryFile(dir=tmp_path)
        regular.truncate(REGION_BYTES)
        sock_a, sock_b = socket.socketpair()
        bad = {
            "unsealed memfd": memfd(seals=0),
            "grow-only seal": memfd(seals=fcntl.F_SEAL_SHRINK),
            "too small": memfd(REGION_BYTES - 4),
            "too large": memfd(REGION_BYTES + 4096),
            "regular file": regular.fileno(),
            "pipe": r,
            "socket": sock_a.fileno(),
        }
        for what, fd in bad.items():
            reply = hits_call(c, [fd])
            assert reply[1] == BAD_ARGS, (what, reply)
        assert c.call(HITS)[1] == BAD_ARGS  # no descriptor at all
        # Two descriptors in one HITS: the first is judged, the second closed unread.
        good = memfd()
        reply = hits_call(c, [good, memfd()])
        assert reply[1] == OK, reply
        assert hits_call(c, [memfd()])[1] == BAD_ARGS  # one region per connection
        # Descriptors sent with other requests are not kept.
        for _ in range(50):
            socket.send_fds(c.sock, [pack(PING, 99)], [memfd()])
            assert c.recv()[1] == OK
        assert c.call(PING)[1] == OK
        # The daemon holds one descriptor more than before: the one region it took.
        assert wait_for(lambda: daemon_fds(d) == base + 1), (daemon_fds(d), base)
        for f in (w, sock_b.fileno()):
            os.close(f)
        regular.close()


def test_a_hostile_region_cannot_hurt_the_daemon_or_other_readers(tmp_path):
    # A fast heartbeat with a short grace: a stalled loop would show as a dead writer.
    with Daemon(tmp_path, heartbeat_interval_ms=20, heartbeat_grace_ms=250) as d, Probe() as probe, \
            RawConn(d.socket) as c:
        assert c.call(SET, b"k", mp("v"), None)[1] == OK
        assert probe.open(d.segment)["rc"] == "0"
        honest = register(d, probe.attach_hits())
        fd = memfd()
        hostile = register(d, fd)
        t0 = time.monotonic()
        hits0 = shm_counts(c)[0]
        # Garbage, holes, then lies: huge counters and a head far ahead with
        # out-of-range way indexes, and a counter that goes backwards.
        attacks = [
            lambda: os.pwrite(fd, os.urandom(REGION_BYTES), 0),
            lambda: punch_hole(fd, 0, REGION_BYTES),
            lambda: os.pwrite(fd, header(hits=2**63, misses=2**64 - 1, busy=2**62, head=2**60), 0),
            lambda: os.pwrite(fd, b"\xff" * (REGION_BYTES - 64), 64),
            lambda: os.pwrite(fd, header(hits=5, head=3), 0),
            lambda: punch_hole(fd, 4096, 8192),
            lambda: os.pwrite(fd, header(hits=2**64 - 1, head=2**64 - 1), 0),
        ]
        served = 0
        for attack in attacks:
            attack()
            for _ in range(20):
                assert probe.get("k") == "hit"
                served += 1
            time.sleep(0.05)  # a few of the daemon's polls
            assert c.call(PING)[1] == OK
            assert probe.alive()
        # The honest reader's hits all arrive.
        assert wait_for(lambda: shm_counts(c)[0] - hits0 >= served)
        elapsed_ms = (time.monotonic() - t0) * 1000 + 100
        moved = shm_counts(c)[0] - hits0
        # The liar moved the count only by what one process could plausibly
        # do in that time, never by 2**63.
        assert moved <= served + elapsed_ms * MAX_PER_MS, moved
        assert shm_counts(c)[0] < 2**40
        # The daemon kept serving and its table is intact.
        assert c.call(SET, b"k2", mp("w"), None)[1] == OK
        assert probe.get("k2") == "hit"
        honest.close()
        hostile.close()
        os.close(fd)


def test_no_file_in_the_runtime_directory_is_writable_by_others(tmp_path):
    with Daemon(tmp_path) as d, Probe() as probe:
        assert probe.open(d.segment)["rc"] == "0"
        register(d, probe.attach_hits()).close()
        rundir = os.path.dirname(d.segment)
        assert not os.path.exists(d.segment + ".hints")
        for name in os.listdir(rundir):
            st = os.lstat(os.path.join(rundir, name))
            if stat.S_ISSOCK(st.st_mode):
                continue  # connecting needs write permission: the socket's mode is the access control
            assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), (name, oct(st.st_mode))


@pytest.mark.parametrize("n", [200])
def test_many_regions_are_each_bounded_and_dropped_with_their_connections(tmp_path, n):
    with Daemon(tmp_path, max_connections=n + 10) as d, RawConn(d.socket) as c:
        conns = []
        for _ in range(n):
            fd = memfd()
            conns.append(register(d, fd))
            os.close(fd)  # the daemon holds its own reference
        assert wait_for(lambda: shm_counts(c)[2] == n)
        for x in conns:
            x.close()
        assert wait_for(lambda: shm_counts(c)[2] == 0)
        assert c.call(PING)[1] == OK
