"""The client side of nearcached's socket protocol (doc/protocol.md).

Frames are msgpack arrays on a Unix stream socket: requests `[op, id, *args]`,
replies `[id, status, *results]`. `Connection` is a blocking connection with a
timeout on every call; `AsyncConnection` is its asyncio twin, bound to the
event loop that opened it. Both pipeline: `call_many` sends every request
before reading any reply and matches replies by id.
"""
from __future__ import annotations

import array
import asyncio
import itertools
import math
import os
import socket
import select
import time

import msgpack

PROTOCOL_VERSION = 2

# Operations
HELLO, PING, GET, GET_MANY, SET, ADD, SET_MANY, DELETE, DELETE_MANY, TOUCH, INCR, DECR, HAS_KEY, CLEAR, LEASE, \
    RELEASE, STATUS, HITS, TTL, REPLACE, SCAN, DELETE_PATTERN, LOCK, UNLOCK, LOCK_EXTEND, LOCK_QUERY = range(1, 27)

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


class Refused(CacheUnavailable):
    """The daemon answered the connection with a refusal ([nil, status, message]) and closed it."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"nearcached refused the connection: {message}")


# Connection-level answers that mean "this daemon will not serve you now".
REFUSALS = frozenset({UNAVAILABLE, NOT_ALLOWED, SHUTTING_DOWN, TOO_MANY_REQUESTS})


def error_for(status: int, message) -> ProtocolError:
    cls = {KEY_TOO_LONG: KeyTooLong, VALUE_TOO_LARGE: ValueTooLarge}.get(status, ProtocolError)
    return cls(status, message if isinstance(message, str) else "")


PACKAGED_SOCKET = "/run/nearcache/nearcached.sock"


def default_socket_path() -> str:
    """The daemon's default socket path (see the README): $NEARCACHE_SOCKET, else
    the user's own daemon under $XDG_RUNTIME_DIR when it is there, else the
    packaged daemon when it is there, else the user's own (under
    $XDG_RUNTIME_DIR, or /tmp/nearcache-<uid>/; root: the packaged path)."""
    env = os.environ.get("NEARCACHE_SOCKET")
    if env:
        return env
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    own = os.path.join(xdg, "nearcache", "nearcached.sock") if xdg else None
    if own and os.path.exists(own):
        return own
    if os.path.exists(PACKAGED_SOCKET):
        return PACKAGED_SOCKET
    if own:
        return own
    if os.getuid() == 0:
        return PACKAGED_SOCKET
    return f"/tmp/nearcache-{os.getuid()}/nearcached.sock"


def socket_path(location: str | None) -> str:
    """A Django LOCATION (path, unix:path or unix://path) as a socket path."""
    if not location:
        return default_socket_path()
    for prefix in ("unix://", "unix:"):
        if location.startswith(prefix):
            return location[len(prefix):]
    return location


def new_unpacker() -> msgpack.Unpacker:
    # surrogateescape: a text field the daemon relays from a client (client_name)
    # need not be UTF-8, and must not make STATUS unreadable for everyone.
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0, unicode_errors="surrogateescape")


def check_frame(frame) -> None:
    """Raises for a reply that is no reply, or a connection-level error (id nil)."""
    if type(frame) is not list or len(frame) < 2:
        raise ConnectionError(f"nearcached sent a malformed reply: {frame!r}"[:200])
    if frame[0] is None:
        status = frame[1]
        message = frame[2] if len(frame) > 2 and isinstance(frame[2], str) else STATUS_NAMES.get(status, "")
        if status in REFUSALS:  # e.g. [nil, UNAVAILABLE] at max_connections
            raise Refused(status, message)
        raise error_for(status, message)


def green_socket(sock) -> bool:
    """True for gevent's or eventlet's cooperative sockets (monkey-patching)."""
    return type(sock).__module__ != "socket"


