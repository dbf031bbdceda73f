"""Every operation of doc/protocol.md against a real daemon, one at a time and pipelined."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from support.nearcached import Daemon
from support.rawproto import (ADD, CLEAR, DECR, DELETE, DELETE_MANY, EXISTS, GET, GET_MANY, HAS_KEY, HELLO, INCR,
                              NOT_FOUND, NOT_INTEGER, OK, OUT_OF_RANGE, PING, RELEASE, SET, SET_MANY, STATUS, TOUCH,
                              UNSUPPORTED_VERSION, RawConn, mp)

INT64_MAX = 2**63 - 1
INT64_MIN = -2**63


def test_hello_reports_segment_and_limits(daemon, conn):
    r = conn.call(HELLO, 2, "pytest")
    assert r[1] == OK
    info = r[2]
    assert info["protocol"] == 2
    assert info["server"].startswith("nearcached ")
    assert info["pid"] == daemon.pid
    assert info["segment"] == daemon.segment
    assert "hints" not in info  # layout 2 has no hints file
    assert info["posix_shm"] is False
    assert info["layout"] == 2
    assert info["generation"] > 0
    assert info["key_limit"] == 1024 and info["value_limit"] == 1 << 20
    assert info["max_frame_bytes"] == (4 << 20) + 1024 + (1 << 20)
    assert info["heartbeat_grace_ms"] == 2000


def test_hello_announces_the_segment_object_and_the_clock(daemon, conn):
    """A client checks that it maps the object the daemon writes (same st_dev
    and st_ino as fstat of its mapping), and that its CLOCK_MONOTONIC is the
    daemon's (a client in another time namespace sees a different one)."""
    before = time.monotonic() * 1000
    info = conn.call(HELLO, 2)[2]
    after = time.monotonic() * 1000
    st = os.stat(daemon.segment)
    assert (info["segment_dev"], info["segment_ino"]) == (st.st_dev, st.st_ino)
    # CLOCK_MONOTONIC in ms, read between the two readings here (ms truncation: -1).
    assert before - 1 <= info["clock_ms"] <= after + 1
    time.sleep(0.05)
    later = conn.call(HELLO, 2)[2]
    assert later["clock_ms"] - info["clock_ms"] >= 50
    assert (later["segment_dev"], later["segment_ino"]) == (st.st_dev, st.st_ino)


def test_hello_identity_tells_a_swapped_segment_file(daemon, conn):
    """A copy moved over the segment's path is another object: HELLO still
    announces the daemon's own, which a client can tell from the copy."""
    copy = daemon.segment + ".copy"
    shutil.copyfile(daemon.segment, copy)
    os.rename(copy, daemon.segment)
    info = conn.call(HELLO, 2)[2]
    st = os.stat(daemon.segment)
    assert (info["segment_dev"], info["segment_ino"]) != (st.st_dev, st.st_ino)
    assert info["segment"] == daemon.segment


def test_hello_identity_of_a_posix_shm_segment(tmp_path):
    name = f"/nearcache-test-{os.getpid()}-{time.monotonic_ns()}"
    with Daemon(tmp_path, posix_shm="true", segment=name) as d, RawConn(d.socket) as c:
        info = c.call(HELLO, 2)[2]
        assert info["posix_shm"] is True and info["segment"] == name
        st = os.stat("/dev/shm" + name)
        assert (info["segment_dev"], info["segment_ino"]) == (st.st_dev, st.st_ino)


def test_hello_negotiates_version(conn):
    assert conn.call(HELLO, 7)[2]["protocol"] == 2
    assert conn.call(HELLO, 1)[2]["protocol"] == 1
    r = conn.call(HELLO, 0)
    assert r[1] == UNSUPPORTED_VERSION and "UNSUPPORTED_VERSION" in r[2]
    assert conn.call(PING)[1] == OK  # the connection stays usable


def test_protocol_1_get_reply_has_no_flags_or_ttl(conn):
    conn.call(SET, b"k", b"v", None, 7)
    assert conn.call(GET, b"k")[1:] == [OK, b"v", 7, None]
    conn.call(HELLO, 1)
    assert conn.call(GET, b"k")[1:] == [OK, b"v"]


def test_ping(conn):
    assert conn.call(PING) == [1, OK]


def test_set_get_with_flags_and_ttl(conn):
    assert conn.call(SET, b"a", mp("x"), None) == [1, OK]
    assert conn.call(GET, b"a")[1:] == [OK, mp("x"), 0, None]
    assert conn.call(SET, b"b", b"\x00\xff", 60000, 200)[1] == OK
    r = conn.call(GET, b"b")
    assert r[1:4] == [OK, b"\x00\xff", 200]
    assert 59000 < r[4] <= 60000
    # str and bin keys are the same bytes
    assert conn.call(GET, "a")[2] == mp("x")
    assert conn.call(GET, b"missing") == [6, NOT_FOUND]


def test_empty_key_and_value(conn):
    assert conn.call(SET, b"", b"", None)[1] == OK
    assert conn.call(GET, b"")[1:3] == [OK, b""]


