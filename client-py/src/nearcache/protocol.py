"""The client side of nearcached's socket protocol (doc/protocol.md).

Frames are msgpack arrays on a Unix stream socket: requests `[op, id, *args]`,
replies `[id, status, *results]`. `Connection` is a blocking connection with a
timeout on every call; `AsyncConnection` is its asyncio twin, bound to the
event loop that opened it. Both pipeline: `call_many` sends every request
before reading any reply and matches replies by id.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import time

import msgpack

PROTOCOL_VERSION = 2

# Operations
HELLO, PING, GET, GET_MANY, SET, ADD, SET_MANY, DELETE, DELETE_MANY, TOUCH, INCR, DECR, HAS_KEY, CLEAR, LEASE, \
    RELEASE, STATUS, HITS = range(1, 19)

# Status codes
OK, NOT_FOUND, EXISTS, LEASED, TIMEOUT = 0, 1, 2, 3, 4
BAD_FRAME, FRAME_TOO_LARGE, UNKNOWN_OP, BAD_ARGS, KEY_TOO_LONG, VALUE_TOO_LARGE, NOT_INTEGER, OUT_OF_RANGE, \
    NOT_ALLOWED, TOO_MANY_REQUESTS, UNAVAILABLE, UNSUPPORTED_VERSION, SHUTTING_DOWN = range(16, 29)

STATUS_NAMES = {
    OK: "OK", NOT_FOUND: "NOT_FOUND", EXISTS: "EXISTS", LEASED: "LEASED", TIMEOUT: "TIMEOUT",
    BAD_FRAME: "BAD_FRAME", FRAME_TOO_LARGE: "FRAME_TOO_LARGE", UNKNOWN_OP: "UNKNOWN_OP", BAD_ARGS: "BAD_ARGS",
    KEY_TOO_LONG: "KEY_TOO_LONG", VALUE_TOO_LARGE: "VALUE_TOO_LARGE", NOT_INTEGER: "NOT_INTEGER",
    OUT_OF_RANGE: "OUT_OF_RANGE", NOT_ALLOWED: "NOT_ALLOWED", TOO_MANY_REQUESTS: "TOO_MANY_REQUESTS",
    UNAVAILABLE: "UNAVAILABLE", UNSUPPORTED_VERSION: "UNSUPPORTED_VERSION", SHUTTING_DOWN: "SHUTTING_DOWN",
}
# After these the daemon closes the connection.
CLOSING = {BAD_FRAME, FRAME_TOO_LARGE, NOT_ALLOWED, SHUTTING_DOWN}


class NearcacheError(Exception):
    """Base of nearcache's exceptions."""


class CacheUnavailable(NearcacheError, ConnectionError):
    """The daemon cannot be reached (or stopped answering) within the timeout."""


class ProtocolError(NearcacheError):
    """The daemon answered a request with an error status (>= 16)."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.status_name = STATUS_NAMES.get(status, str(status))
        self.message = message
        super().__init__(f"nearcached: {message}" if message else f"nearcached: {self.status_name}")


class KeyTooLong(ProtocolError, ValueError):
    """The key is longer than the daemon's key_limit."""


class ValueTooLarge(ProtocolError, ValueError):
    """The value is larger than the daemon's value_limit."""


def error_for(status: int, message) -> ProtocolError:
    cls = {KEY_TOO_LONG: KeyTooLong, VALUE_TOO_LARGE: ValueTooLarge}.get(status, ProtocolError)
    return cls(status, message if isinstance(message, str) else "")


def default_socket_path() -> str:
    """The daemon's default socket path (see the README)."""
    env = os.environ.get("NEARCACHE_SOCKET")
    if env:
        return env
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "nearcache", "nearcached.sock")
    if os.getuid() == 0:
        return "/run/nearcache/nearcached.sock"
    return f"/tmp/nearcache-{os.getuid()}/nearcached.sock"


def socket_path(location: str | None) -> str:
    """A Django LOCATION (path, unix:path or unix://path) as a socket path."""
    if not location:
        return default_socket_path()
    for prefix in ("unix://", "unix:"):
        if location.startswith(prefix):
            return location[len(prefix):]
    return location


def _new_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)


def _timeval(seconds: float) -> bytes:
    seconds = max(seconds, 0.001)
    return struct.pack("@ll", int(seconds), int((seconds % 1) * 1_000_000))


