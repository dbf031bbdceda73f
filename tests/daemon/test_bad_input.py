"""Bad input: each gets an error reply naming the problem, framing errors close
the connection, and the daemon keeps serving every other client."""
from __future__ import annotations

import struct
import time

import msgpack
import pytest

from support.nearcached import Daemon
from support.rawproto import (BAD_ARGS, BAD_FRAME, CLEAR, FRAME_TOO_LARGE, GET, GET_MANY, INCR, KEY_TOO_LONG, LEASE,
                              NOT_INTEGER, OK, PING, SET, SET_MANY, TOUCH, UNKNOWN_OP, VALUE_TOO_LARGE, RawConn, mp,
                              pack)


@pytest.fixture
def bystander(daemon):
    """Another client, connected before the bad input, that must not notice it."""
    c = RawConn(daemon.socket)
    c.call(SET, b"bystander", b"still here", None)
    yield c
    assert c.call(GET, b"bystander")[1:3] == [OK, b"still here"]
    assert c.call(PING)[1] == OK
    # And a brand-new client is served too.
    with RawConn(c.sock.getpeername()) as fresh:
        assert fresh.call(PING)[1] == OK
    c.close()


FRAMING = [
    (b"\xc1", BAD_FRAME, "0xc1"),                                   # never-used msgpack byte
    (msgpack.packb(5), BAD_FRAME, "array"),                         # not an array
    (msgpack.packb({"op": 1}), BAD_FRAME, "array"),
    (msgpack.packb([]), BAD_FRAME, "[op, id"),                      # too short
    (msgpack.packb([2]), BAD_FRAME, "[op, id"),
    (msgpack.packb(["PING", 1]), BAD_FRAME, "op must be"),          # op not an integer
    (msgpack.packb([2, -1]), BAD_FRAME, "id must be"),              # id not unsigned
    (msgpack.packb([2, "x"]), BAD_FRAME, "id must be"),
    (msgpack.packb([2, 1.5]), BAD_FRAME, "id must be"),
    (b"\x91" * 17 + b"\xc0", BAD_FRAME, "nested"),                  # deeper than any request needs
]


@pytest.mark.parametrize("payload,code,words", FRAMING)
def test_framing_errors_answer_then_close(daemon, bystander, payload, code, words):
    c = RawConn(daemon.socket)
    c.send_raw(payload)
    r = c.recv()
    assert r[1] == code
    assert r[2].startswith("BAD_FRAME") and words in r[2]
    assert c.closed_by_peer()


def test_bad_frame_names_readable_id(daemon, bystander):
    c = RawConn(daemon.socket)
    c.send_raw(msgpack.packb([b"op", 42]))
    r = c.recv()
    assert r[0] == 42 and r[1] == BAD_FRAME
    c2 = RawConn(daemon.socket)
    c2.send_raw(msgpack.packb([2, b"id"]))
    assert c2.recv()[0] is None


def test_frame_too_large_rejected_from_header(daemon, bystander):
    """A bin32 header claiming 1 GiB is refused at once, without the daemon waiting for (or buffering) the bytes."""
    c = RawConn(daemon.socket)
    c.send_raw(b"\x95\x05\x07\xa1k" + b"\xc6" + struct.pack(">I", 1 << 30))
    r = c.recv()
    assert r[0] == 7 and r[1] == FRAME_TOO_LARGE and "FRAME_TOO_LARGE" in r[2]
    assert c.closed_by_peer()


def test_frame_too_large_array_count(daemon, bystander):
    c = RawConn(daemon.socket)
    c.send_raw(b"\xdd" + struct.pack(">I", 0xFFFFFFFF))
    r = c.recv()
    assert r[0] is None and r[1] == FRAME_TOO_LARGE
    assert c.closed_by_peer()


def test_frame_limit_is_configurable(tmp_path):
    with Daemon(tmp_path, max_frame_bytes="4K", value_limit="1K", key_limit=64) as d:
        c = RawConn(d.socket)
        assert c.call(SET, b"k", b"x" * 1024, None)[1] == OK
        c.send(SET, b"k", b"x" * 5000, None)
        r = c.recv()
        assert r[1] == FRAME_TOO_LARGE and "4096" in r[2]
        assert c.closed_by_peer()
        assert RawConn(d.socket).call(PING)[1] == OK


def test_frame_arriving_byte_by_byte(daemon, bystander):
    c = RawConn(daemon.socket)
    frame = pack(SET, 9, b"slow", b"v" * 300, None)
    for i in range(len(frame)):
        c.send_raw(frame[i:i + 1])
    assert c.recv() == [9, OK]
    assert c.call(GET, b"slow")[2] == b"v" * 300


