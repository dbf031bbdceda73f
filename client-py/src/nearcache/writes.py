"""Writes without waiting: the process's one ordered write channel.

`set` (without nx/xx), `set_many` and `delete_many` are sent on one
connection per process and return without waiting for the daemon's reply.
What keeps this correct:

- Order: every such write of the process goes through this channel, in the
  order the calls were made (a lock around numbering and sending), so two
  threads' writes of one key land in the order they were made.
- Read your writes: until the daemon acknowledges a write, its key is in
  `pending` (key -> (seq, (value, flags)) or (seq, None) for a delete), which
  every read of this process checks before the segment and the socket.
- Operations that need an answer (add, incr, delete, touch, get_or_set, ...)
  go on other connections, so they first wait until every earlier write of
  the process is acknowledged (`wait`).
- A drainer thread reads the replies as they come, so they never pile up in
  the daemon; failures are logged with their key and counted.
- Keys whose writes were lost while the daemon was unreachable are
  remembered (at most SKIPPED_MAX, then "clear everything") and deleted
  before the channel's first new write after it reconnects, so that an
  adopted table never serves a value this process believed it had replaced.
- fork(): the child starts with no pending writes and its own channel.
  Normal exit flushes (atexit, up to SOCKET_TIMEOUT); a process killed
  without exit handlers (SIGKILL, os._exit) can lose writes still pending.
"""
from __future__ import annotations

import atexit
import logging
import select
import threading
import time
import weakref
from time import monotonic as _monotonic

import msgpack

from nearcache import protocol as P

log = logging.getLogger("nearcache.client")

SKIPPED_MAX = 10_000
DRAIN_PERIOD = 0.001   # seconds between the drainer's reads while replies keep coming
STALLED_AFTER = 0.02   # an unacknowledged write this old: the daemon is not keeping up

_channels: "weakref.WeakSet[WriteChannel]" = weakref.WeakSet()


