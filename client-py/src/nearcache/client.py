"""`nearcache.Client`: the bytes-level client of one nearcached.

Hits come from the daemon's shared-memory segment, read in-process by
`nearcache._native.Segment` (no system call, no lock). Everything else goes
over the Unix socket: one blocking connection per thread (per process: a
fork() child never uses its parent's socket) and one asyncio connection per
event loop. The segment is mapped from what HELLO reports and re-mapped when a
HELLO reports another generation or the mapped one goes stale.

Daemon unreachable: with `strict=False` (the default) reads are misses and
writes are skipped, and a warning is logged at most once per `warn_interval`;
with `strict=True` they raise `CacheUnavailable`. Every socket call has a
timeout.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass

from nearcache import _native
from nearcache import protocol as P
from nearcache.protocol import CacheUnavailable, ProtocolError

log = logging.getLogger("nearcache.client")

HIT, MISS, BUSY, UNAVAILABLE = _native.HIT, _native.MISS, _native.BUSY, _native.UNAVAILABLE

# Bumped in every fork() child: connections opened in another epoch belong to
# the parent and are never used (nor closed: closing would not hurt, but the
# parent may still be using the same socket).
_fork_epoch = 0


def _after_fork_in_child() -> None:
    global _fork_epoch
    _fork_epoch += 1


os.register_at_fork(after_in_child=_after_fork_in_child)

_MANY_CHUNK = 1000
# Replies that mean "the daemon cannot serve this now": handled like a failed connection.
_UNREACHABLE_STATUSES = frozenset({P.SHUTTING_DOWN, P.UNAVAILABLE, P.TOO_MANY_REQUESTS})  # keys per GET_MANY / SET_MANY / DELETE_MANY frame


def ttl_ms(ttl: float | None) -> int | None:
    """Seconds (None = never expires, <= 0 = expires at once) as protocol milliseconds."""
    if ttl is None:
        return None
    if ttl <= 0:
        return 0
    return max(1, math.ceil(ttl * 1000))


def _key(key) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"nearcache keys are str or bytes, not {type(key).__name__}")


@dataclass
class Lease:
    """Outcome of LEASE: a value (`hit`), the lease (`token`), or neither (wait timed out)."""
    hit: bool
    value: bytes | None = None
    flags: int = 0
    token: int | None = None


class Client:
    """Client of one nearcached (see the module docstring).

    Keys are bytes (str is encoded as UTF-8); values are bytes; `ttl` is in
    seconds (None = never expires, 0 or less = expires at once).
    """

    def __init__(self, socket_path: str | None = None, *, timeout: float = 1.0, connect_timeout: float | None = None,
                 strict: bool = False, warn_interval: float = 60.0, use_shm: bool = True,
                 client_name: str = "python", remap_interval: float = 1.0, busy_poll: float = 50e-6):
        self.path = P.socket_path(socket_path)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout is not None else self.timeout
        self.strict = bool(strict)
        self.warn_interval = float(warn_interval)
        self.use_shm = bool(use_shm)
        self.client_name = client_name
        self.remap_interval = float(remap_interval)
        self.busy_poll = float(busy_poll)
        self.segment = _native.Segment()
        self.info: dict = {}              # the last HELLO
        self.shm_disabled_reason: str | None = None
        self._local = threading.local()
        self._aconns: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._last_warning = -math.inf
        self._down_until = 0.0
        self._next_refresh = 0.0       # refresh_segment() rate limit
        self._next_open = 0.0          # segment re-open rate limit
        self._failed_generation = None

    # -- connections ---------------------------------------------------------
    def _conn(self) -> P.Connection:
        c = getattr(self._local, "conn", None)
        if c is not None and c.sock is not None and c.epoch == _fork_epoch:
            return c
        if time.monotonic() < self._down_until:
            raise socket.timeout("nearcached timed out recently; not retrying yet")
        try:
            c = P.Connection(self.path, self.timeout, self.connect_timeout, self.busy_poll)
        except socket.timeout:
            self._down_until = time.monotonic() + min(1.0, self.timeout)
            raise
        c.epoch = _fork_epoch
        c.used = False
        reply = c.call(P.HELLO, P.PROTOCOL_VERSION, self.client_name)
        self._hello(c, reply)
        self._local.conn = c
        return c

    def _hello(self, conn, reply: list) -> None:
        if reply[0] != P.OK:
            conn.close()
            message = reply[1] if len(reply) > 1 else P.STATUS_NAMES.get(reply[0], "")
            # Refusals are an unreachable daemon for the failure policy.
            if reply[0] == P.NOT_ALLOWED:
                raise PermissionError(errno.EACCES, f"nearcached refused this user: {message}")
            if reply[0] == P.SHUTTING_DOWN:
                raise ConnectionRefusedError(errno.ECONNREFUSED, f"nearcached is shutting down: {message}")
            raise P.error_for(reply[0], message)
        info = reply[1] if len(reply) > 1 and isinstance(reply[1], dict) else {}
        conn.info = info
        self.info = info
        self._sync_segment(info)

    def _sync_segment(self, info: dict) -> None:
        """Maps the segment HELLO described, unless it is the one already mapped."""
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
        gen = info.get("generation")
        seg = self.segment
        if seg.is_open and seg.generation == gen and seg.path == info["segment"]:
            return
        # Rate-limit attempts that keep failing on the same table.
        now = time.monotonic()
        if self._failed_generation == gen and now < self._next_open:
            return
        try:
            seg.open(info["segment"], hints=info.get("hints") or None, posix_shm=bool(info.get("posix_shm")))
            self.shm_disabled_reason = None
            self._failed_generation = None
        except OSError as e:
            self._failed_generation = gen
            self._next_open = now + self.remap_interval
            self.shm_disabled_reason = str(e.strerror or e)
            if e.errno == errno.EPROTONOSUPPORT:
                log.warning("nearcache: %s; using the socket alone", e.strerror)
            else:
                log.info("nearcache: cannot map the segment (%s); using the socket meanwhile", e.strerror)

    def refresh_segment(self) -> None:
        """Re-checks the mapping with a HELLO (rate-limited to one per remap_interval)."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self.remap_interval
        try:
            conn = self._conn()
            reply = conn.call(P.HELLO, P.PROTOCOL_VERSION, self.client_name)
            if reply[0] == P.OK:
                conn.info = self.info = reply[1]
                self._sync_segment(reply[1])
        except (OSError, ProtocolError):
            pass

    def close(self) -> None:
        """Closes this thread's connection (others close when their threads end)."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            self._local.conn = None
            if c.epoch == _fork_epoch:
                c.close()

    # -- failure policy ------------------------------------------------------
    def _unreachable(self, exc: BaseException) -> None:
        """Logs (rate-limited) and raises CacheUnavailable; callers in fail-open mode catch it."""
        now = time.monotonic()
        # UNAVAILABLE: the daemon answers, but a tier it needs (Redis, with
        # redis_down = error) does not; the policy is the same, the words are not.
        what = ("answers but cannot serve this" if isinstance(exc, P.ProtocolError) and exc.status == P.UNAVAILABLE
                else "unreachable")
        if now - self._last_warning >= self.warn_interval:
            self._last_warning = now
            log.warning("nearcache: daemon at %s %s (%s: %s); %s", self.path, what, type(exc).__name__, exc,
                        "raising (STRICT)" if self.strict else "reads are misses and writes are skipped")
        raise CacheUnavailable(f"nearcached at {self.path} {what}: {exc}") from exc

    def _requests(self, reqs, timeout: float | None = None, retry: bool = True) -> list[list]:
        """Runs requests on this thread's connection; raises CacheUnavailable or ProtocolError."""
        try:
            conn = self._conn()
            reused = conn.used
            conn.used = True
            try:
                replies = conn.call_many(reqs, timeout=timeout)
            except (ConnectionResetError, BrokenPipeError):
                # The daemon restarted under a connection we had used: one more try on a new one.
                if not (retry and reused):
                    raise
                conn = self._conn()
                conn.used = True
                replies = conn.call_many(reqs, timeout=timeout)
        except OSError as e:
            if isinstance(e, socket.timeout):
                self._down_until = time.monotonic() + min(1.0, self.timeout)
            self._unreachable(e)
        for r in replies:
            if r[0] in _UNREACHABLE_STATUSES:
                self._unreachable(P.error_for(r[0], r[1] if len(r) > 1 else ""))
        return replies

    def _one(self, op: int, *args, timeout: float | None = None, retry: bool = True) -> list:
        return self._requests(((op, *args),), timeout=timeout, retry=retry)[0]

    def _check(self, reply: list, *ok: int) -> list:
        if reply[0] in ok:
            return reply
        raise P.error_for(reply[0], reply[1] if len(reply) > 1 else "")

    def _soft(self, fallback):
        """Called from an `except CacheUnavailable` block: re-raises it when
        strict, else returns the fail-open result."""
        if self.strict:
            raise
        return fallback

    # -- reads ---------------------------------------------------------------
    def get(self, key) -> bytes | None:
        e = self.get_entry(key)
        return None if e is None else e[0]

    def get_entry(self, key) -> tuple[bytes, int] | None:
        """(value, flags) or None."""
        k = _key(key)
        if self.use_shm:
            st, value, flags = self.segment.get(k)
            if st == HIT:
                return value, flags
            if st == UNAVAILABLE:
                self.refresh_segment()
        return self.fetch(k)

    def fetch(self, k: bytes) -> tuple[bytes, int] | None:
        """GET over the socket (skipping shared memory)."""
        try:
            r = self._one(P.GET, k)
        except CacheUnavailable:
            if self.strict:
                raise
            return None
        return self._get_result(r)

    def _get_result(self, r: list) -> tuple[bytes, int] | None:
        """A GET reply as (value, flags), None for a miss; raises on errors."""
        if r[0] == P.OK:
            return r[1], (r[2] if len(r) > 2 else 0)
        if r[0] in (P.NOT_FOUND, P.KEY_TOO_LONG):
            return None
        self._check(r)

    def get_many(self, keys) -> dict:
        """{key: value} for the keys present."""
        return {k: v[0] for k, v in self.get_many_entries(keys).items()}

    def get_many_entries(self, keys) -> dict:
        out = {}
        missing = []
        for key in keys:
            k = _key(key)
            if self.use_shm:
                st, value, flags = self.segment.get(k)
                if st == HIT:
                    out[key] = (value, flags)
                    continue
            missing.append((key, k))
        if missing:
            entries = self.fetch_many([k for _, k in missing])
            for (key, _), e in zip(missing, entries):
                if e is not None:
                    out[key] = e
        return out

    def fetch_many(self, ks: list[bytes]) -> list:
        """GET_MANY over the socket: a list of (value, flags) or None, in order."""
        reqs = [(P.GET_MANY, ks[i:i + _MANY_CHUNK]) for i in range(0, len(ks), _MANY_CHUNK)]
        try:
            replies = self._requests(reqs)
        except CacheUnavailable:
            if self.strict:
                raise
            return [None] * len(ks)
        out = []
        for r in replies:
            self._check(r, P.OK)
            out.extend(tuple(e) if e is not None else None for e in r[1])
        return out

    def has_key(self, key) -> bool:
        k = _key(key)
        if self.use_shm and self.segment.get(k)[0] == HIT:
            return True
        try:
            r = self._one(P.HAS_KEY, k)
        except CacheUnavailable:
            return self._soft(False)
        if r[0] == P.KEY_TOO_LONG:
            return False
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK

    # -- writes --------------------------------------------------------------
    def _write(self, reply: list, *ok: int):
        if reply[0] in (P.KEY_TOO_LONG, P.VALUE_TOO_LARGE) and not self.strict:
            log.warning("nearcache: not stored: %s", reply[1] if len(reply) > 1 else P.STATUS_NAMES[reply[0]])
            return None
        return self._check(reply, *ok)

    def set(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        """Stores the value; False when it was not stored (daemon unreachable, over a limit)."""
        try:
            r = self._one(P.SET, _key(key), value, ttl_ms(ttl), flags)
        except CacheUnavailable:
            return self._soft(False)
        return self._write(r, P.OK) is not None

    def add(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        """Stores the value only if the key is absent; True when stored."""
        try:
            r = self._one(P.ADD, _key(key), value, ttl_ms(ttl), flags)
        except CacheUnavailable:
            return self._soft(False)
        r = self._write(r, P.OK, P.EXISTS)
        return r is not None and r[0] == P.OK

    def set_many(self, items, ttl: float | None = None) -> list:
        """items: {key: value} or [(key, value, flags)]; returns the keys that were not stored."""
        if isinstance(items, dict):
            items = [(k, v, 0) for k, v in items.items()]
        triples = [(k, _key(k), v, f) for k, v, f in items]
        reqs = [(P.SET_MANY, [[kb, v, f] for _, kb, v, f in triples[i:i + _MANY_CHUNK]], ttl_ms(ttl))
                for i in range(0, len(triples), _MANY_CHUNK)]
        if not reqs:
            return []
        try:
            replies = self._requests(reqs)
        except CacheUnavailable:
            return self._soft([k for k, *_ in triples])
        failed_kb = set()
        for r in replies:
            self._check(r, P.OK)
            failed_kb.update(bytes(x) for x in r[1])
        return [k for k, kb, _, _ in triples if kb in failed_kb]

    def delete(self, key) -> bool:
        try:
            r = self._one(P.DELETE, _key(key))
        except CacheUnavailable:
            return self._soft(False)
        if r[0] == P.KEY_TOO_LONG:
            return False
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK

    def delete_many(self, keys) -> int:
        ks = [_key(k) for k in keys]
        reqs = [(P.DELETE_MANY, ks[i:i + _MANY_CHUNK]) for i in range(0, len(ks), _MANY_CHUNK)]
        if not reqs:
            return 0
        try:
            replies = self._requests(reqs)
        except CacheUnavailable:
            return self._soft(0)
        return sum(self._check(r, P.OK)[1] for r in replies)

    def touch(self, key, ttl: float | None = None) -> bool:
        try:
            r = self._one(P.TOUCH, _key(key), ttl_ms(ttl))
        except CacheUnavailable:
            return self._soft(False)
        if r[0] == P.KEY_TOO_LONG:
            return False
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK

    def incr(self, key, delta: int = 1) -> int | None:
        """The new value, or None when the key is absent (or the daemon unreachable)."""
        op = P.INCR if delta >= 0 else P.DECR
        try:
            r = self._one(op, _key(key), abs(delta), retry=False)
        except CacheUnavailable:
            return self._soft(None)
        if r[0] in (P.NOT_FOUND, P.KEY_TOO_LONG):
            return None
        return self._check(r, P.OK)[1]

    def decr(self, key, delta: int = 1) -> int | None:
        return self.incr(key, -delta)

    def clear(self, prefix: bytes | str | None = None) -> int:
        """Removes every entry, or those whose key starts with `prefix`; returns how many."""
        args = () if prefix is None else (_key(prefix),)
        try:
            r = self._one(P.CLEAR, *args, timeout=max(self.timeout, 30.0))
        except CacheUnavailable:
            return self._soft(0)
        return self._check(r, P.OK)[1]

    # -- leases --------------------------------------------------------------
    def lease(self, key, lease_ttl: float = 30.0, wait: float = 30.0) -> Lease:
        """LEASE: the value if present; else the lease (compute, then set() or release());
        else, after waiting `wait` seconds for another holder, neither."""
        try:
            r = self._one(P.LEASE, _key(key), ttl_ms(lease_ttl), ttl_ms(wait) or 0, timeout=wait + self.timeout,
                          retry=False)
        except CacheUnavailable:
            if self.strict:
                raise
            return Lease(hit=False)
        return self._lease_result(r)

    def _lease_result(self, r: list) -> Lease:
        if r[0] == P.OK:
            return Lease(hit=True, value=r[1], flags=r[2] if len(r) > 2 else 0)
        if r[0] == P.LEASED:
            return Lease(hit=False, token=r[1])
        if r[0] in (P.TIMEOUT, P.KEY_TOO_LONG):
            return Lease(hit=False)
        self._check(r)

    def release(self, key, token: int) -> bool:
        try:
            r = self._one(P.RELEASE, _key(key), token)
        except CacheUnavailable:
            return self._soft(False)
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK

    # -- administration ------------------------------------------------------
    def ping(self) -> bool:
        try:
            return self._one(P.PING)[0] == P.OK
        except CacheUnavailable:
            return self._soft(False)

    def status(self) -> dict:
        """The daemon's STATUS map (raises CacheUnavailable when unreachable)."""
        return self._check(self._one(P.STATUS), P.OK)[1]

    # -- asyncio -------------------------------------------------------------
    async def _aconn(self) -> P.AsyncConnection:
        loop = asyncio.get_running_loop()
        task = self._aconns.get(loop)
        if task is not None and task.done():
            c = None if task.cancelled() or task.exception() else task.result()
            if c is None or c.closed or c.epoch != _fork_epoch:
                task = None
        if task is None:
            task = loop.create_task(self._aopen())
            self._aconns[loop] = task
        try:
            return await asyncio.shield(task)
        except BaseException:
            if self._aconns.get(loop) is task and task.done():
                del self._aconns[loop]
            raise

    async def _aopen(self) -> P.AsyncConnection:
        c = await P.AsyncConnection.open(self.path, self.timeout, self.connect_timeout)
        c.epoch = _fork_epoch
        c.used = False
        try:
            reply = await c.call(P.HELLO, P.PROTOCOL_VERSION, self.client_name)
            self._hello(c, reply)
        except BaseException:
            c.close()
            raise
        return c

    async def _arequests(self, reqs, timeout: float | None = None, retry: bool = True) -> list[list]:
        try:
            conn = await self._aconn()
            reused = conn.used
            conn.used = True
            try:
                replies = await conn.call_many(reqs, timeout=timeout)
            except (ConnectionResetError, BrokenPipeError):
                if not (retry and reused):
                    raise
                conn = await self._aconn()
                conn.used = True
                replies = await conn.call_many(reqs, timeout=timeout)
        except (OSError, asyncio.TimeoutError) as e:
            self._unreachable(e)
        for r in replies:
            if r[0] in _UNREACHABLE_STATUSES:
                self._unreachable(P.error_for(r[0], r[1] if len(r) > 1 else ""))
        return replies

    async def _aone(self, op: int, *args, timeout: float | None = None, retry: bool = True) -> list:
        return (await self._arequests([(op, *args)], timeout=timeout, retry=retry))[0]

    async def aget(self, key) -> bytes | None:
        e = await self.aget_entry(key)
        return None if e is None else e[0]

    async def aget_entry(self, key) -> tuple[bytes, int] | None:
        k = _key(key)
        if self.use_shm:
            st, value, flags = self.segment.get(k)
            if st == HIT:
                return value, flags
        return await self.afetch(k)

    async def afetch(self, k: bytes) -> tuple[bytes, int] | None:
        try:
            r = await self._aone(P.GET, k)
        except CacheUnavailable:
            if self.strict:
                raise
            return None
        return self._get_result(r)

    async def afetch_many(self, ks: list[bytes]) -> list:
        reqs = [(P.GET_MANY, ks[i:i + _MANY_CHUNK]) for i in range(0, len(ks), _MANY_CHUNK)]
        try:
            replies = await self._arequests(reqs)
        except CacheUnavailable:
            if self.strict:
                raise
            return [None] * len(ks)
        out = []
        for r in replies:
            self._check(r, P.OK)
            out.extend(tuple(e) if e is not None else None for e in r[1])
        return out

    async def aset(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        try:
            r = await self._aone(P.SET, _key(key), value, ttl_ms(ttl), flags)
        except CacheUnavailable:
            return self._soft(False)
        return self._write(r, P.OK) is not None

    async def aadd(self, key, value: bytes, ttl: float | None = None, flags: int = 0) -> bool:
        try:
            r = await self._aone(P.ADD, _key(key), value, ttl_ms(ttl), flags)
        except CacheUnavailable:
            return self._soft(False)
        r = self._write(r, P.OK, P.EXISTS)
        return r is not None and r[0] == P.OK

    async def aset_many(self, items, ttl: float | None = None) -> list:
        if isinstance(items, dict):
            items = [(k, v, 0) for k, v in items.items()]
        triples = [(k, _key(k), v, f) for k, v, f in items]
        reqs = [(P.SET_MANY, [[kb, v, f] for _, kb, v, f in triples[i:i + _MANY_CHUNK]], ttl_ms(ttl))
                for i in range(0, len(triples), _MANY_CHUNK)]
        if not reqs:
            return []
        try:
            replies = await self._arequests(reqs)
        except CacheUnavailable:
            return self._soft([k for k, *_ in triples])
        failed_kb = set()
        for r in replies:
            self._check(r, P.OK)
            failed_kb.update(bytes(x) for x in r[1])
        return [k for k, kb, _, _ in triples if kb in failed_kb]

    async def adelete(self, key) -> bool:
        try:
            r = await self._aone(P.DELETE, _key(key))
        except CacheUnavailable:
            return self._soft(False)
        if r[0] == P.KEY_TOO_LONG:
            return False
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK

    async def adelete_many(self, keys) -> int:
        ks = [_key(k) for k in keys]
        reqs = [(P.DELETE_MANY, ks[i:i + _MANY_CHUNK]) for i in range(0, len(ks), _MANY_CHUNK)]
        if not reqs:
            return 0
        try:
            replies = await self._arequests(reqs)
        except CacheUnavailable:
            return self._soft(0)
        return sum(self._check(r, P.OK)[1] for r in replies)

    async def atouch(self, key, ttl: float | None = None) -> bool:
        try:
            r = await self._aone(P.TOUCH, _key(key), ttl_ms(ttl))
        except CacheUnavailable:
            return self._soft(False)
        if r[0] == P.KEY_TOO_LONG:
            return False
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK

    async def aincr(self, key, delta: int = 1) -> int | None:
        op = P.INCR if delta >= 0 else P.DECR
        try:
            r = await self._aone(op, _key(key), abs(delta), retry=False)
        except CacheUnavailable:
            return self._soft(None)
        if r[0] in (P.NOT_FOUND, P.KEY_TOO_LONG):
            return None
        return self._check(r, P.OK)[1]

    async def ahas_key(self, key) -> bool:
        k = _key(key)
        if self.use_shm and self.segment.get(k)[0] == HIT:
            return True
        try:
            r = await self._aone(P.HAS_KEY, k)
        except CacheUnavailable:
            return self._soft(False)
        if r[0] == P.KEY_TOO_LONG:
            return False
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK

    async def aclear(self, prefix: bytes | str | None = None) -> int:
        args = () if prefix is None else (_key(prefix),)
        try:
            r = await self._aone(P.CLEAR, *args, timeout=max(self.timeout, 30.0))
        except CacheUnavailable:
            return self._soft(0)
        return self._check(r, P.OK)[1]

    async def alease(self, key, lease_ttl: float = 30.0, wait: float = 30.0) -> Lease:
        try:
            r = await self._aone(P.LEASE, _key(key), ttl_ms(lease_ttl), ttl_ms(wait) or 0,
                                 timeout=wait + self.timeout, retry=False)
        except CacheUnavailable:
            if self.strict:
                raise
            return Lease(hit=False)
        return self._lease_result(r)

    async def arelease(self, key, token: int) -> bool:
        try:
            r = await self._aone(P.RELEASE, _key(key), token)
        except CacheUnavailable:
            return self._soft(False)
        return self._check(r, P.OK, P.NOT_FOUND)[0] == P.OK
