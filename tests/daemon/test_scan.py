"""SCAN and DELETE_PATTERN (doc/protocol.md) against a real daemon: glob
patterns, cursors, every entry present throughout a scan returned once while
other clients write and are served, and the bounds on scans in progress."""
from __future__ import annotations

import threading
import time

from support.nearcached import Daemon
from support.rawproto import (BAD_ARGS, DELETE, DELETE_PATTERN, GET, KEY_TOO_LONG, NOT_FOUND, OK, PING, SCAN, SET,
                              SET_MANY, TOO_MANY_REQUESTS, RawConn)
from support.wait import wait_for


def fill(c: RawConn, keys: list[bytes], value: bytes = b"v") -> None:
    batch = 1000
    for i in range(0, len(keys), batch):
        c.send(SET_MANY, [[k, value, 0] for k in keys[i:i + batch]], None)
    for r in c.recv_n((len(keys) + batch - 1) // batch):
        assert r[1] == OK and r[2] == []


def scan_all(c: RawConn, pattern: bytes, count: int = 100) -> list[bytes]:
    keys, cursor, rounds = [], 0, 0
    while True:
        r = c.call(SCAN, cursor, pattern, count)
        assert r[1] == OK, r
        assert len(r[3]) <= count
        keys.extend(r[3])
        cursor, rounds = r[2], rounds + 1
        if cursor == 0:
            return keys


def test_scan_returns_each_matching_key_once(conn):
    fill(conn, [b"p:1:user:%d" % i for i in range(500)] + [b"p:1:item:%d" % i for i in range(500)]
         + [b"p:2:user:%d" % i for i in range(50)])
    got = scan_all(conn, b"p:1:user:*")
    assert sorted(got) == sorted(b"p:1:user:%d" % i for i in range(500))
    assert len(scan_all(conn, b"*", count=10000)) == 1050
    assert sorted(scan_all(conn, b"p:?:user:4?")) == sorted([b"p:1:user:4%d" % i for i in range(10)]
                                                            + [b"p:2:user:4%d" % i for i in range(10)])
    assert sorted(scan_all(conn, b"p:[2-3]:user:1*")) == sorted(b"p:2:user:%d" % i for i in [1] + list(range(10, 20)))
    assert scan_all(conn, b"p:1:user:7") == [b"p:1:user:7"]
    assert scan_all(conn, b"nothing*") == []


def test_cursors(daemon, conn):
    fill(conn, [b"k%d" % i for i in range(100)])
    r = conn.call(SCAN, 0, b"*", 10)
    assert r[1] == OK and len(r[3]) == 10 and r[2] != 0
    cursor = r[2]
    with RawConn(daemon.socket) as other:       # another connection (a client's pool) may go on
        r2 = other.call(SCAN, cursor, b"*", 30)
        assert r2[1] == OK and len(r2[3]) == 30 and r2[2] == cursor
        assert other.call(SCAN, cursor, b"*", 0)[1:] == [OK, 0, []]   # count 0 ends the scan
    assert conn.call(SCAN, cursor, b"*", 10)[1] == NOT_FOUND
    assert conn.call(SCAN, 987654, b"*", 10)[1] == NOT_FOUND
    assert conn.call(SCAN, 0, b"x" * 2000, 10)[1] == KEY_TOO_LONG
    assert conn.call(SCAN, 0, b"*")[1] == BAD_ARGS
    # At most 16 scans in progress per connection; they end with it.
    started = [conn.call(SCAN, 0, b"*", 1) for _ in range(16)]
    assert all(r[1] == OK and r[2] != 0 for r in started)
    assert conn.call(SCAN, 0, b"*", 1)[1] == TOO_MANY_REQUESTS
    with RawConn(daemon.socket) as other:
        assert other.call(SCAN, started[0][2], b"*", 1)[1] == OK
    conn.close()
    with RawConn(daemon.socket) as other:
        wait_for(lambda: other.call(SCAN, started[1][2], b"*", 1)[1] == NOT_FOUND, what="the scans to end")


def test_a_scan_sees_every_entry_present_throughout_while_others_write_and_are_served(tmp_path):
    with Daemon(tmp_path, segment_size="32M") as d:
        c = RawConn(d.socket)
        old = [b"old:%d" % i for i in range(150000)]
        fill(c, old, b"v" * 100)
        present = c.status()["entries"]
        assert present > 100000
        stop = threading.Event()
        pings, deleted, errors = [], set(), []

        def writer():
            w = RawConn(d.socket)
            i = 0
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    assert w.call(PING)[1] == OK
                    pings.append(time.monotonic() - t0)
                    w.call(SET, b"new:%d" % i, b"n" * 100, None)  # may evict and move old entries
                    w.call(DELETE, b"old:%d" % (i * 7 % len(old)))
                    deleted.add(b"old:%d" % (i * 7 % len(old)))
                    i += 1
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        wait_for(lambda: pings, what="the other client to be served")
        got = scan_all(c, b"old:*", count=5000)
        stop.set()
        t.join()
        assert not errors
        assert len(got) == len(set(got)), "a key was returned twice"
        st = c.status()
        seen = set(got)
        missing = [k for k in old if k not in seen and k not in deleted]
        # Every old key still in the table now (not deleted, not evicted) was returned.
        still = [k for k in missing if c.call(GET, k)[1] == OK]
        assert still == [], still[:5]
        assert all(k.startswith(b"old:") for k in got)
        print(f"scanned {len(got)} of {present} entries; {len(pings)} PINGs, max {max(pings) * 1000:.1f} ms; "
              f"loop lag max {st['loop_lag_max_ms']:.1f} ms")
        assert len(pings) > 3
        c.close()


def test_delete_pattern_removes_exactly_the_matching_keys(conn):
    fill(conn, [b"p:1:user:%d" % i for i in range(300)] + [b"p:1:item:%d" % i for i in range(300)])
    r = conn.call(DELETE_PATTERN, b"p:1:user:1*")
    assert r[1:] == [OK, 111]
    assert conn.call(GET, b"p:1:user:150")[1] == NOT_FOUND
    assert conn.call(GET, b"p:1:user:250")[1] == OK
    assert conn.call(GET, b"p:1:item:150")[1] == OK
    assert conn.call(DELETE_PATTERN, b"p:1:user:1*")[1:] == [OK, 0]
    assert conn.call(DELETE_PATTERN, b"*")[1:] == [OK, 489]
    assert conn.status()["entries"] == 0