def test_ttl_expire_now_and_expiry(conn):
    conn.call(SET, b"k", b"v", None)
    assert conn.call(SET, b"k", b"v2", 0)[1] == OK  # timeout=0: the key is gone
    assert conn.call(GET, b"k")[1] == NOT_FOUND
    assert conn.call(SET, b"k", b"v", -5)[1] == OK
    assert conn.call(HAS_KEY, b"k")[1] == NOT_FOUND
    conn.call(SET, b"short", b"v", 50)
    assert conn.call(GET, b"short")[1] == OK
    time.sleep(0.12)  # the 50 ms TTL passes
    assert conn.call(GET, b"short")[1] == NOT_FOUND


def test_add(conn):
    assert conn.call(ADD, b"k", b"1", None)[1] == OK
    assert conn.call(ADD, b"k", b"2", None)[1] == EXISTS
    assert conn.call(GET, b"k")[2] == b"1"
    conn.call(SET, b"e", b"old", 30)
    time.sleep(0.06)  # the 30 ms TTL passes
    assert conn.call(ADD, b"e", b"new", None, 3)[1] == OK  # an expired key is absent
    assert conn.call(GET, b"e")[1:4] == [OK, b"new", 3]


def test_get_many_and_set_many(conn):
    r = conn.call(SET_MANY, [[b"a", b"1", 1], [b"b", b"2", 2], ["c", "3"]], None)
    assert r[1:] == [OK, []]
    r = conn.call(GET_MANY, [b"a", b"nope", b"c", b"b"])
    assert r[1:] == [OK, [[b"1", 1], None, [b"3", 0], [b"2", 2]]]
    assert conn.call(GET_MANY, [])[1:] == [OK, []]


def test_set_many_reports_items_over_limits(conn):
    r = conn.call(SET_MANY, [[b"ok", b"v", 0], [b"k" * 1025, b"v", 0], [b"big", b"x" * ((1 << 20) + 1), 0]], 60000)
    assert r[1] == OK
    assert r[2] == [b"k" * 1025, b"big"]
    assert conn.call(GET, b"ok")[1] == OK
    assert conn.call(GET, b"big")[1] == NOT_FOUND


def test_delete_and_delete_many(conn):
    conn.call(SET_MANY, [[b"a", b"1", 0], [b"b", b"2", 0], [b"c", b"3", 0]], None)
    assert conn.call(DELETE, b"a")[1] == OK
    assert conn.call(DELETE, b"a")[1] == NOT_FOUND
    assert conn.call(DELETE_MANY, [b"a", b"b", b"c", b"zz"])[1:] == [OK, 2]
    assert conn.call(GET_MANY, [b"a", b"b", b"c"])[2] == [None, None, None]


def test_touch(conn):
    conn.call(SET, b"k", b"v", None)
    assert conn.call(TOUCH, b"k", 100000)[1] == OK
    assert 99000 < conn.call(GET, b"k")[4] <= 100000
    assert conn.call(TOUCH, b"k", None)[1] == OK
    assert conn.call(GET, b"k")[4] is None
    assert conn.call(TOUCH, b"k", 0)[1] == OK  # <= 0 deletes
    assert conn.call(GET, b"k")[1] == NOT_FOUND
    assert conn.call(TOUCH, b"missing", 1000)[1] == NOT_FOUND


def test_incr_decr(conn):
    conn.call(SET, b"n", mp(10), 60000, 9)
    assert conn.call(INCR, b"n", 5)[1:] == [OK, 15]
    assert conn.call(DECR, b"n", 20)[1:] == [OK, -5]
    assert conn.call(INCR, b"n", -1)[1:] == [OK, -6]
    r = conn.call(GET, b"n")
    assert r[2] == mp(-6) and r[3] == 9 and 59000 < r[4] <= 60000  # flags and expiry kept
    assert conn.call(INCR, b"missing", 1)[1] == NOT_FOUND
    assert conn.call(GET, b"missing")[1] == NOT_FOUND  # never created
    conn.call(SET, b"s", mp("text"), None)
    r = conn.call(INCR, b"s", 1)
    assert r[1] == NOT_INTEGER and "NOT_INTEGER" in r[2]
    conn.call(SET, b"two", mp(1) + mp(2), None)  # two integers are not one
    assert conn.call(INCR, b"two", 1)[1] == NOT_INTEGER


def test_incr_range(conn):
    conn.call(SET, b"n", mp(INT64_MAX - 1), None)
    assert conn.call(INCR, b"n", 1)[1:] == [OK, INT64_MAX]
    r = conn.call(INCR, b"n", 1)
    assert r[1] == OUT_OF_RANGE and "OUT_OF_RANGE" in r[2]
    assert conn.call(GET, b"n")[2] == mp(INT64_MAX)  # unchanged
    conn.call(SET, b"m", mp(-1), None)
    assert conn.call(DECR, b"m", INT64_MIN)[1:] == [OK, INT64_MAX]
    conn.call(SET, b"z", mp(0), None)
    assert conn.call(DECR, b"z", INT64_MIN)[1] == OUT_OF_RANGE
    assert conn.call(GET, b"z")[2] == mp(0)
    assert conn.call(DECR, b"z", INT64_MAX)[1:] == [OK, -INT64_MAX]
    assert conn.call(DECR, b"z", 1)[1:] == [OK, INT64_MIN]
    assert conn.call(DECR, b"z", 1)[1] == OUT_OF_RANGE


