"""LEASE / RELEASE: stampede protection with real concurrent clients."""
from __future__ import annotations

import selectors
import time

import msgpack

from support.rawproto import (DELETE, GET, LEASE, LEASED, OK, PING, RELEASE, SET, SET_MANY, STATUS, TIMEOUT,
                              RawConn, mp, pack)
from support.wait import wait_status


def wait_in_line(waiter: RawConn, observer: RawConn, waiters: int, lease_ms: int = 10000) -> int:
    """waiter asks for the lease on b"k", which another holds; returns its request id once
    the daemon counts `waiters` waiting (so that the next request comes after it)."""
    rid = waiter.send(LEASE, b"k", lease_ms, lease_ms)
    wait_status(observer, lease_waiters=waiters)
    return rid


def test_lease_hit_returns_value(conn):
    conn.call(SET, b"k", b"v", 60000, 4)
    r = conn.call(LEASE, b"k", 1000, 1000)
    assert r[1:4] == [OK, b"v", 4] and 59000 < r[4] <= 60000


def test_first_asker_gets_lease_waiters_get_value(daemon):
    a, b, c = (RawConn(daemon.socket) for _ in range(3))
    r = a.call(LEASE, b"k", 10000, 10000)
    assert r[1] == LEASED and isinstance(r[2], int)
    b.send(LEASE, b"k", 10000, 10000, id=7)
    c.send(LEASE, b"k", 10000, 10000, id=8)
    # The waiters do not block their connections.
    assert b.call(PING)[1] == OK
    st = a.status()
    assert st["lease_waiters"] == 2 and st["leases_active"] == 1
    assert a.call(SET, b"k", b"computed", 30000, 2)[1] == OK
    rb, rc = b.recv(), c.recv()
    assert rb[0] == 7 and rb[1:4] == [OK, b"computed", 2] and 29000 < rb[4] <= 30000
    assert rc[0] == 8 and rc[1:4] == [OK, b"computed", 2]
    assert a.status()["lease_waiters"] == 0


def test_waiters_get_value_even_when_set_expires_at_once(daemon):
    a, b = RawConn(daemon.socket), RawConn(daemon.socket)
    assert a.call(LEASE, b"k", 10000, 10000)[1] == LEASED
    wait_in_line(b, a, 1)
    assert a.call(SET, b"k", b"v", 0)[1] == OK
    assert b.recv()[1:] == [OK, b"v", 0, 0]
    assert a.call(GET, b"k")[1] != OK


def test_set_many_ends_lease(daemon):
    a, b = RawConn(daemon.socket), RawConn(daemon.socket)
    assert a.call(LEASE, b"k", 10000, 10000)[1] == LEASED
    wait_in_line(b, a, 1)
    a.call(SET_MANY, [[b"k", b"many", 1]], None)
    assert b.recv()[1:] == [OK, b"many", 1, None]


def test_release_hands_lease_to_longest_waiter(daemon):
    a, b, c = (RawConn(daemon.socket) for _ in range(3))
    token = a.call(LEASE, b"k", 10000, 10000)[2]
    wait_in_line(b, a, 1)
    wait_in_line(c, a, 2)
    assert a.call(RELEASE, b"k", token + 1)[1] != OK  # not the current token: changes nothing
    assert a.call(RELEASE, b"k", token)[1] == OK
    rb = b.recv()
    assert rb[1] == LEASED and rb[2] != token
    assert a.call(RELEASE, b"k", token)[1] != OK  # a spent token
    # c still waits; b's SET answers it.
    b.call(SET, b"k", b"from-b", None)
    assert c.recv()[1:3] == [OK, b"from-b"]


def test_holder_disconnect_hands_over(daemon):
    a, b = RawConn(daemon.socket), RawConn(daemon.socket)
    assert a.call(LEASE, b"k", 60000, 60000)[1] == LEASED
    wait_in_line(b, a, 1, lease_ms=60000)
    a.close()
    r = b.recv()
    assert r[1] == LEASED


