"""Flow control: outstanding requests, unread replies (slow readers), connections."""
from __future__ import annotations

import socket

from support.nearcached import Daemon
from support.rawproto import (GET, GET_MANY, LEASE, LEASED, OK, PING, SET, TOO_MANY_REQUESTS, UNAVAILABLE, Closed,
                              RawConn, pack)
from support.wait import wait_logged, wait_status


def test_max_outstanding(tmp_path):
    with Daemon(tmp_path, max_outstanding=3) as d:
        holder, w = RawConn(d.socket), RawConn(d.socket)
        assert holder.call(LEASE, b"k", 10000, 10000)[1] == LEASED
        for i in range(3):
            w.send(LEASE, b"k", 10000, 10000, id=i + 1)
        w.send(PING, id=10)
        r = w.recv()
        assert r[0] == 10 and r[1] == TOO_MANY_REQUESTS and "limit 3" in r[2]
        holder.call(SET, b"k", b"v", None)
        assert sorted(x[0] for x in w.recv_n(3)) == [1, 2, 3]
        assert w.call(PING)[1] == OK  # the count dropped: served again


def test_slow_reader_is_disconnected(tmp_path):
    with Daemon(tmp_path, max_output_bytes="256K") as d:
        c = RawConn(d.socket)
        c.call(SET, b"big", b"x" * 60000, None)
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(d.socket)
        # 600 GETs of 60 KB = 36 MB of replies it never reads.
        req = pack(GET, 1, b"big") * 600
        slow.settimeout(10)
        try:
            slow.sendall(req)
        except (BrokenPipeError, ConnectionResetError):
            pass  # already cut off
        wait_logged(d, "slow reader", 10)
        assert "over max_output_bytes" in d.log()
        st = c.status()
        assert st["slow_clients_total"] == 1
        assert st["connections_open"] == 1 and len(st["connections"]) == 1  # only c is left
        assert c.call(GET, b"big")[1] == OK  # others never noticed
        slow.close()


def test_fast_pipelining_reader_is_not_disconnected(tmp_path):
    """A client that pipelines a lot but reads as it goes stays connected."""
    with Daemon(tmp_path, max_output_bytes="256K") as d:
        c = RawConn(d.socket)
        c.call(SET, b"v", b"x" * 1000, None)
        for _ in range(20):
            for i in range(100):
                c.send(GET, b"v")
            assert all(r[1] == OK for r in c.recv_n(100))
        assert c.status()["slow_clients_total"] == 0


def test_get_many_larger_than_output_limit(tmp_path):
    with Daemon(tmp_path, max_output_bytes="64K") as d:
        c = RawConn(d.socket)
        for i in range(10):
            c.call(SET, b"k%d" % i, b"x" * 20000, None)
        c.send(GET_MANY, [b"k%d" % i for i in range(10)])
        try:
            c.recv()
            raise AssertionError("expected a disconnect")
        except (Closed, ConnectionResetError):
            pass
        assert "GET_MANY reply larger than max_output_bytes" in d.log()
        assert RawConn(d.socket).call(PING)[1] == OK


def test_max_connections(tmp_path):
    with Daemon(tmp_path, max_connections=2) as d:
        a = RawConn(d.socket)
        wait_status(a, "the launcher's readiness probe to disconnect", connections_open=1)
        b = RawConn(d.socket)
        assert a.call(PING)[1] == OK and b.call(PING)[1] == OK
        extra = RawConn(d.socket)
        r = extra.recv()
        assert r[0] is None and r[1] == UNAVAILABLE and "max_connections 2" in r[2]
        assert extra.closed_by_peer()
        b.close()
        wait_status(a, "the daemon to see b close", connections_open=1)
        assert RawConn(d.socket).call(PING)[1] == OK
        assert a.status()["connections_refused_total"] == 1
