"""TTL and REPLACE (doc/protocol.md) and TOUCH as EXPIRE/PERSIST, against a real daemon without Redis."""
from __future__ import annotations

from support.rawproto import BAD_ARGS, GET, NOT_FOUND, OK, REPLACE, SET, TOUCH, TTL, mp


def test_ttl_answers_the_remaining_milliseconds_none_or_not_found(conn):
    conn.call(SET, b"timed", mp(1), 60_000)
    conn.call(SET, b"forever", mp(2), None)
    r = conn.call(TTL, b"timed")
    assert r[1] == OK and 59_000 < r[2] <= 60_000
    assert conn.call(TTL, b"forever")[1:] == [OK, None]
    assert conn.call(TTL, b"absent")[1:] == [NOT_FOUND]
    assert conn.call(TTL, b"a", b"b")[1] == BAD_ARGS


def test_touch_is_expire_and_persist(conn):
    conn.call(SET, b"k", mp(1), 60_000)
    assert conn.call(TOUCH, b"k", 5_000)[1] == OK        # EXPIRE
    assert 4_000 < conn.call(TTL, b"k")[2] <= 5_000
    assert conn.call(TOUCH, b"k", None)[1] == OK         # PERSIST
    assert conn.call(TTL, b"k")[1:] == [OK, None]
    assert conn.call(TOUCH, b"k", 0)[1] == OK            # an expiry in the past deletes
    assert conn.call(TTL, b"k")[1:] == [NOT_FOUND]
    assert conn.call(TOUCH, b"k", None)[1] == NOT_FOUND


def test_replace_stores_only_a_present_key(conn):
    assert conn.call(REPLACE, b"k", mp(1), None)[1] == NOT_FOUND
    assert conn.call(GET, b"k")[1] == NOT_FOUND
    conn.call(SET, b"k", mp(1), None)
    assert conn.call(REPLACE, b"k", mp(2), 10_000, 3)[1] == OK
    r = conn.call(GET, b"k")
    assert r[1:4] == [OK, mp(2), 3] and 9_000 < r[4] <= 10_000
    assert conn.call(REPLACE, b"k", mp(3), 0)[1] == OK   # timeout 0: stored, so gone
    assert conn.call(GET, b"k")[1] == NOT_FOUND