def test_lease_expiry_hands_over(daemon):
    a, b = RawConn(daemon.socket), RawConn(daemon.socket)
    assert a.call(LEASE, b"k", 100, 10000)[1] == LEASED
    t0 = time.monotonic()
    b.send(LEASE, b"k", 10000, 10000)
    r = b.recv()
    assert r[1] == LEASED
    assert 0.05 < time.monotonic() - t0 < 2


def test_wait_timeout(daemon):
    a, b = RawConn(daemon.socket), RawConn(daemon.socket)
    assert a.call(LEASE, b"k", 10000, 10000)[1] == LEASED
    t0 = time.monotonic()
    assert b.call(LEASE, b"k", 10000, 100)[1] == TIMEOUT
    assert 0.08 < time.monotonic() - t0 < 2
    assert b.call(LEASE, b"k", 10000, 0)[1] == TIMEOUT  # wait_ms 0: no wait at all
    st = b.status()
    assert st["lease_timeouts_total"] == 2 and st["lease_waiters"] == 0


def test_waiter_disconnect_is_forgotten(daemon):
    a, b, c = (RawConn(daemon.socket) for _ in range(3))
    token = a.call(LEASE, b"k", 10000, 10000)[2]
    wait_in_line(b, a, 1)
    wait_in_line(c, a, 2)
    b.close()
    wait_status(a, "the daemon to see b close", connections_open=2)  # a and c
    assert a.status()["lease_waiters"] == 1
    a.call(RELEASE, b"k", token)
    assert c.recv()[1] == LEASED  # not lost on the departed b


def test_delete_does_not_end_lease(daemon):
    a, b = RawConn(daemon.socket), RawConn(daemon.socket)
    token = a.call(LEASE, b"k", 10000, 10000)[2]
    a.call(DELETE, b"k")
    assert b.call(LEASE, b"k", 10000, 50)[1] == TIMEOUT
    assert a.call(RELEASE, b"k", token)[1] == OK


def _stampede(daemon, n, holder_behaviour, sel=None):
    """n connections LEASE one missing key at once; returns (computations, replies, seconds)."""
    sel = sel or selectors.DefaultSelector()
    conns = [RawConn(daemon.socket) for _ in range(n)]
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    t0 = time.monotonic()
    for i, c in enumerate(conns):
        c.sock.sendall(pack(LEASE, i, b"hot", 10000, 20000))
    replies = {}
    computations = 0
    deadline = time.monotonic() + 30
    while len(replies) < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(c.sock)
                continue
            c.unpacker.feed(data)
            for r in c.unpacker:
                if r[0] == 10**6:  # the holder's SET
                    continue
                replies[r[0]] = r
                if r[1] == LEASED:
                    computations += 1
                    holder_behaviour(c, r)
    elapsed = time.monotonic() - t0
    for c in conns:
        c.close()
    return computations, replies, elapsed


def test_thousand_waiters_one_computation(daemon):
    def compute_and_set(c, r):
        c.sock.sendall(pack(SET, 10**6, b"hot", mp("value"), 60000))

    computations, replies, elapsed = _stampede(daemon, 1000, compute_and_set)
    assert computations == 1
    values = [r for r in replies.values() if r[1] == OK]
    assert len(replies) == 1000 and len(values) == 999
    assert all(r[2] == mp("value") for r in values)
    print(f"1000 waiters served in {elapsed * 1000:.1f} ms")
    st = RawConn(daemon.socket).status()
    assert st["leases_granted_total"] == 1 and st["lease_waiters"] == 0 and st["leases_active"] == 0


def test_thousand_waiters_holder_disconnects(daemon):
    """The first holder vanishes; exactly one waiter inherits the lease and computes."""
    holders = []
    sel = selectors.DefaultSelector()

    def first_vanishes(c, r):
        holders.append(c)
        if len(holders) == 1:
            sel.unregister(c.sock)
            c.sock.close()
        else:
            c.sock.sendall(pack(SET, 10**6, b"hot", mp("second"), 60000))

    computations, replies, _ = _stampede(daemon, 1000, first_vanishes, sel)
    assert computations == 2
    values = [r for r in replies.values() if r[1] == OK]
    assert len(replies) == 1000 and len(values) == 998 and all(r[2] == mp("second") for r in values)
    assert sorted(r[1] for r in replies.values() if r[1] != OK) == [LEASED, LEASED]