class Connection:
    """One blocking connection. Not thread-safe: the Client keeps one per thread.

    Timeouts are the kernel's (SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket):
    a call costs one send and one receive system call, with no poll() before
    each as Python's socket timeouts would add.
    """

    def __init__(self, path: str, timeout: float, connect_timeout: float | None = None, busy_poll: float = 0.0):
        self.path = path
        self.timeout = timeout
        self.busy_poll = busy_poll
        self._ids = itertools.count(1)
        self._unpacker = _new_unpacker()
        self._pack = msgpack.Packer(use_bin_type=True).pack
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout if connect_timeout is not None else timeout)
            sock.connect(path)
            sock.settimeout(None)
            self._set_timeout(sock, timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.info: dict = {}

    def _recv(self, sock) -> bytes:
        """Receives, polling without blocking for up to busy_poll seconds first.

        The daemon usually answers within microseconds, but a thread that
        blocks in recv() pays the kernel's wake-up latency on top (tens of
        microseconds on virtual machines); a short, bounded poll skips it.
        """
        if self.busy_poll > 0:
            end = time.perf_counter() + self.busy_poll
            while True:
                try:
                    return sock.recv(262144, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    if time.perf_counter() > end:
                        break
        return sock.recv(262144)

    @staticmethod
    def _set_timeout(sock, seconds: float) -> None:
        tv = _timeval(seconds)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        return self.sock is None

    def call(self, op: int, *args, timeout: float | None = None) -> list:
        """Sends one request; returns the reply as [status, *results]."""
        return self.call_many([(op, *args)], timeout=timeout)[0]

    def call_many(self, requests: list[tuple], timeout: float | None = None) -> list[list]:
        """Pipelines requests; returns their replies ([status, *results]) in request order.

        Raises OSError (socket.timeout included) when the connection fails;
        the connection is then closed. Error statuses are returned, not raised.
        """
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("connection closed")
        pack = self._pack
        first = next(self._ids)
        if len(requests) == 1:
            req = requests[0]
            out = pack([req[0], first, *req[1:]])
        else:
            out = b"".join([pack([req[0], first + i, *req[1:]]) for i, req in enumerate(requests)])
            self._ids = itertools.count(first + len(requests))
        n = len(requests)
        replies: list = [None] * n
        got = 0
        total = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + total
        unpacker = self._unpacker
        try:
            if timeout is not None:
                self._set_timeout(sock, timeout)
            sock.sendall(out)
            while True:
                for frame in unpacker:
                    if type(frame) is not list or len(frame) < 2:
                        raise ConnectionError(f"nearcached sent a malformed reply: {frame!r}")
                    rid = frame[0]
                    if rid is None:  # framing error: the daemon closes the connection
                        raise error_for(frame[1], frame[2] if len(frame) > 2 else "")
                    i = rid - first
                    if 0 <= i < n and replies[i] is None:
                        replies[i] = frame[1:]
                        got += 1
                if got == n:
                    break
                data = self._recv(sock)
                if not data:
                    raise ConnectionResetError("nearcached closed the connection")
                unpacker.feed(data)
                if time.monotonic() > deadline:
                    raise socket.timeout("nearcached did not answer in time")
            if timeout is not None:
                self._set_timeout(sock, self.timeout)
        except BlockingIOError:  # SO_RCVTIMEO/SO_SNDTIMEO expired
            self.close()
            raise socket.timeout(f"nearcached did not answer within {total:g} s") from None
        except BaseException:
            self.close()
            raise
        for r in replies:
            if r[0] in CLOSING:
                self.close()
        return replies


class AsyncConnection:
    """One asyncio connection, owned by the event loop that opened it.

    A reader task resolves each request's future by id, so any number of tasks
    of that loop can use the connection at once (pipelining).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self.loop = asyncio.get_running_loop()
        self.pid = os.getpid()
        self.timeout = timeout
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._waiting: dict[int, asyncio.Future] = {}
        self._closed = False
        self._task = self.loop.create_task(self._read_loop())
        self.info: dict = {}

    @classmethod
    async def open(cls, path: str, timeout: float, connect_timeout: float | None = None) -> "AsyncConnection":
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path),
                                                connect_timeout if connect_timeout is not None else timeout)
        return cls(reader, writer, timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    async def _read_loop(self) -> None:
        unpacker = _new_unpacker()
        error: BaseException = ConnectionResetError("nearcached closed the connection")
        try:
            while True:
                data = await self._reader.read(262144)
                if not data:
                    break
                unpacker.feed(data)
                for frame in unpacker:
                    if not isinstance(frame, list) or len(frame) < 2:
                        error = ConnectionError(f"nearcached sent a malformed reply: {frame!r}")
                        return
                    if frame[0] is None:
                        error = error_for(frame[1], frame[2] if len(frame) > 2 else "")
                        return
                    fut = self._waiting.pop(frame[0], None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame[1:])
        except (OSError, asyncio.IncompleteReadError) as e:
            error = e
        finally:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self._closed = True
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(error)
        self._waiting.clear()
        try:
            self._writer.close()
        except (OSError, RuntimeError):
            pass

    def close(self) -> None:
        if not self._closed:
            self._task.cancel()
            self._fail(ConnectionResetError("connection closed"))

    async def call(self, op: int, *args, timeout: float | None = None) -> list:
        return (await self.call_many([(op, *args)], timeout=timeout))[0]

    async def call_many(self, requests: list[tuple], timeout: float | None = None) -> list[list]:
        if self._closed:
            raise ConnectionResetError("connection closed")
        futs = []
        out = bytearray()
        for req in requests:
            rid = next(self._ids)
            fut = self.loop.create_future()
            self._waiting[rid] = fut
            futs.append(fut)
            out += self._packer.pack([req[0], rid, *req[1:]])
        self._writer.write(out)
        try:
            await asyncio.wait_for(self._drain_and_gather(futs), timeout if timeout is not None else self.timeout)
        except asyncio.TimeoutError:
            self.close()
            raise socket.timeout("nearcached did not answer in time") from None
        result = [f.result() for f in futs]
        if any(r[0] in CLOSING for r in result):
            self.close()
        return result

    async def _drain_and_gather(self, futs):
        await self._writer.drain()
        return await asyncio.gather(*futs)