class Connection:
    """One blocking connection, used by one thread (or greenlet) at a time.

    Every call runs against a deadline (time.monotonic()). A native socket is
    non-blocking: a reply usually arrives within microseconds, so the client
    tries recv() first (polling for up to busy_poll seconds), then waits in
    poll() for the time left. A gevent or eventlet socket gets its own
    timeout set to the time left before each wait, so the wait is
    cooperative and bounded (a kernel SO_RCVTIMEO means nothing to them).
    """

    def __init__(self, path: str, deadline: float, busy_poll: float = 0.0, trust=None):
        self.path = path
        self.busy_poll = busy_poll
        self._ids = itertools.count(1)
        self._unpacker = new_unpacker()
        self._pack = msgpack.Packer(use_bin_type=True).pack
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.green = green_socket(sock)
        try:
            sock.settimeout(_left(deadline))
            sock.connect(path)
            if trust is not None:
                trust(sock, path)
            if not self.green:
                sock.settimeout(0.0)
                self._poll = select.poll()
                self._poll.register(sock.fileno(), select.POLLIN)
        except socket.timeout:
            sock.close()
            raise socket.timeout(f"connecting to {path} timed out") from None
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.info: dict = {}

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

    def _wait(self, sock, deadline: float, events: int) -> None:
        left = _left(deadline)
        self._poll.modify(sock.fileno(), events)
        if not self._poll.poll(max(1, math.ceil(left * 1000))) and time.monotonic() >= deadline:
            raise socket.timeout("nearcached did not answer in time")

    def _send(self, sock, out: bytes, deadline: float) -> None:
        if self.green:
            sock.settimeout(_left(deadline))
            sock.sendall(out)
            return
        try:
            n = sock.send(out)  # a frame usually fits the socket buffer: one call
        except BlockingIOError:
            n = 0
        if n == len(out):
            return
        view = memoryview(out)[n:]
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                self._wait(sock, deadline, select.POLLOUT)

    def _recv(self, sock, deadline: float) -> bytes:
        if self.green:
            sock.settimeout(_left(deadline))
            return sock.recv(262144)
        try:
            return sock.recv(262144)
        except BlockingIOError:
            pass
        # The daemon usually answers within microseconds, but a thread that
        # sleeps in poll() pays the kernel's wake-up latency on top (tens of
        # microseconds on virtual machines); a short, bounded spin skips it.
        if self.busy_poll > 0:
            end = time.perf_counter() + self.busy_poll
            while time.perf_counter() < end:
                try:
                    return sock.recv(262144)
                except BlockingIOError:
                    pass
        while True:
            self._wait(sock, deadline, select.POLLIN)
            try:
                return sock.recv(262144)
            except BlockingIOError:
                continue

    def send_frame(self, data: bytes, deadline: float) -> None:
        """Sends bytes without reading a reply (the write channel); closes on failure."""
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("connection closed")
        try:
            self._send(sock, data, deadline)
        except BaseException:
            self.close()
            raise

    def recv_blocking(self, check) -> bytes:
        """Waits for bytes as long as `check()` (called every STALL_SLICE) does not
        raise: the write channel's drainer thread, while other threads send on the
        same socket."""
        sock = self.sock
        if sock is None:
            return b""
        if self.green:
            while True:
                try:
                    sock.settimeout(STALL_SLICE)
                    return sock.recv(262144)
                except socket.timeout:
                    if self.sock is None:
                        return b""
                    check()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while True:
            try:
                return sock.recv(262144)
            except BlockingIOError:
                if not poller.poll(int(STALL_SLICE * 1000)):
                    check()

    def _recv_until(self, sock, deadline: float, soft: float, stalled) -> bytes:
        """_recv for a request allowed to wait past `soft` (a lease, a clear):
        past it, gives up as soon as `stalled()` says the daemon is stopped."""
        while True:
            now = time.monotonic()
            if now >= soft and stalled():
                raise socket.timeout("nearcached stopped answering (its heartbeat is stale)")
            try:
                return self._recv(sock, min(deadline, max(soft, now) + STALL_SLICE))
            except socket.timeout:
                if time.monotonic() >= deadline:
                    raise

    def call(self, op: int, *args, deadline: float) -> list:
        """Sends one request; returns the reply as [status, *results]."""
        return self.call_many([(op, *args)], deadline)[0]

    def call_many(self, requests, deadline: float, soft: float | None = None, stalled=None) -> list[list]:
        """Pipelines requests; returns their replies ([status, *results]) in request order.

        Raises OSError (socket.timeout included) or ProtocolError (a framing
        error) when the connection fails; it is then closed. Error statuses of
        single requests are returned, not raised. With `stalled`, a wait
        past `soft` ends early once stalled() is true.
        """
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("connection closed")
        pack = self._pack
        first = next(self._ids)
        n = len(requests)
        if n == 1:
            req = requests[0]
            out = pack([req[0], first, *req[1:]])
        else:
            out = b"".join([pack([req[0], first + i, *req[1:]]) for i, req in enumerate(requests)])
            self._ids = itertools.count(first + n)
        try:
            self._send(sock, out, deadline)
        except (BrokenPipeError, ConnectionResetError):
            # The daemon refused a frame (FRAME_TOO_LARGE) and closed before
            # reading the rest of it: its reply, when it sent one, is still there.
            return self._collect(first, n, min(deadline, time.monotonic() + 0.1))
        except BaseException:
            self.close()
            raise
        return self._collect(first, n, deadline, soft, stalled)

    def send_fd(self, op: int, fd: int, deadline: float) -> list:
        """One request `[op, id]` with `fd` in its SCM_RIGHTS (HITS); returns its reply."""
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("connection closed")
        first = next(self._ids)
        out = self._pack([op, first])
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        try:
            while True:
                if self.green:
                    sock.settimeout(_left(deadline))
                try:
                    if sock.sendmsg([out], fds) == len(out):
                        break
                    raise ConnectionResetError("a partial frame with an fd")  # a 3-byte frame: never seen
                except BlockingIOError:
                    self._wait(sock, deadline, select.POLLOUT)
        except BaseException:
            self.close()
            raise
        return self._collect(first, 1, deadline)[0]

    def _collect(self, first: int, n: int, deadline: float, soft: float | None = None, stalled=None) -> list[list]:
        """Reads the replies to requests first .. first + n - 1, in request order."""
        sock = self.sock
        replies: list = [None] * n
        got = 0
        unpacker = self._unpacker
        try:
            while True:
                for frame in unpacker:
                    check_frame(frame)
                    i = frame[0] - first if type(frame[0]) is int else -1
                    if 0 <= i < n and replies[i] is None:
                        replies[i] = frame[1:]
                        got += 1
                if got == n:
                    break
                if time.monotonic() >= deadline:
                    raise socket.timeout("nearcached did not answer in time")
                data = (self._recv(sock, deadline) if stalled is None
                        else self._recv_until(sock, deadline, soft, stalled))
                if not data:
                    raise ConnectionResetError("nearcached closed the connection")
                unpacker.feed(data)
        except BaseException:
            self.close()
            raise
        for r in replies:
            if r[0] in CLOSING:
                self.close()
        return replies


