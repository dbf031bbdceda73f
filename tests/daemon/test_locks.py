"""LOCK, UNLOCK, LOCK_EXTEND, LOCK_QUERY (doc/protocol.md) against a real daemon without Redis."""
from __future__ import annotations

from support.nearcached import Daemon
from support.rawproto import (BAD_ARGS, EXISTS, GET, LOCK, LOCK_EXTEND, LOCK_QUERY, NOT_FOUND, OK, SCAN, SET, UNLOCK,
                              RawConn, mp)
from support.wait import wait_for


def test_a_lock_is_exclusive_and_released_only_by_its_token(daemon, conn):
    assert conn.call(LOCK, b"job", b"t1", 10_000)[1] == OK
    with RawConn(daemon.socket) as other:
        assert other.call(LOCK, b"job", b"t2", 10_000)[1] == EXISTS
        assert other.call(UNLOCK, b"job", b"t2")[1] == NOT_FOUND      # not its token: nothing changes
        q = other.call(LOCK_QUERY, b"job")
        assert q[1:3] == [OK, b"t1"] and 9_000 < q[3] <= 10_000
    conn.close()                                                       # a lock outlives its connection
    with RawConn(daemon.socket) as c:
        assert c.call(LOCK, b"job", b"t3", 10_000)[1] == EXISTS
        assert c.call(UNLOCK, b"job", b"t1")[1] == OK
        assert c.call(UNLOCK, b"job", b"t1")[1] == NOT_FOUND
        assert c.call(LOCK_QUERY, b"job")[1] == NOT_FOUND
        assert c.call(LOCK, b"job", b"t3", 10_000)[1] == OK


def test_locks_have_their_own_key_space(conn):
    assert conn.call(LOCK, b"k", b"t", 10_000)[1] == OK
    assert conn.call(GET, b"k")[1] == NOT_FOUND
    assert conn.call(SCAN, 0, b"*", 100)[1:] == [OK, 0, []]
    assert conn.call(SET, b"k", mp(1), None)[1] == OK                # a SET does not end it
    assert conn.call(LOCK, b"k", b"u", 10_000)[1] == EXISTS


def test_extend_and_expiry(conn):
    assert conn.call(LOCK, b"k", b"t", 300)[1] == OK
    assert conn.call(LOCK_EXTEND, b"k", b"t", 10_000, False)[1] == OK  # added to what is left
    assert 10_000 < conn.call(LOCK_QUERY, b"k")[3] <= 10_300
    assert conn.call(LOCK_EXTEND, b"k", b"t", 400, True)[1] == OK      # replaced
    assert conn.call(LOCK_QUERY, b"k")[3] <= 400
    assert conn.call(LOCK_EXTEND, b"k", b"x", 400, True)[1] == NOT_FOUND
    assert conn.call(LOCK_EXTEND, b"k", b"t", 400, 1)[1] == BAD_ARGS
    wait_for(lambda: conn.call(LOCK_QUERY, b"k")[1] == NOT_FOUND, 10, "the lock to expire")
    assert conn.call(LOCK_EXTEND, b"k", b"t", 400, True)[1] == NOT_FOUND
    assert conn.call(LOCK, b"k", b"u", 1000)[1] == OK


def test_no_ttl_is_bounded_by_max_lock_ms(tmp_path):
    with Daemon(tmp_path, max_lock_ms=5000) as d, RawConn(d.socket) as c:
        assert c.call(LOCK, b"k", b"t", None)[1] == OK
        assert 4_000 < c.call(LOCK_QUERY, b"k")[3] <= 5_000
        assert c.call(LOCK_EXTEND, b"k", b"t", 60_000, False)[1] == OK
        assert c.call(LOCK_QUERY, b"k")[3] <= 5_000
        assert c.call(LOCK, b"long", b"t", 60_000)[1] == OK
        assert c.call(LOCK_QUERY, b"long")[3] <= 5_000
        assert c.status()["config"]["max_lock_ms"] == 5000
