"""`nearcache.Client`: the bytes-level client of one nearcached.

Hits come from the daemon's shared-memory segment, read in-process by
`nearcache._native.Segment` (no system call, no lock). Everything else goes
over the Unix socket. Each call builds an `Op` (nearcache.core: the request
frames and how the replies read) and runs it on a transport: `_run` on a
blocking connection taken from the process's pool, `_arun` on the event
loop's asyncio connection. The two differ only in that; the fail-open policy
(`core.Policy`) is the same object for both.

- One deadline per call: connect, HELLO and the request together take at
  most `timeout` seconds (plus the waits an op defines: a lease's wait, a
  clear).
- Connections: a LIFO pool per process (a fork() child never uses its
  parent's). Under gevent or eventlet monkey-patching the pool is bounded
  (`max_connections`, default 16): a thousand greenlets share a few daemon
  connections instead of opening one each.
- The segment is mapped from what HELLO reports; a call that found it
  unusable carries a HELLO in the same round trip (rate-limited) so that a
  re-map costs no extra wait.
- Every connection's daemon is checked before its first request
  (nearcache.trust), unless `verify_daemon=False`.

Daemon unreachable: with `strict=False` (the default) reads are misses and
writes are skipped, and a warning is logged at most once per `warn_interval`;
with `strict=True` they raise `CacheUnavailable`.
"""
from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import threading
import time
import weakref

from nearcache import _native
from nearcache import core
from nearcache import mapping
from nearcache import protocol as P
from nearcache.core import Lease, key_bytes, ttl_ms  # noqa: F401  (re-exported)
from nearcache.protocol import ProtocolError
from nearcache.trust import DEFAULT_DAEMON_USER, Trust
from nearcache.writes import WriteChannel

log = logging.getLogger("nearcache.client")

HIT, MISS, BUSY, UNAVAILABLE = _native.HIT, _native.MISS, _native.BUSY, _native.UNAVAILABLE
# Definite misses the segment reports: nothing there in a table that is the whole
# truth (no Redis tier), or a negative entry (Redis has no such key).
ABSENT, NEGATIVE = _native.ABSENT, _native.NEGATIVE
DEFINITE_MISSES = frozenset((ABSENT, NEGATIVE))
GREEN_POOL_SIZE = 16

# Bumped in every fork() child: connections opened in another epoch belong to
# the parent and are never used (nor closed: the parent may still use them).
_fork_epoch = 0
_hits_conns: dict = {}  # socket path -> ((path, daemon pid), the connection that registered the hit region)
_hits_conn_failed: list = []  # the error, once: no hit region could be made or sent
_live: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_epoch
    _fork_epoch += 1
    for c in list(_live):
        c._wchan = None  # the child starts with no pending writes and opens its own channel
        c._pending_writes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)

# Exceptions of a transport that the policy handles; anything else (a TypeError
# from a bad argument) is a bug of the caller and raises.
_CALL_ERRORS = (OSError, ProtocolError, ValueError)


class PoolBusy(P.CacheUnavailable):
    """Every pooled connection stayed busy until the call's deadline (this process
    is overloaded; the daemon may be fine, so no fast-fail window opens)."""


class FastFail(P.CacheUnavailable):
    """A call made while the fast-fail window after a timeout is open (it does not extend it)."""


class _Pool:
    """Idle blocking connections of one process, last used first."""

    def __init__(self, green: bool, size: int | None):
        self.epoch = _fork_epoch
        self.green = green
        self.idle: list[P.Connection] = []
        # Under monkey-patching threading.Semaphore is the green library's.
        self.slots = threading.Semaphore(size) if green and size else None

    def take(self, deadline: float):
        if self.slots is not None:
            if not self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise PoolBusy("every nearcache connection of this process stayed busy")
        try:
            return self.idle.pop()
        except IndexError:
            return None

    def give(self, conn) -> None:
        if conn is not None and conn.sock is not None:
            self.idle.append(conn)
        if self.slots is not None:
            self.slots.release()