ARGS = [
    ((GET,), BAD_ARGS, "GET: takes key"),                                   # arity
    ((GET, b"a", b"b"), BAD_ARGS, "got 2"),                                 # extra trailing argument
    ((GET, 5), BAD_ARGS, "key must be bytes"),                              # wrong type
    ((SET, b"k", 5, None), BAD_ARGS, "value must be bytes"),
    ((SET, b"k", b"v", "soon"), BAD_ARGS, "ttl must be"),
    ((SET, b"k", b"v", None, 256), BAD_ARGS, "flags"),
    ((SET, b"k", b"v", None, -1), BAD_ARGS, "flags"),
    ((GET_MANY, b"k"), BAD_ARGS, "keys must be an array"),
    ((GET_MANY, [b"a", 1]), BAD_ARGS, "key must be bytes"),
    ((SET_MANY, [[b"k"]], None), BAD_ARGS, "item 0"),
    ((SET_MANY, [b"k"], None), BAD_ARGS, "item 0"),
    ((TOUCH, b"k", 1.5), BAD_ARGS, "ttl must be"),
    ((INCR, b"k", "1"), BAD_ARGS, "delta"),
    ((INCR, b"k", 2**63), BAD_ARGS, "delta"),
    ((CLEAR, 5), BAD_ARGS, "prefix"),
    ((LEASE, b"k", -1, 5), BAD_ARGS, "lease_ms"),
    ((99,), UNKNOWN_OP, "no op 99"),
    ((0,), UNKNOWN_OP, "no op 0"),
    ((GET, b"k" * 1025), KEY_TOO_LONG, "key is 1025 bytes, limit 1024"),
    ((SET, b"k" * 1025, b"v", None), KEY_TOO_LONG, "limit 1024"),
    ((GET_MANY, [b"ok", b"k" * 2000]), KEY_TOO_LONG, "2000 bytes"),
    ((SET, b"k", b"v" * ((1 << 20) + 1), None), VALUE_TOO_LARGE, "limit 1048576"),
]


@pytest.mark.parametrize("request_,code,words", ARGS, ids=[str(i) for i in range(len(ARGS))])
def test_request_errors_keep_connection(daemon, bystander, request_, code, words):
    c = RawConn(daemon.socket)
    r = c.call(*request_)
    assert r[1] == code, r
    assert words in r[2], r[2]
    assert r[2].split(":")[0] in ("BAD_ARGS", "UNKNOWN_OP", "KEY_TOO_LONG", "VALUE_TOO_LARGE")
    assert c.call(PING)[1] == OK  # only that request failed


def test_failed_set_many_stores_nothing(conn):
    r = conn.call(SET_MANY, [[b"a", b"1", 0], [b"b", 2, 0]], None)
    assert r[1] == BAD_ARGS
    assert conn.call(GET, b"a")[1] != OK


def test_incr_not_integer(daemon, bystander):
    c = RawConn(daemon.socket)
    c.call(SET, b"s", mp("x"), None)
    r = c.call(INCR, b"s", 1)
    assert r[1] == NOT_INTEGER and r[2].startswith("NOT_INTEGER")
    c.call(SET, b"junk", b"\xc1", None)
    assert c.call(INCR, b"junk", 1)[1] == NOT_INTEGER
    assert c.call(PING)[1] == OK


def test_garbage_after_valid_requests(daemon, bystander):
    """Valid requests before the garbage are answered, then the framing error, then EOF."""
    c = RawConn(daemon.socket)
    c.send_raw(pack(PING, 1) + pack(SET, 2, b"k", b"v", None) + b"\xc1" + pack(PING, 3))
    assert c.recv() == [1, OK]
    assert c.recv() == [2, OK]
    assert c.recv()[1] == BAD_FRAME
    assert c.closed_by_peer()


def test_half_frame_then_disconnect(daemon, bystander):
    c = RawConn(daemon.socket)
    c.send_raw(pack(SET, 1, b"k", b"v" * 1000, None)[:500])
    c.close()


def test_random_garbage_never_kills_daemon(daemon, bystander):
    import random
    rng = random.Random(1234)
    for _ in range(200):
        c = RawConn(daemon.socket)
        c.send_raw(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
        c.close()
    assert daemon.proc.poll() is None


def test_key_arriving_in_pieces(daemon, bystander):
    """The last element's bytes come in two writes: the request waits for all of them."""
    c = RawConn(daemon.socket)
    c.call(SET, b"k" * 600, b"long-key", None)
    frame = pack(GET, 5, b"k" * 600)
    c.send_raw(frame[:300])
    time.sleep(0.05)  # not an order but the point: the daemon reads the first part on its own
    c.send_raw(frame[300:])
    assert c.recv()[:3] == [5, OK, b"long-key"]
