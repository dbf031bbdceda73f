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
import itertools
import logging
import threading
import time
import weakref

import msgpack

from nearcache import protocol as P

log = logging.getLogger("nearcache.client")

SKIPPED_MAX = 10_000

_channels: "weakref.WeakSet[WriteChannel]" = weakref.WeakSet()


class WriteChannel:
    """One process's ordered, unacknowledged writes to one daemon (see the module docstring)."""

    def __init__(self, client):
        self.client = client
        self.pending: dict[bytes, tuple] = {}
        self.counters = {"writes": 0, "failed": 0, "skipped": 0}
        self._lock = threading.Lock()            # numbering + sending + pending updates
        self._acked = threading.Condition(threading.Lock())
        self._ids = itertools.count(1)
        self._last_sent = 0                     # id of the last frame sent
        self._last_acked = 0                    # every frame up to this id is acknowledged
        self._inflight: dict[int, list] = {}    # id -> keys of that frame (ids ascend)
        self._sent_at: list = []                # [(id, monotonic time sent)] of unacknowledged frames
        self._conn: P.Connection | None = None
        self._skipped: set[bytes] = set()
        self._skipped_overflow = False
        self._pack = msgpack.Packer(use_bin_type=True).pack
        _channels.add(self)

    # -- sending ---------------------------------------------------------------
    def submit(self, op: int, args: tuple, entries: list) -> bool:
        """Sends one write frame; entries: [(key, (value, flags) or None)] it installs in pending.
        False when it could not be sent (the keys are then remembered as skipped)."""
        with self._lock:
            conn = self._conn
            if conn is None or conn.sock is None:
                conn = self._connect()
                if conn is None:
                    self._skip(k for k, _ in entries)
                    return False
            rid = next(self._ids)
            try:
                conn.send_frame(self._pack([op, rid, *args]), time.monotonic() + self.client.timeout)
            except (OSError, ValueError) as e:
                self._lost(conn, e)
                self._skip(k for k, _ in entries)
                return False
            self._last_sent = rid
            keys = []
            for k, entry in entries:
                self.pending[k] = (rid, entry)
                keys.append(k)
            self._inflight[rid] = keys
            self._sent_at.append((rid, time.monotonic()))
            self.counters["writes"] += 1
            return True

    def _connect(self):
        """Opens the channel (called with the lock held); first deletes what was skipped."""
        client = self.client
        if client.policy.window_open():
            return None
        deadline = time.monotonic() + client.timeout
        try:
            conn = client._open(deadline)
            if self._skipped or self._skipped_overflow:
                if self._skipped_overflow:
                    log.warning("nearcache: more than %d writes were skipped while the daemon was unreachable; "
                                "clearing the cache so that none of their old values is served", SKIPPED_MAX)
                    reqs = [(P.CLEAR,)]
                else:
                    keys = sorted(self._skipped)
                    reqs = [(P.DELETE_MANY, keys[i:i + 1000]) for i in range(0, len(keys), 1000)]
                extra = 30.0 if self._skipped_overflow else 0.0
                for r in conn.call_many(reqs, deadline + extra):
                    if r[0] != P.OK:
                        raise P.error_for(r[0], r[1] if len(r) > 1 else "")
                self._skipped.clear()
                self._skipped_overflow = False
        except (OSError, ValueError, P.ProtocolError) as e:
            try:
                client.policy.failed(_WRITE_OP, e)
            except P.CacheUnavailable:
                pass
            return None
        self._conn = conn
        conn.sock_reader = threading.Thread(target=self._drain, args=(conn,), name="nearcache-writes", daemon=True)
        conn.sock_reader.start()
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
        unpacker = P.new_unpacker()
        try:
            while True:
                data = conn.recv_blocking(self._check_stall)
                if not data:
                    raise ConnectionResetError("nearcached closed the write channel")
                unpacker.feed(data)
                for frame in unpacker:
                    P.check_frame(frame)
                    self._ack(frame)
        except Exception as e:  # noqa: BLE001 - whatever ends the channel, its writes are lost
            with self._lock:
                if self._conn is conn:
                    self._lost(conn, e)

    def _check_stall(self) -> None:
        """Raises when the oldest unacknowledged write waited longer than SOCKET_TIMEOUT."""
        sent = self._sent_at
        if self._last_acked < self._last_sent and sent and time.monotonic() - sent[0][1] > self.client.timeout:
            raise TimeoutError(f"no reply to a write within {self.client.timeout:g} s")

    def _ack(self, frame) -> None:
        rid, status = frame[0], frame[1]
        with self._lock:
            keys = self._inflight.pop(rid, ())
            sent = self._sent_at
            while sent and sent[0][0] <= rid:
                sent.pop(0)
            for k in keys:
                p = self.pending.get(k)
                if p is not None and p[0] <= rid:
                    del self.pending[k]
            failed = keys if status != P.OK else (
                [bytes(x) for x in frame[2]] if len(frame) > 2 and isinstance(frame[2], list) else ())
            if status != P.OK or failed:
                self.counters["failed"] += len(failed) or 1
                message = frame[2] if status != P.OK and len(frame) > 2 else P.STATUS_NAMES.get(status, status)
                for k in failed[:10]:
                    log.warning("nearcache: write of %r failed: %s", k[:200], message)
        with self._acked:
            if rid > self._last_acked:
                self._last_acked = rid
            self._acked.notify_all()

    def _lost(self, conn, error) -> None:
        """The channel died (lock held): every unacknowledged write is remembered as skipped."""
        conn.close()
        self._conn = None
        lost = [k for keys in self._inflight.values() for k in keys]
        if lost:
            log.warning("nearcache: %d unacknowledged writes lost with the write channel (%s: %s); "
                        "their keys are deleted on reconnect", len(lost), type(error).__name__, error)
            self.counters["failed"] += len(lost)
            self._skip(lost)
        self._inflight.clear()
        self._sent_at.clear()
        self.pending.clear()
        with self._acked:
            self._last_acked = self._last_sent
            self._acked.notify_all()

    # -- waiting -------------------------------------------------------------
    def unacked(self) -> bool:
        return self._last_acked < self._last_sent

    def wait(self, deadline: float) -> bool:
        """Waits until every write sent so far is acknowledged (or lost); False at the deadline."""
        target = self._last_sent
        with self._acked:
            while self._last_acked < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acked.wait(left)
        return True

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