class WriteChannel:
    """One process's ordered, unacknowledged writes to one daemon (see the module docstring)."""

    def __init__(self, client):
        self.client = client
        self.pending: dict[bytes, tuple] = client._pending_writes  # the Client's, read by the native get
        self.counters = {"writes": 0, "failed": 0, "skipped": 0}
        self._lock = threading.Lock()            # numbering + sending + pending updates
        self._acked = threading.Condition(threading.Lock())
        self._last_sent = 0                     # id of the last frame sent
        self._last_acked = 0                    # every frame up to this id is acknowledged
        self._inflight: dict[int, tuple] = {}   # id -> (monotonic time sent, keys of that frame); ids ascend
        self._conn: P.Connection | None = None
        self._skipped: set[bytes] = set()
        self._skipped_overflow = False
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._rlock = threading.Lock()           # reading replies: the drainer or a waiter
        self._unpacker = P.new_unpacker()
        _channels.add(self)

    # -- sending ---------------------------------------------------------------
    def submit(self, op: int, args: tuple, entries: list) -> bool:
        """Sends one write frame; entries: [(key, (value, flags) or None)] it installs in pending.
        False when it was not sent (the daemon is unreachable: the keys are remembered as skipped)."""
        with self._lock:
            return self._submit(op, args, entries)

    def submit_set(self, k: bytes, value: bytes, t, flags: int) -> bool:
        """submit() of one SET (t: protocol ttl), the common case: no lists, one clock read."""
        entry = None if t == 0 else (value, flags)
        with self._lock:
            conn = self._conn
            now = _monotonic()
            if conn is None or self._skipped or self._skipped_overflow or now < self.client.policy.down_until:
                return self._submit(P.SET, (k, value, t, flags), [(k, entry)])
            rid = self._last_sent + 1
            data = self._pack([P.SET, rid, k, value, t, flags])
            sock = conn.sock
            try:
                # One send() on the socket itself when it takes the whole frame; else the
                # connection's own loop (the rest of a partial send, gevent, a closed socket).
                n = 0 if sock is None or conn.green else sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as e:
                conn.close()
                return self._failed(conn, e, P.SET, (k, value, t, flags), [(k, entry)])
            if n != len(data):
                try:
                    conn.send_frame(data[n:] if n else data, now + self.client.timeout)
                except (OSError, ValueError) as e:
                    return self._failed(conn, e, P.SET, (k, value, t, flags), [(k, entry)])
            self._last_sent = rid
            self.pending[k] = (rid, entry)
            self._inflight[rid] = (now, (k,))
            self.counters["writes"] += 1
            return True

    def _submit(self, op: int, args: tuple, entries: list) -> bool:
        """submit() with the lock held."""
        if self.client.policy.window_open():  # skipped, as a synchronous write would be
            self._skip(k for k, _ in entries)
            return False
        conn = self._conn
        if conn is None or conn.sock is None:
            conn = self._connect()
            if conn is None:
                self._skip(k for k, _ in entries)
                return False
        try:
            self._send_after_skipped(conn, op, args, entries)
            return True
        except (OSError, ValueError) as e:
            return self._failed(conn, e, op, args, entries)

    def _failed(self, conn, e: Exception, op: int, args: tuple, entries: list) -> bool:
        """A send failed (lock held): the daemon restarted under an idle channel → once more
        on a new one; else the keys are remembered as skipped."""
        idle = not self._inflight
        self._lost(conn, e)
        if idle and isinstance(e, (BrokenPipeError, ConnectionResetError)):
            conn = self._connect()
            if conn is not None:
                try:
                    self._send_after_skipped(conn, op, args, entries)
                    return True
                except (OSError, ValueError) as e2:
                    self._lost(conn, e2)
        self._skip(k for k, _ in entries)
        return False

    def _send_after_skipped(self, conn, op: int, args: tuple, entries: list) -> None:
        if self._skipped or self._skipped_overflow:
            self._send_skipped(conn)
        self._send(conn, op, args, entries)

    def _send(self, conn, op: int, args: tuple, entries: list) -> None:
        """Numbers and sends one frame, its keys pending until the reply (lock held)."""
        rid = self._last_sent + 1
        now = _monotonic()
        conn.send_frame(self._pack([op, rid, *args]), now + self.client.timeout)
        self._last_sent = rid
        keys = []
        for k, entry in entries:
            self.pending[k] = (rid, entry)
            keys.append(k)
        self._inflight[rid] = (now, keys)
        self.counters["writes"] += 1

    def _send_skipped(self, conn) -> None:
        """Deletes the keys whose writes were skipped, ahead of any new write (lock held)."""
        if self._skipped_overflow:
            log.warning("nearcache: more than %d writes were skipped while the daemon was unreachable; "
                        "clearing the cache so that none of their old values is served", SKIPPED_MAX)
            self._send(conn, P.CLEAR, (), [])
        else:
            keys = sorted(self._skipped)
            for i in range(0, len(keys), 1000):
                part = keys[i:i + 1000]
                self._send(conn, P.DELETE_MANY, (part,), [(k, None) for k in part])
        self._skipped.clear()
        self._skipped_overflow = False

    def _connect(self):
        """Opens the channel and its drainer thread (called with the lock held)."""
        client = self.client
        try:
            conn = client._open(time.monotonic() + client.timeout)
        except (OSError, ValueError, P.ProtocolError) as e:
            try:
                client.policy.failed(_WRITE_OP, e)
            except P.CacheUnavailable:
                pass
            return None
        self._conn = conn
        self._unpacker = P.new_unpacker()
        threading.Thread(target=self._drain, args=(conn,), name="nearcache-writes", daemon=True).start()
        return conn

    def _skip(self, keys) -> None:
        for k in keys:
            self.counters["skipped"] += 1
            if not self._skipped_overflow:
                self._skipped.add(k)
                if len(self._skipped) > SKIPPED_MAX:
                    self._skipped.clear()
                    self._skipped_overflow = True

    # -- replies -------------------------------------------------------------
    def _drain(self, conn) -> None:
        """The drainer thread. Native sockets: wakes at most every DRAIN_PERIOD while
        writes are in flight and reads every reply there is (a wake-up per reply would
        take the GIL from the writing threads once per write); gevent/eventlet: a
        blocking read, which only switches greenlets."""
        try:
            if conn.green:
                while True:
                    self._feed(conn, conn.recv_blocking(self._check_stall))
            poller = select.poll()
            poller.register(conn.sock.fileno(), select.POLLIN)
            while True:
                if not poller.poll(int(P.STALL_SLICE * 1000)):
                    self._check_stall()
                    continue
                with self._rlock:
                    self._read_available(conn)
                time.sleep(DRAIN_PERIOD)
        except Exception as e:  # noqa: BLE001 - whatever ends the channel, its writes are lost
            with self._lock:
                if self._conn is conn:
                    self._lost(conn, e)

    def _read_available(self, conn) -> None:
        """Reads and acknowledges every reply already received (caller holds _rlock)."""
        while True:
            sock = conn.sock
            if sock is None:
                raise ConnectionResetError("write channel closed")
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                return
            self._feed(conn, data)

    def _feed(self, conn, data: bytes) -> None:
        if not data:
            raise ConnectionResetError("nearcached closed the write channel")
        self._unpacker.feed(data)
        frames = list(self._unpacker)
        for frame in frames:
            P.check_frame(frame)
        if frames:
            self._ack(frames)

    def _check_stall(self) -> None:
        """Raises when the oldest unacknowledged write waited longer than SOCKET_TIMEOUT."""
        if self._last_acked >= self._last_sent:
            return
        try:
            sent = next(iter(self._inflight.values()))[0]  # the oldest: ids ascend in insertion order
        except (StopIteration, RuntimeError):  # empty, or changed by another thread meanwhile
            return
        if time.monotonic() - sent > self.client.timeout:
            raise TimeoutError(f"no reply to a write within {self.client.timeout:g} s")

    def _ack(self, frames: list) -> None:
        """Acknowledges a batch of replies (one lock for all of them)."""
        failures = []
        top = 0
        with self._lock:
            pending, inflight = self.pending, self._inflight
            for frame in frames:
                rid, status = frame[0], frame[1]
                if rid > top:
                    top = rid
                keys = inflight.pop(rid, (0, ()))[1]
                for k in keys:
                    p = pending.get(k)
                    if p is not None and p[0] <= rid:
                        del pending[k]
                if status != P.OK:
                    failures.append((keys, frame[2] if len(frame) > 2 else P.STATUS_NAMES.get(status, status)))
                elif len(frame) > 2 and isinstance(frame[2], list) and frame[2]:
                    failures.append(([bytes(x) for x in frame[2]], "not stored (over a limit)"))
            for keys, message in failures:
                self.counters["failed"] += len(keys) or 1
        for keys, message in failures:
            for k in keys:
                log.debug("nearcache: write of %r failed: %s", k[:200], message)
            if keys:
                # Rate-limited per cause (WARN_INTERVAL); every key at DEBUG level.
                self.client.policy.warn(f"write:{message}", "nearcache: write of %r%s failed: %s", keys[0][:200],
                                        f" and {len(keys) - 1} more" if len(keys) > 1 else "", message)
        with self._acked:
            if top > self._last_acked:
                self._last_acked = top
            self._acked.notify_all()

    def _lost(self, conn, error) -> None:
        """The channel died (lock held): every unacknowledged write is remembered as skipped."""
        conn.close()
        self._conn = None
        lost = [k for _, keys in self._inflight.values() for k in keys]
        if lost:
            # The same rate limit as "daemon unreachable": one outage, one warning per interval.
            self.client.policy.warn("unreachable", "nearcache: daemon at %s unreachable (%s: %s): %d "
                                    "unacknowledged writes lost; their keys are deleted on reconnect",
                                    self.client.path, type(error).__name__, error, len(lost))
            self.counters["failed"] += len(lost)
            self._skip(lost)
        self._inflight.clear()
        self.pending.clear()
        with self._acked:
            self._last_acked = self._last_sent
            self._acked.notify_all()

    def may_block(self) -> bool:
        """Could a write wait now? Opening the channel does (connect, HELLO), and so does a
        send into a full socket buffer, which only happens when the daemon has stopped
        reading: its oldest unacknowledged write is older than STALLED_AFTER."""
        conn = self._conn
        if conn is None or conn.sock is None:
            return True
        if self._last_acked >= self._last_sent:
            return False
        try:
            sent = next(iter(self._inflight.values()))[0]
        except (StopIteration, RuntimeError):  # empty, or changed by another thread meanwhile
            return False
        return _monotonic() - sent > STALLED_AFTER

    def reap(self) -> bool:
        """Takes the replies already received, without blocking (a read that finds pending
        writes would otherwise wait for the drainer's next wake-up, up to DRAIN_PERIOD, to
        learn they landed); True when nothing is pending afterwards. A failure is left to
        the drainer, which sees it on its next read."""
        conn = self._conn
        if conn is not None and not conn.green and self._rlock.acquire(blocking=False):
            try:
                self._read_available(conn)
            except Exception:  # noqa: BLE001 - the drainer reports and handles it
                pass
            finally:
                self._rlock.release()
        return not self.pending

    # -- waiting -------------------------------------------------------------
    def unacked(self) -> bool:
        return self._last_acked < self._last_sent

    def wait(self, deadline: float) -> bool:
        """Waits until every write sent so far is acknowledged (or lost); False at the deadline.
        On a native socket the waiting thread reads the replies itself (no hand-off)."""
        target = self._last_sent
        conn = self._conn
        if conn is not None and not conn.green and self._last_acked < target:
            try:
                self._wait_reading(conn, target, deadline)
            except Exception as e:  # noqa: BLE001
                with self._lock:
                    if self._conn is conn:
                        self._lost(conn, e)
        with self._acked:
            while self._last_acked < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acked.wait(left)
        return True

    def _wait_reading(self, conn, target: int, deadline: float) -> None:
        poller = None
        while self._last_acked < target:
            if not self._rlock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return
            try:
                self._read_available(conn)
                if self._last_acked >= target:
                    return
                if poller is None:
                    poller = select.poll()
                    poller.register(conn.sock.fileno(), select.POLLIN)
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                poller.poll(max(1, min(int(left * 1000), int(P.STALL_SLICE * 1000))))
                self._check_stall()
            finally:
                self._rlock.release()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_WRITE_OP = None  # set below: a fail-open op for logging a channel that cannot open


def _flush_all() -> None:
    for ch in list(_channels):
        try:
            ch.wait(time.monotonic() + ch.client.timeout)
        except Exception:  # noqa: BLE001 - never fail an interpreter exit
            pass


atexit.register(_flush_all)


def _init() -> None:
    global _WRITE_OP
    from nearcache import core
    _WRITE_OP = core.Op([], lambda replies: None, False)


_init()
