"""A minimal raw client of nearcached's socket protocol (doc/protocol.md), for tests.

    c = RawConn(d.socket)
    c.call(SET, b"k", b"v", None)          # -> [id, 0]
    c.call(GET, b"k")                      # -> [id, 0, b"v", 0, None]
    ids = [c.send(GET, b"k") for _ in range(100)]; replies = c.recv_n(100)   # pipelined
    c.send_raw(b"\\xc1")                    # bad bytes on purpose

Replies are decoded with msgpack's raw=False: bin -> bytes, str -> str.
"""
from __future__ import annotations

import socket
import time

import msgpack

# The numbers are the Python client's (tests/daemon/test_protocol_numbers.py holds
# them, the daemon's header and doc/protocol.md to one another); the framing
# below is this module's own, so that tests can send what no client would.
from nearcache.protocol import (ADD, BAD_ARGS, BAD_FRAME, CLEAR, DECR, DELETE, DELETE_MANY, DELETE_PATTERN, SCAN,  # noqa: F401
                                LOCK, LOCK_EXTEND, LOCK_QUERY, UNLOCK,
                                EXISTS, FRAME_TOO_LARGE, GET, GET_MANY, HAS_KEY, HELLO, HITS, INCR, KEY_TOO_LONG,
                                LEASE, LEASED, NOT_ALLOWED, NOT_FOUND, NOT_INTEGER, OK, OUT_OF_RANGE, PING,
                                RELEASE, REPLACE, SET, SET_MANY, SHUTTING_DOWN, STATUS, TIMEOUT,
                                TOO_MANY_REQUESTS, TOUCH, TTL, UNAVAILABLE, UNKNOWN_OP, UNSUPPORTED_VERSION, VALUE_TOO_LARGE)


def pack(*items) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def mp(value) -> bytes:
    """A value as clients store it: msgpack bytes."""
    return msgpack.packb(value, use_bin_type=True)


class Closed(Exception):
    """The daemon closed the connection."""


class RawConn:
    def __init__(self, path: str, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
        self.next_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending -----------------------------------------------------------
    def send(self, op: int, *args, id: int | None = None) -> int:
        if id is None:
            self.next_id += 1
            id = self.next_id
        self.sock.sendall(pack(op, id, *args))
        return id

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- receiving ---------------------------------------------------------
    def recv(self):
        """The next reply frame; raises Closed on EOF."""
        for reply in self.unpacker:
            return reply
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise Closed()
            self.unpacker.feed(data)
            for reply in self.unpacker:
                return reply

    def recv_n(self, n: int) -> list:
        return [self.recv() for _ in range(n)]

    def call(self, op: int, *args):
        """Sends one request and returns its reply (replies to others are not expected)."""
        rid = self.send(op, *args)
        reply = self.recv()
        assert reply[0] in (rid, None), f"reply {reply} does not answer request {rid}"
        return reply

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the daemon closes the connection (EOF) within `timeout`."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.unpacker.feed(data)
        return False

    def status(self) -> dict:
        r = self.call(STATUS)
        assert r[1] == OK, r
        return r[2]