def test_has_key(conn):
    conn.call(SET, b"k", b"v", None)
    assert conn.call(HAS_KEY, b"k")[1] == OK
    assert conn.call(HAS_KEY, b"x")[1] == NOT_FOUND


def test_clear_all_and_prefix(conn):
    conn.call(SET_MANY, [[b"a:1", b"v", 0], [b"a:2", b"v", 0], [b"ab:1", b"v", 0], [b"b", b"v", 0]], None)
    assert conn.call(CLEAR, b"a:")[1:] == [OK, 2]
    assert conn.call(GET_MANY, [b"a:1", b"a:2", b"ab:1", b"b"])[2] == [None, None, [b"v", 0], [b"v", 0]]
    assert conn.call(CLEAR, b"zzz")[1:] == [OK, 0]
    assert conn.call(CLEAR, None)[1:] == [OK, 2]
    conn.call(SET, b"c", b"v", None)
    assert conn.call(CLEAR, b"")[1:] == [OK, 1]
    conn.call(SET, b"d", b"v", None)
    assert conn.call(CLEAR)[1:] == [OK, 1]
    assert conn.call(GET, b"d")[1] == NOT_FOUND


def test_release_unknown_token(conn):
    assert conn.call(RELEASE, b"k", 12345)[1] == NOT_FOUND


def test_status_map(daemon, conn):
    conn.call(SET, b"k", b"v", None)
    conn.call(GET, b"k")
    conn.call(GET, b"nope")
    st = conn.status()
    assert st["entries"] == 1
    assert st["sets_total"] == 1
    assert st["daemon_hits_total"] == 1 and st["misses_total"] == 1
    assert st["version"] and st["pid"] == daemon.pid and st["uptime_s"] >= 0
    assert st["config"]["socket"] == daemon.socket
    assert st["config"]["segment_size"] == 16 << 20
    [me] = st["connections"]
    assert me["requests"] == 4 and me["outstanding"] == 0 and me["pid"] > 0


@pytest.mark.parametrize("n", [1000])
def test_pipelined_every_op(conn, n):
    """Many requests sent before any reply is read; replies match ids, in order of execution."""
    ops = []
    for i in range(n):
        k = b"key%d" % i
        ops += [(SET, (k, mp(i), None)), (GET, (k,)), (ADD, (k, b"x", None)), (INCR, (k, 1)),
                (DECR, (k, 2)), (TOUCH, (k, 60000)), (HAS_KEY, (k,))]
    ops += [(GET_MANY, ([b"key0", b"key1", b"none"],)), (SET_MANY, ([[b"m1", b"1", 0], [b"m2", b"2", 0]], None)),
            (DELETE_MANY, ([b"m1", b"m2"],)), (DELETE, (b"key0",)), (PING, ()), (STATUS, ()),
            (HELLO, (2,)), (CLEAR, (b"key1",))]
    payload = b"".join(__import__("msgpack").packb([op, i + 1, *args], use_bin_type=True)
                       for i, (op, args) in enumerate(ops))
    conn.send_raw(payload)
    replies = conn.recv_n(len(ops))
    assert [r[0] for r in replies] == list(range(1, len(ops) + 1))
    for i in range(n):
        base = 7 * i
        assert replies[base][1] == OK
        assert replies[base + 1][1:3] == [OK, mp(i)]
        assert replies[base + 2][1] == EXISTS
        assert replies[base + 3][1:] == [OK, i + 1]
        assert replies[base + 4][1:] == [OK, i - 1]
        assert replies[base + 5][1] == OK
        assert replies[base + 6][1] == OK
    tail = replies[7 * n:]
    assert tail[0][1:] == [OK, [[mp(-1), 0], [mp(0), 0], None]]
    assert tail[1][1:] == [OK, []]
    assert tail[2][1:] == [OK, 2]
    assert tail[3][1] == OK
    assert tail[4][1] == OK
    assert tail[5][1] == OK and tail[5][2]["sets_total"] >= n
    assert tail[6][1] == OK
    # key1, key10..key19, key100..key199 are n=1000's keys starting with "key1"
    assert tail[7][1:] == [OK, 1 + 10 + 100]


def test_many_clients_interleaved(daemon):
    conns = [RawConn(daemon.socket) for _ in range(20)]
    for i, c in enumerate(conns):
        for j in range(50):
            c.send(SET, b"c%d:%d" % (i, j), mp(j), None)
    for c in conns:
        assert all(r[1] == OK for r in c.recv_n(50))
    for i, c in enumerate(conns):
        r = c.call(GET_MANY, [b"c%d:%d" % (i, j) for j in range(50)])
        assert r[2] == [[mp(j), 0] for j in range(50)]
        c.close()