STALL_SLICE = 0.1  # seconds between stalled() checks of a long wait


def _left(deadline: float) -> float:
    """Seconds until the deadline; raises socket.timeout once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("nearcached did not answer in time")
    return left


class AsyncConnection:
    """One asyncio connection, owned by the event loop that opened it.

    A reader task resolves each request's future by id, so any number of tasks
    of that loop can use the connection at once (pipelining).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.loop = asyncio.get_running_loop()
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._waiting: dict[int, asyncio.Future] = {}
        self._closed = False
        self._task = self.loop.create_task(self._read_loop())
        self.info: dict = {}

    @classmethod
    async def open(cls, path: str, deadline: float, trust=None) -> "AsyncConnection":
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), _left(deadline))
        except asyncio.TimeoutError:
            raise socket.timeout(f"connecting to {path} timed out") from None
        try:
            if trust is not None:
                trust(writer.get_extra_info("socket"), path)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed

    async def _read_loop(self) -> None:
        unpacker = new_unpacker()
        error: BaseException = ConnectionResetError("nearcached closed the connection")
        try:
            while True:
                data = await self._reader.read(262144)
                if not data:
                    break
                unpacker.feed(data)
                for frame in unpacker:
                    check_frame(frame)
                    fut = self._waiting.pop(frame[0], None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame[1:])
        except Exception as e:  # OSError, a framing error, a malformed reply
            error = e
        finally:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self._closed = True
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: a caller that stopped waiting must not log it
        self._waiting.clear()
        try:
            self._writer.close()
        except (OSError, RuntimeError):
            pass

    def close(self) -> None:
        if not self._closed:
            self._task.cancel()
            self._fail(ConnectionResetError("connection closed"))

    async def call(self, op: int, *args, deadline: float) -> list:
        return (await self.call_many([(op, *args)], deadline))[0]

    async def call_many(self, requests, deadline: float, soft: float | None = None, stalled=None) -> list[list]:
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
        gathered = asyncio.ensure_future(self._drain_and_gather(futs))
        try:
            while True:
                now = time.monotonic()
                if stalled is not None and now >= soft and stalled():
                    raise asyncio.TimeoutError
                step = _left(deadline) if stalled is None else min(deadline, max(soft, now) + STALL_SLICE) - now
                try:
                    await asyncio.wait_for(asyncio.shield(gathered), max(step, 0.0))
                    break
                except asyncio.TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
        except (asyncio.TimeoutError, socket.timeout):
            gathered.cancel()
            self.close()
            raise socket.timeout("nearcached did not answer in time") from None
        except BaseException:
            gathered.cancel()
            raise
        result = [f.result() for f in futs]
        if any(r[0] in CLOSING for r in result):
            self.close()
        return result

    async def _drain_and_gather(self, futs):
        await self._writer.drain()
        return await asyncio.gather(*futs)
