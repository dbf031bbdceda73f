"""`Lock`: redis-py's `Lock` object, on the daemon's locks (ops LOCK, UNLOCK,
LOCK_EXTEND, LOCK_QUERY in doc/protocol.md).

Locks have their own key space (never the cache's values or leases), a
random token per acquisition, and compare-the-token release and extend, so
a holder whose lock expired cannot release or extend another's. They are
exclusive across the host's processes (the daemon decides) and, with a
Redis tier, across hosts (Redis decides: SET NX PX, scripts that compare the
token). When Redis does not decide (down, slow past redis_wait_ms) the call
raises CacheUnavailable: a lock is never granted by one host alone, and
never fails open.

`timeout=None` is bounded: such a lock expires after the daemon's
`max_lock_ms` (default one hour), so that a holder that died frees it.
"""
from __future__ import annotations

import secrets
import threading
import time
from types import SimpleNamespace

from nearcache import core
from nearcache.protocol import CacheUnavailable, ProtocolError


class LockError(Exception):
    """As redis-py's redis.exceptions.LockError: the lock cannot do what was asked."""


class LockNotOwnedError(LockError):
    """As redis-py's: the lock is no longer held by this token (it expired, another holds it)."""


class Lock:
    """redis-py's `Lock` interface: acquire, release, locked, owned, extend, reacquire, `with`."""

    def __init__(self, client, name: bytes, timeout=None, sleep: float = 0.1, blocking: bool = True,
                 blocking_timeout=None, thread_local: bool = True):
        self.client = client
        self.name = name
        self.timeout = timeout
        self.sleep = sleep
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.thread_local = bool(thread_local)
        self.local = threading.local() if self.thread_local else SimpleNamespace()
        self.local.token = None
        if self.timeout is not None and self.sleep > self.timeout:
            raise LockError("'sleep' must be less than 'timeout'")

    def _token(self):
        return getattr(self.local, "token", None)

    def __enter__(self):
        if self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self, sleep=None, blocking=None, blocking_timeout=None, token=None) -> bool:
        sleep = self.sleep if sleep is None else sleep
        blocking = self.blocking if blocking is None else blocking
        blocking_timeout = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        token = secrets.token_hex(16).encode() if token is None else (
            token.encode() if isinstance(token, str) else bytes(token))
        stop_at = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        while True:
            if self._do_acquire(token):
                self.local.token = token
                return True
            if not blocking or (stop_at is not None and time.monotonic() > stop_at):
                return False
            time.sleep(sleep)

    def _do_acquire(self, token: bytes) -> bool:
        try:
            return self.client._run(core.lock(self.name, token, self.timeout))
        except (CacheUnavailable, ProtocolError):
            # Undecided (Redis did not answer in time): if it was granted after
            # all, give it back, so that nobody waits for a lock nobody has.
            try:
                self.client._run(core.unlock(self.name, token))
            except (CacheUnavailable, ProtocolError):
                pass
            raise

    def locked(self) -> bool:
        """Whether anyone holds the lock."""
        return self.client._run(core.lock_query(self.name)) is not None

    def owned(self) -> bool:
        """Whether this token (this thread's, with thread_local) holds it."""
        token = self._token()
        holder = self.client._run(core.lock_query(self.name))
        return token is not None and holder is not None and holder[0] == token

    def release(self) -> None:
        token = self._token()
        if token is None:
            raise LockError("Cannot release an unlocked lock")
        self.local.token = None
        if not self.client._run(core.unlock(self.name, token)):
            raise LockNotOwnedError("Cannot release a lock that's no longer owned")

    def extend(self, additional_time, replace_ttl: bool = False) -> bool:
        """Adds `additional_time` seconds to the TTL left (or sets it, replace_ttl)."""
        token = self._token()
        if token is None:
            raise LockError("Cannot extend an unlocked lock")
        if self.timeout is None:
            raise LockError("Cannot extend a lock with no timeout")
        return self._extend(token, additional_time, replace_ttl, "extend")

    def reacquire(self) -> bool:
        """Resets the TTL to `timeout`."""
        token = self._token()
        if token is None:
            raise LockError("Cannot reacquire an unlocked lock")
        if self.timeout is None:
            raise LockError("Cannot reacquire a lock with no timeout")
        return self._extend(token, self.timeout, True, "reacquire")

    def _extend(self, token: bytes, seconds, replace: bool, what: str) -> bool:
        ms = max(1, int(seconds * 1000))
        if not self.client._run(core.lock_extend(self.name, token, ms, replace)):
            raise LockNotOwnedError(f"Cannot {what} a lock that's no longer owned")
        return True


class AsyncLock:
    """The same lock for coroutines (the interface of redis.asyncio's Lock: awaitable
    acquire, release, locked, owned, extend, reacquire, `async with`). Each call runs
    the blocking Lock in a worker thread, as Django's default async cache methods run
    their sync ones, so that a waiting acquire never stalls the event loop. The token
    lives in the object (a coroutine has no thread of its own: thread_local does not
    apply)."""

    def __init__(self, lock: Lock):
        self._lock = lock

    @property
    def name(self) -> bytes:
        return self._lock.name

    async def _call(self, fn, *args, **kwargs):
        import asyncio
        import functools

        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def __aenter__(self):
        if await self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    async def __aexit__(self, *exc) -> None:
        await self.release()

    async def acquire(self, sleep=None, blocking=None, blocking_timeout=None, token=None) -> bool:
        return await self._call(self._lock.acquire, sleep, blocking, blocking_timeout, token)

    async def locked(self) -> bool:
        return await self._call(self._lock.locked)

    async def owned(self) -> bool:
        return await self._call(self._lock.owned)

    async def release(self) -> None:
        await self._call(self._lock.release)

    async def extend(self, additional_time, replace_ttl: bool = False) -> bool:
        return await self._call(self._lock.extend, additional_time, replace_ttl)

    async def reacquire(self) -> bool:
        return await self._call(self._lock.reacquire)
