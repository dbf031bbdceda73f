"""Clients that pipeline requests and read no replies: each connection's unread
output, and all connections' together, stay bounded (the connection is
paused, not executed ahead), the daemon's memory stays bounded, and the
others are served promptly with the heartbeat running (issue 12, item 3)."""
from __future__ import annotations

import socket
import threading
import time

from attack import Bystander, memory_kib, scale
from support.nearcached import Daemon
from support.rawproto import GET, OK, SET, RawConn, pack

MIB = 1 << 20
# A heartbeat every 20 ms with a 250 ms grace: a loop stall longer than that
# makes the segment reader see a dead daemon.
BEAT = dict(heartbeat_interval_ms=20, heartbeat_grace_ms=250)


def unread_socket(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    return s


def send_gets(s: socket.socket, n: int, key: bytes = b"big") -> None:
    """n GETs in one write; the daemon may stop reading them (then the rest stays unsent)."""
    s.setblocking(False)
    data = b"".join(pack(GET, i + 1, key) for i in range(n))
    try:
        s.send(data)
    except BlockingIOError:
        pass
    s.setblocking(True)


def seed(d: Daemon) -> None:
    with RawConn(d.socket) as c:
        assert c.call(SET, b"big", b"x" * MIB, None)[1] == OK
        assert c.call(SET, b"small", b"s", None)[1] == OK


def check_peak(d: Daemon, before: dict, bound: int) -> None:
    """The daemon's peak RSS grew by less than `bound` bytes since `before`."""
    grew = memory_kib(d.proc.pid)["VmHWM"] - before["VmHWM"]
    assert grew * 1024 < bound, f"peak RSS grew {grew} KiB, bound {bound >> 10} KiB"


def check_bystander(b: Bystander, p99_ms: float = 100.0) -> None:
    assert not b.errors, b.errors
    assert b.checks > 50, b.checks
    assert b.dead == 0, f"the segment reader saw the daemon dead {b.dead} times of {b.checks}"
    assert b.p99() < p99_ms / 1000, f"bystander p99 {b.p99() * 1000:.1f} ms"


def test_unread_pipelined_gets_of_a_big_value_are_paused_not_executed(tmp_path):
    n = scale(2000, 5000)
    limit = 8 * MIB
    with Daemon(tmp_path, value_limit="1M", max_output_bytes="8M", slow_reader_timeout_ms=0, **BEAT) as d:
        seed(d)
        before = memory_kib(d.proc.pid)
        b = Bystander(d)
        b.start()
        attacker = RawConn(d.socket, timeout=30)
        attacker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # All n GETs, in as few writes as the socket takes (a thread: the daemon stops reading them).
        sender = threading.Thread(target=attacker.send_raw,
                                  args=(b"".join(pack(GET, i + 1, b"big") for i in range(n)),), daemon=True)
        sender.start()
        time.sleep(scale(2.0, 10.0))
        check_bystander(b.finish())
        check_peak(d, before, limit + 12 * MIB)  # max_output_bytes and a feed's share; before the fix, n MiB
        with RawConn(d.socket) as c:
            st = c.status()
        assert st["slow_clients_total"] == 0 and st["connections_open"] == 2  # paused, not cut off
        # A pipelining client is legitimate: once it reads, it gets every reply, in order.
        for i in range(n):
            r = attacker.recv()
            assert r[0] == i + 1 and r[1] == OK and len(r[2]) == MIB, r[:2]
        sender.join(10)
        attacker.close()
        check_peak(d, before, limit + 12 * MIB)  # while it read


def test_a_client_that_never_reads_is_cut_after_slow_reader_timeout(tmp_path):
    with Daemon(tmp_path, value_limit="1M", max_output_bytes="4M", slow_reader_timeout_ms=500, **BEAT) as d:
        seed(d)
        s = unread_socket(d.socket)
        send_gets(s, 500)
        t0 = time.monotonic()
        with RawConn(d.socket) as c:
            while c.status()["slow_clients_total"] == 0 and time.monotonic() - t0 < 10:
                time.sleep(0.05)
            assert c.status()["slow_clients_total"] == 1
        assert 0.4 < time.monotonic() - t0 < 5
        assert "none read for 500 ms" in d.log()
        s.close()


def test_many_unread_connections_stay_under_the_global_bound(tmp_path):
    conns, n = scale(12, 48), scale(300, 2000)
    total = 32 * MIB
    with Daemon(tmp_path, value_limit="1M", max_output_bytes="8M", max_output_bytes_total="32M",
                slow_reader_timeout_ms=0, **BEAT) as d:
        seed(d)
        before = memory_kib(d.proc.pid)
        b = Bystander(d)
        b.start()
        socks = []
        for _ in range(conns):
            s = unread_socket(d.socket)
            send_gets(s, n)
            socks.append(s)
        time.sleep(scale(2.0, 10.0))
        check_bystander(b.finish())
        check_peak(d, before, total + 16 * MIB)
        with RawConn(d.socket) as c:
            st = c.status()
            assert c.call(GET, b"big")[1] == OK
        # Those holding the most were cut so that the total stayed bounded; the others wait, paused.
        assert st["slow_clients_total"] >= conns - total // (8 * MIB) - 1, st["slow_clients_total"]
        assert "max_output_bytes_total" in d.log()
        for s in socks:
            s.close()


def test_a_flood_of_big_sets_does_not_hold_up_the_others(tmp_path):
    """Input side: one write of many 1 MiB SETs is executed a share per loop turn."""
    n = scale(300, 3000)
    with Daemon(tmp_path, value_limit="1M", segment_size="64M", **BEAT) as d:
        seed(d)
        b = Bystander(d)
        b.start()
        flood = RawConn(d.socket, timeout=60)
        frame = b"".join(pack(SET, i + 1, b"f%d" % (i % 64), b"y" * MIB, None) for i in range(64))
        # At least n SETs, and for as long as the bystander needs to ask its
        # share of GETs (a fast daemon finishes n before it has asked enough).
        sent, deadline = [0], time.monotonic() + 60

        def send():
            while (sent[0] < n // 64 or b.checks <= 60) and time.monotonic() < deadline:
                sent[0] += 1  # before the send: the reader below waits for its replies
                flood.send_raw(frame)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        replies, frames = [], 0
        while frames < sent[0] or sender.is_alive():
            if frames < sent[0]:
                replies += flood.recv_n(64)
                frames += 1
            else:
                time.sleep(0.001)
        sender.join(10)
        check_bystander(b.finish())
        assert all(r[1] == OK for r in replies)
        flood.close()