class Client:
    """Client of one nearcached (see the module docstring).

    Keys are bytes (str is encoded as UTF-8); values are bytes; `ttl` is in
    seconds (None = never expires, 0 or less = expires at once).
    """

    def __init__(self, socket_path: str | None = None, *, timeout: float = 1.0, connect_timeout: float | None = None,
                 strict: bool = False, warn_interval: float = 60.0, use_shm: bool = True,
                 client_name: str = "python", remap_interval: float = 1.0, busy_poll: float = 50e-6,
                 max_connections: int | None = None, verify_daemon: bool = True,
                 daemon_user=DEFAULT_DAEMON_USER, sync_writes: bool = True, verify_segment: bool = True,
                 local_misses: bool = True):
        self.path = P.socket_path(socket_path)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout is not None else self.timeout
        self.strict = bool(strict)
        self.use_shm = bool(use_shm)
        # local_misses: a definite miss in the segment (DEFINITE_MISSES) with no write of
        # this process pending for the key is a miss without a round trip.
        self.local_misses = bool(local_misses)
        self.client_name = client_name
        self.remap_interval = float(remap_interval)
        self.busy_poll = float(busy_poll)
        self.max_connections = max_connections
        self.trust = Trust(daemon_user) if verify_daemon else None
        self.policy = core.Policy(self.path, self.strict, float(warn_interval), self.timeout)
        self.segment = _native.Segment()
        self.info: dict = {}              # the last HELLO
        self.limits: dict = dict(core.DEFAULT_LIMITS)
        self.shm_disabled_reason: str | None = None
        # verify_segment: serve hits only from the object HELLO names, on this process's clock (nearcache.mapping).
        self.verify_segment = bool(verify_segment)
        self.segment_path: str | None = None   # HELLO's name of the mapped segment
        self._mapped_id: tuple | None = None   # its (st_dev, st_ino), as checked
        self._warned_segment: set = set()
        self.counters = {"undecodable": 0}
        self._pool_state: _Pool | None = None
        self._aconns: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = \
            weakref.WeakKeyDictionary()
        self._next_refresh = 0.0       # HELLO-to-refresh rate limit
        self._next_open = 0.0          # segment re-open rate limit
        self._failed_generation = None
        self._warned_unreadable = False
        # sync_writes=False: set/set_many/delete_many do not wait (nearcache.writes); strict implies sync.
        self.sync_writes = bool(sync_writes) or self.strict
        self._wchan: WriteChannel | None = None
        # The channel's pending writes (WriteChannel.pending): one dict for the Client's
        # life, so that the native Django get checks its size without a Python call.
        self._pending_writes: dict[bytes, tuple] = {}
        _live.add(self)

    @property
    def _down_until(self) -> float:
        return self.policy.down_until

    # -- the segment ---------------------------------------------------------
    def _hello(self, conn, info: dict, t0: float, t1: float) -> None:
        """Applies a HELLO reply (t0..t1: time.monotonic() before it was sent and after it came)."""
        conn.info = info
        self.info = info
        for name in core.DEFAULT_LIMITS:
            if isinstance(info.get(name), int):
                self.limits[name] = info[name]
        # Absent from an older daemon's HELLO: SET's bound is then value_limit.
        if isinstance(info.get("set_value_limit"), int):
            self.limits["set_value_limit"] = info["set_value_limit"]
        else:
            self.limits.pop("set_value_limit", None)
        self._sync_segment(info, t0, t1)

    @property
    def segment_state(self) -> str:
        """"mapped" (hits served from the segment, identity and clock checked), "unverified"
        (mapped, verify_segment off), "socket" (not mapped: shm_disabled_reason says why) or "off"."""
        if not self.use_shm:
            return "off"
        if self.segment.is_open:
            return "mapped" if self.verify_segment else "unverified"
        return "socket"

    def _no_segment(self, kind: str, reason: str) -> None:
        """Serves no hits from shared memory, for `reason` (said once at WARNING per kind)."""
        self.segment.close()
        self._mapped_id = None
        self.shm_disabled_reason = reason
        if kind not in self._warned_segment:
            self._warned_segment.add(kind)
            log.warning("nearcache: not serving hits from the segment: %s; using the socket alone until a "
                        "HELLO and the mapping agree (VERIFY_SEGMENT=False switches this check off)", reason)
        else:
            log.debug("nearcache: not serving hits from the segment: %s", reason)

    def _sync_segment(self, info: dict, t0: float, t1: float) -> None:
        """Maps the segment HELLO described, unless it is the one already mapped; checks on
        every HELLO that the mapping is the daemon's object and the clock is this process's."""
        if not self.use_shm or not info.get("segment"):
            return
        layout = info.get("layout")
        if layout != _native.LAYOUT_VERSION:
            if self.segment.is_open or self.shm_disabled_reason is None:
                self.segment.close()
                self.shm_disabled_reason = (f"segment layout {layout!r} is not the one this client reads "
                                            f"({_native.LAYOUT_VERSION}); using the socket alone")
                log.warning("nearcache: %s", self.shm_disabled_reason)
            return
        verify = self.verify_segment
        if verify:
            why = mapping.clock_refusal(info, t0, t1)
            if why is not None:
                return self._no_segment("clock", why)
        gen = info.get("generation")
        seg = self.segment
        if seg.is_open and seg.generation == gen and self.segment_path == info["segment"] and \
                (not verify or self._mapped_id == mapping.identity(info)):
            return
        now = time.monotonic()
        if self._failed_generation == gen and now < self._next_open:
            return
        try:
            if verify:
                self._mapped_id = mapping.map_checked(seg, info)
            else:
                seg.open(info["segment"], posix_shm=bool(info.get("posix_shm")))
            self.segment_path = info["segment"]
            self.shm_disabled_reason = None
            self._failed_generation = None
        except mapping.Refused as e:
            self._no_segment("identity", str(e))
        except OSError as e:
            self.segment.close()
            self._mapped_id = None
            self._failed_generation = gen
            self._next_open = now + self.remap_interval
            self.shm_disabled_reason = str(e.strerror or e)
            if e.errno == errno.EPROTONOSUPPORT:
                log.warning("nearcache: %s; using the socket alone", e.strerror)
            elif e.errno in (errno.EACCES, errno.EPERM):
                if not self._warned_unreadable:
                    self._warned_unreadable = True
                    log.warning("nearcache: cannot read the segment %s (%s): every hit goes over the socket. "
                                "Fix: add this process's user (uid %d) to the group %s, which may read it",
                                info["segment"], e.strerror, os.getuid(), self._segment_group(info))
            else:
                log.info("nearcache: cannot map the segment (%s); using the socket meanwhile", e.strerror)

    @staticmethod
    def _segment_group(info: dict) -> str:
        path = info["segment"] if not info.get("posix_shm") else "/dev/shm/" + info["segment"].lstrip("/")
        try:
            gid = os.stat(path).st_gid
        except OSError:
            return "of the segment (see nearcached's socket_group / segment options)"
        try:
            return f"'{grp.getgrgid(gid).gr_name}' (gid {gid})"
        except KeyError:
            return f"gid {gid}"

    def _refresh_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_refresh:
            return False
        self._next_refresh = now + self.remap_interval
        return True

    def refresh_segment(self) -> None:
        """Re-checks the mapping with a HELLO (rate-limited to one per remap_interval)."""
        if self._refresh_due():
            op = core.Op([core.hello(self.client_name)], lambda replies: core.hello_info(replies[0]), None)
            t0 = time.monotonic()
            info = self._run(op)
            if info:
                self.info = info
                self._sync_segment(info, t0, time.monotonic())

    # -- the blocking transport ------------------------------------------------
    def _pool(self) -> _Pool:
        pool = self._pool_state
        if pool is None or pool.epoch != _fork_epoch:
            green = P.socket.socket.__module__ != "socket"  # gevent or eventlet patched the module
            size = self.max_connections if self.max_connections is not None else GREEN_POOL_SIZE
            pool = self._pool_state = _Pool(green, size)
        return pool

    def _open(self, deadline: float) -> P.Connection:
        cdeadline = min(deadline, time.monotonic() + self.connect_timeout)
        conn = P.Connection(self.path, cdeadline, self.busy_poll, self.trust)
        try:
            t0 = time.monotonic()
            reply = conn.call(*core.hello(self.client_name), deadline=deadline)
            self._hello(conn, core.hello_info(reply), t0, time.monotonic())
        except BaseException:
            conn.close()
            raise
        conn.epoch = _fork_epoch
        if self.use_shm:
            self._register_hits(conn, deadline)
        return conn

    def _register_hits(self, conn: P.Connection, deadline: float) -> None:
        """Hands the daemon this process's hit region (HITS, doc/protocol.md) on one
        live connection of the process, so that its shared-memory hits count in
        STATUS and inform eviction. Once per process and daemon (the daemon's
        pid tells a restarted one apart): each registration is read on its own,
        so a second one would count every hit twice."""
        daemon = (self.path, conn.info.get("pid"))
        held = _hits_conns.get(self.path)
        if held is not None and held[0] == daemon and held[1].epoch == _fork_epoch and not held[1].closed:
            return
        if conn.info.get("layout", 1) < 2:  # a daemon without HITS would close the connection
            return
        try:
            fd = _native.Segment.hit_region_fd()
        except OSError as e:  # no sealed memfd here: hits are served all the same, just not reported
            if not _hits_conn_failed:
                _hits_conn_failed.append(e)
                log.warning("nearcache: hits served from shared memory are not reported to the daemon (%s)", e)
            return
        if conn.send_fd(P.HITS, fd, deadline)[0] == P.OK:
            _hits_conns[self.path] = (daemon, conn)

    def _conn(self) -> P.Connection:
        """An idle connection of this process (opened if there is none); it stays in the pool."""
        pool = self._pool()
        deadline = time.monotonic() + self.timeout
        conn = pool.take(deadline)
        try:
            if conn is None:
                conn = self._open(deadline)
        finally:
            pool.give(conn)
        return conn

    def _stall_check(self, extra: float):
        """For an op that may wait past SOCKET_TIMEOUT: a check that the daemon
        is stopped (its heartbeat is stale), so that the wait ends early."""
        if extra <= 0 or not self.use_shm or not self.segment.is_open:
            return None
        seg = self.segment
        return lambda: not seg.alive()

    def _send(self, reqs: list, deadline: float, retry: bool, refresh: bool, extra: float = 0.0) -> list:
        pool = self._pool()
        soft, stalled = deadline - extra, self._stall_check(extra)
        conn = pool.take(soft)
        try:
            fresh = conn is None
            if fresh:
                conn = self._open(soft)  # connect and HELLO within SOCKET_TIMEOUT, whatever the op may wait
            hello = refresh and not fresh and self._refresh_due()
            t0 = time.monotonic()
            if hello:
                reqs = [core.hello(self.client_name), *reqs]
            try:
                replies = conn.call_many(reqs, deadline, soft, stalled)
            except (ConnectionResetError, BrokenPipeError):
                # The daemon restarted under an idle connection: once more on a new one.
                if fresh or not retry:
                    raise
                conn = None
                conn = self._open(soft)
                replies = conn.call_many(reqs, deadline, soft, stalled)
        finally:
            pool.give(conn)
        return self._strip_hello(conn, replies, t0) if hello else replies

    def _strip_hello(self, conn, replies: list, t0: float) -> list:
        """Applies the HELLO a call carried in front of its requests (sent after t0); returns the rest."""
        try:
            self._hello(conn, core.hello_info(replies[0]), t0, time.monotonic())
        except ProtocolError:
            pass
        return replies[1:]

    def _begin(self, op: core.Op) -> float:
        """The deadline of an op about to be sent; raises FastFail while the window is open."""
        if self.policy.window_open():
            raise FastFail(f"nearcached timed out recently ({self.policy.down_reason}); not retrying yet")
        return time.monotonic() + self.timeout + op.extra

    def _run(self, op: core.Op, refresh: bool = False):
        """Runs one Op: its result, or the policy's answer to its failure."""
        try:
            if not op.requests:
                return op.result(())
            deadline = self._begin(op)
            ch = self._wchan
            if ch is not None and ch.unacked() and not ch.wait(deadline - op.extra):  # earlier writes first
                raise TimeoutError("this process's earlier writes were not acknowledged in time")
            return op.result(self._send(op.requests, deadline, op.retry, refresh, op.extra))
        except _CALL_ERRORS as e:
            return self.policy.failed(op, e)

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until this process's writes are acknowledged; False if some were not in time."""
        ch = self._wchan
        return ch is None or ch.wait(time.monotonic() + (self.timeout if timeout is None else timeout))

    def close(self) -> None:
        """Closes this process's idle connections."""
        pool = self._pool_state
        if pool is not None and pool.epoch == _fork_epoch:
            while pool.idle:
                pool.idle.pop().close()

    # -- the asyncio transport -------------------------------------------------
    async def _aconn(self, deadline: float) -> P.AsyncConnection:
        loop = asyncio.get_running_loop()
        task = self._aconns.get(loop)
        if task is not None and task.done():
            c = None if task.cancelled() or task.exception() else task.result()
            if c is None or c.closed or c.epoch != _fork_epoch:
                task = None
        if task is None:
            task = loop.create_task(self._aopen(deadline))
            self._aconns[loop] = task
        try:
            return await asyncio.shield(task)
        except BaseException:
            if self._aconns.get(loop) is task and task.done():
                del self._aconns[loop]
            raise

    async def _aopen(self, deadline: float) -> P.AsyncConnection:
        cdeadline = min(deadline, time.monotonic() + self.connect_timeout)
        c = await P.AsyncConnection.open(self.path, cdeadline, self.trust)
        c.epoch = _fork_epoch
        c.used = False
        try:
            t0 = time.monotonic()
            reply = await c.call(*core.hello(self.client_name), deadline=deadline)
            self._hello(c, core.hello_info(reply), t0, time.monotonic())
        except BaseException:
            c.close()
            raise
        return c

    async def _asend(self, reqs: list, deadline: float, retry: bool, refresh: bool, extra: float = 0.0) -> list:
        soft, stalled = deadline - extra, self._stall_check(extra)
        conn = await self._aconn(soft)
        reused, conn.used = conn.used, True
        hello = refresh and reused and self._refresh_due()
        t0 = time.monotonic()
        if hello:
            reqs = [core.hello(self.client_name), *reqs]
        try:
            replies = await conn.call_many(reqs, deadline, soft, stalled)
        except (ConnectionResetError, BrokenPipeError):
            if not (retry and reused):
                raise
            conn = await self._aconn(soft)
            conn.used = True
            replies = await conn.call_many(reqs, deadline, soft, stalled)
        return self._strip_hello(conn, replies, t0) if hello else replies

    async def _arun(self, op: core.Op, refresh: bool = False):
        try:
            if not op.requests:
                return op.result(())
            deadline = self._begin(op)
            ch = self._wchan
            while ch is not None and ch.unacked():  # this process's earlier writes first
                if time.monotonic() >= deadline - op.extra:
                    raise TimeoutError("this process's earlier writes were not acknowledged in time")
                await asyncio.sleep(0.0002)
            return op.result(await self._asend(op.requests, deadline, op.retry, refresh, op.extra))
        except (*_CALL_ERRORS, asyncio.TimeoutError) as e:
            return self.policy.failed(op, e)

    # -- shared memory -------------------------------------------------------
    def _shm_get(self, k: bytes):
        """(status, entry): the segment's answer for a key."""
        st, value, flags = self.segment.get(k)
        return st, ((value, flags) if st == HIT else None)

    # -- reads ---------------------------------------------------------------
    def get(self, key) -> bytes | None:
        e = self.get_entry(key)
        return None if e is None else e[0]

    def pending(self, k: bytes):
        """(True, entry or None) when this process has a write of k not yet acknowledged."""
        ch = self._wchan
        if ch is not None and ch.pending:
            p = ch.pending.get(k)
            if p is not None:
                return True, p[1]
        return False, None

    def _local(self, k: bytes):
        """What this process can answer alone: (True, entry) from its pending writes
        or a shared-memory hit, else (False, refresh the mapping before asking?)."""
        found, e = self.pending(k)
        if found:
            return True, e
        if self.use_shm:
            st, e = self._shm_get(k)
            if st == HIT:
                return True, e
            if st in DEFINITE_MISSES and self.local_misses:
                self.segment.local_miss()
                return True, None
            return False, st == UNAVAILABLE
        return False, False

    def get_entry(self, key) -> tuple[bytes, int] | None:
        """(value, flags) or None."""
        k = key_bytes(key)
        found, e = self._local(k)
        return e if found else self.fetch(k, refresh=e)

    def fetch(self, k: bytes, refresh: bool = False) -> tuple[bytes, int] | None:
        """GET over the socket (skipping shared memory)."""
        return self._run(core.get(k), refresh)

    def get_many(self, keys) -> dict:
        """{key: value} for the keys present."""
        return {k: v[0] for k, v in self.get_many_entries(keys).items()}

    def get_many_entries(self, keys) -> dict:
        out, missing = self._shm_many(keys)
        if missing:
            for (key, _), e in zip(missing, self.fetch_many([k for _, k in missing])):
                if e is not None:
                    out[key] = e
        return out

    def _shm_many(self, keys):
        out, missing = {}, []
        for key in keys:
            k = key_bytes(key)
            found, e = self.pending(k)
            if found:
                if e is not None:
                    out[key] = e
                continue
            if self.use_shm:
                st, e = self._shm_get(k)
                if st == HIT:
                    out[key] = e
                    continue
                if st in DEFINITE_MISSES and self.local_misses:
                    self.segment.local_miss()
                    continue
            missing.append((key, k))
        return out, missing

    def fetch_many(self, ks: list[bytes], refresh: bool = False) -> list:
        """GET_MANY over the socket: a list of (value, flags) or None, in order."""
        return self._run(core.get_many(ks, self.limits), refresh)

    def _has_local(self, k: bytes) -> bool | None:
        """has_key answered by this process alone (its pending writes, a hit), or None."""
        found, e = self.pending(k)
        if found:
            return e is not None
        if self.use_shm:
            st = self.segment.get(k)[0]
            if st == HIT:
                return True
            if st in DEFINITE_MISSES and self.local_misses:
                self.segment.local_miss()
                return False
        return None

    def has_key(self, key) -> bool:
        k = key_bytes(key)
        local = self._has_local(k)
        return local if local is not None else self._run(core.has_key(k))

    # -- writes --------------------------------------------------------------
    def _channel(self) -> WriteChannel:
        ch = self._wchan
        if ch is None:
            ch = self._wchan = WriteChannel(self)
        return ch

    def _write_set_many(self, op: core.Op) -> list:
        if self.sync_writes or not op.requests:
            return self._run(op)
        ch = self._channel()
        failed = op.result([[P.OK, []] for _ in op.requests])  # what the limits refused
        for req in op.requests:
            items, ttl = req[1], req[2]
            entries = [(it[0], None if ttl == 0 else (it[1], it[2])) for it in items]
            if not ch.submit(req[0], req[1:], entries):
                failed.extend(it[0] for it in items)
        return failed

    def _write_delete_many(self, op: core.Op, n: int) -> int:
        if self.sync_writes or not op.requests:
            return self._run(op)
        ch = self._channel()
        for req in op.requests:
            ch.submit(req[0], req[1:], [(k, None) for k in req[1]])
        return n

    def set(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        """Stores the value; False when it was not stored (daemon unreachable, over a limit).
        With sync_writes=False: sent without waiting, True when sent."""
        k = key if type(key) is bytes else key_bytes(key)
        lim = self.limits
        if self.sync_writes or len(k) > lim["key_limit"] or len(value) > lim["value_limit"]:
            return self._run(core.set(k, value, ttl, flags, lim))  # waits, or refuses (over a limit)
        # Sent without waiting: the common case, kept short (no Op, no lists).
        return (self._wchan or self._channel()).submit_set(k, value, ttl_ms(ttl), flags)

    def add(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        """Stores the value only if the key is absent; True when stored."""
        return self._run(core.add(key_bytes(key), value, ttl, flags, self.limits))

    def replace(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        """Stores the value only if the key is present (Redis's SET XX); True when stored."""
        return self._run(core.replace(key_bytes(key), value, ttl, flags, self.limits))

    def pttl(self, key) -> int:
        """Milliseconds the key has left; -1: no expiry; -2: no such key (Redis's PTTL;
        with a Redis tier, Redis's answer)."""
        return self._run(core.pttl(key_bytes(key)))

    def entry_ttl(self, key) -> tuple[bytes, int, int] | None:
        """(value, flags, pttl) of the key, or None."""
        return self._run(core.entry_ttl(key_bytes(key)))

    @staticmethod
    def _items(items):
        if isinstance(items, dict):
            items = [(k, v, 0) for k, v in items.items()]
        byk = {}
        triples = []
        for k, v, f in items:
            kb = key_bytes(k)
            byk[kb] = k
            triples.append((kb, v, f))
        return triples, byk

    def set_many(self, items, ttl: float | None = None) -> list:
        """items: {key: value} or [(key, value, flags)]; returns the keys that were not stored."""
        triples, byk = self._items(items)
        return [byk[kb] for kb in self._write_set_many(core.set_many(triples, ttl, self.limits))]

    def delete(self, key) -> bool:
        return self._run(core.delete(key_bytes(key)))

    def delete_many(self, keys) -> int:
        """How many keys existed (sync_writes=False: how many were sent)."""
        ks = [key_bytes(k) for k in keys]
        return self._write_delete_many(core.delete_many(ks, self.limits), len(ks))

    def touch(self, key, ttl: float | None = None) -> bool:
        return self._run(core.touch(key_bytes(key), ttl))

    def expire_ms(self, key, ms: int | None) -> bool:
        """A new TTL in milliseconds (None: none, Redis's PERSIST; <= 0: delete); False when absent."""
        return self._run(core.touch_ms(key_bytes(key), ms))

    def incr(self, key, delta: int = 1) -> int | None:
        """The new value, or None when the key is absent (or the daemon unreachable)."""
        return self._run(core.incr(key_bytes(key), delta))

    def decr(self, key, delta: int = 1) -> int | None:
        return self.incr(key, -delta)

    def clear(self, prefix: bytes | str | None = None) -> int:
        """Removes every entry, or those whose key starts with `prefix`; returns how many."""
        return self._run(core.clear(None if prefix is None else key_bytes(prefix)))

    # -- locks ---------------------------------------------------------------
    def lock(self, name, timeout=None, sleep: float = 0.1, blocking: bool = True, blocking_timeout=None,
             thread_local: bool = True):
        """A nearcache.lock.Lock (redis-py's Lock interface) named `name`, in the locks' own key space."""
        from nearcache.lock import Lock

        return Lock(self, key_bytes(name), timeout, sleep, blocking, blocking_timeout, thread_local)

    def alock(self, name, timeout=None, sleep: float = 0.1, blocking: bool = True, blocking_timeout=None):
        """lock() for coroutines: a nearcache.lock.AsyncLock (redis.asyncio's Lock interface)."""
        from nearcache.lock import AsyncLock, Lock

        return AsyncLock(Lock(self, key_bytes(name), timeout, sleep, blocking, blocking_timeout, False))

    # -- patterns ------------------------------------------------------------
    def iter_keys(self, pattern, count: int = core.SCAN_COUNT):
        """The keys of this host's table matching a glob pattern (Redis's rules), as bytes,
        `count` per round trip; each key present throughout is yielded once (SCAN)."""
        p, cursor = key_bytes(pattern), 0
        try:
            while True:
                cursor, keys = self._run(core.scan(cursor, p, count))
                yield from keys
                if cursor == 0:
                    return
        finally:
            if cursor:  # abandoned: the daemon drops the scan's keys now
                self._run(core.scan(cursor, p, 0))

    def delete_pattern(self, pattern) -> int:
        """Deletes the keys matching a glob pattern (and from Redis with a tier); how many this host had."""
        return self._run(core.delete_pattern(key_bytes(pattern)))

    # -- leases --------------------------------------------------------------
    def lease(self, key, lease_ttl: float = 30.0, wait: float = 30.0, refresh: bool = False) -> Lease:
        """LEASE: the value if present; else the lease (compute, then set() or release());
        else, after waiting `wait` seconds for another holder, neither."""
        return self._run(core.lease(key_bytes(key), lease_ttl, wait), refresh)

    def release(self, key, token: int) -> bool:
        return self._run(core.release(key_bytes(key), token))

    # -- administration ------------------------------------------------------
    def ping(self) -> bool:
        return self._run(core.ping())

    def status(self) -> dict:
        """The daemon's STATUS map (raises CacheUnavailable when unreachable)."""
        return self._run(core.status())

    # -- asyncio: the same Ops on the event loop's connection ----------------
    async def _awrite(self, fn, *args):
        """A write on the process's channel from a coroutine. A send on a live channel does
        not wait; opening the channel, or sending to a daemon that stopped reading, can (up
        to SOCKET_TIMEOUT), so that is done in a thread, never on the event loop."""
        ch = self._wchan
        if ch is not None and not ch.may_block():
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def aget(self, key) -> bytes | None:
        e = await self.aget_entry(key)
        return None if e is None else e[0]

    async def aget_entry(self, key) -> tuple[bytes, int] | None:
        k = key_bytes(key)
        found, e = self._local(k)
        return e if found else await self.afetch(k, refresh=e)

    async def afetch(self, k: bytes, refresh: bool = False) -> tuple[bytes, int] | None:
        return await self._arun(core.get(k), refresh)

    async def aget_many(self, keys) -> dict:
        out, missing = self._shm_many(keys)
        if missing:
            for (key, _), e in zip(missing, await self.afetch_many([k for _, k in missing])):
                if e is not None:
                    out[key] = e
        return {k: v[0] for k, v in out.items()}

    async def afetch_many(self, ks: list[bytes], refresh: bool = False) -> list:
        return await self._arun(core.get_many(ks, self.limits), refresh)

    async def ahas_key(self, key) -> bool:
        k = key_bytes(key)
        local = self._has_local(k)
        return local if local is not None else await self._arun(core.has_key(k))

    async def aset(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        if self.sync_writes:
            return await self._arun(core.set(key_bytes(key), value, ttl, flags, self.limits))
        return await self._awrite(self.set, key, value, ttl, flags)  # the same path as set()

    async def aadd(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        return await self._arun(core.add(key_bytes(key), value, ttl, flags, self.limits))

    async def areplace(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        return await self._arun(core.replace(key_bytes(key), value, ttl, flags, self.limits))

    async def apttl(self, key) -> int:
        return await self._arun(core.pttl(key_bytes(key)))

    async def aentry_ttl(self, key) -> tuple[bytes, int, int] | None:
        return await self._arun(core.entry_ttl(key_bytes(key)))

    async def aset_many(self, items, ttl: float | None = None) -> list:
        triples, byk = self._items(items)
        op = core.set_many(triples, ttl, self.limits)
        failed = await self._arun(op) if self.sync_writes else await self._awrite(self._write_set_many, op)
        return [byk[kb] for kb in failed]

    async def adelete(self, key) -> bool:
        return await self._arun(core.delete(key_bytes(key)))

    async def adelete_many(self, keys) -> int:
        ks = [key_bytes(k) for k in keys]
        op = core.delete_many(ks, self.limits)
        return await self._arun(op) if self.sync_writes else await self._awrite(self._write_delete_many, op, len(ks))

    async def atouch(self, key, ttl: float | None = None) -> bool:
        return await self._arun(core.touch(key_bytes(key), ttl))

    async def aexpire_ms(self, key, ms: int | None) -> bool:
        return await self._arun(core.touch_ms(key_bytes(key), ms))

    async def aincr(self, key, delta: int = 1) -> int | None:
        return await self._arun(core.incr(key_bytes(key), delta))

    async def adecr(self, key, delta: int = 1) -> int | None:
        return await self.aincr(key, -delta)

    async def aclear(self, prefix: bytes | str | None = None) -> int:
        return await self._arun(core.clear(None if prefix is None else key_bytes(prefix)))

    async def aiter_keys(self, pattern, count: int = core.SCAN_COUNT):
        p, cursor = key_bytes(pattern), 0
        try:
            while True:
                cursor, keys = await self._arun(core.scan(cursor, p, count))
                for k in keys:
                    yield k
                if cursor == 0:
                    return
        finally:
            if cursor:
                await self._arun(core.scan(cursor, p, 0))

    async def adelete_pattern(self, pattern) -> int:
        return await self._arun(core.delete_pattern(key_bytes(pattern)))

    async def alease(self, key, lease_ttl: float = 30.0, wait: float = 30.0, refresh: bool = False) -> Lease:
        return await self._arun(core.lease(key_bytes(key), lease_ttl, wait), refresh)

    async def arelease(self, key, token: int) -> bool:
        return await self._arun(core.release(key_bytes(key), token))

    async def aping(self) -> bool:
        return await self._arun(core.ping())

    async def astatus(self) -> dict:
        return await self._arun(core.status())
