"""django-redis's methods beyond Django's cache API, for `NearCache`.

`RedisAPI` is a mixin of the Django backend (nearcache.django.NearCache): the
names and meanings of django-redis's `DefaultClient` methods (ttl, pttl,
expire, pexpire, expire_at, pexpire_at, persist, incr_version), sync and
async (`attl`, ...). client-py/README.md lists them with what differs.

TTLs are asked of the daemon (op TTL): with a Redis tier that is Redis's
PTTL, not the local copy's (which redis_local_ttl_max_ms bounds).
"""
from __future__ import annotations

import datetime
import math
import re
import time

from nearcache.core import SCAN_COUNT, key_bytes


def _ms(timeout, unit_ms: int) -> int | None:
    """A timeout in `unit_ms` units (int, float or timedelta) as whole milliseconds."""
    if isinstance(timeout, datetime.timedelta):
        return math.ceil(timeout.total_seconds() * 1000)
    if timeout is None:
        return None
    return math.ceil(timeout * unit_ms)


def _ms_until(when, unit_ms: int) -> int:
    """Milliseconds from now until `when` (a datetime, or a Unix time in `unit_ms` units)."""
    if isinstance(when, datetime.datetime):
        at_ms = when.timestamp() * 1000
    else:
        at_ms = when * unit_ms
    return max(0, math.ceil(at_ms - time.time() * 1000))  # 0: past, the key is deleted


def _seconds(pttl: int):
    """django-redis's ttl(): 0 for a missing key, None for no expiry, else whole seconds (rounded as Redis's TTL)."""
    if pttl == -2:
        return 0
    if pttl == -1:
        return None
    return (pttl + 500) // 1000


def _millis(pttl: int):
    if pttl == -2:
        return 0
    return None if pttl == -1 else pttl


def glob_escape(s: str) -> str:
    """django-redis's: the glob bytes of a prefix or version match themselves."""
    return re.sub(r"([*?[])", r"[\1]", s)


class RedisAPI:
    """Mixin: needs `_key(key, version)`, `_client` (nearcache.Client), `key_func`,
    `key_prefix` and `version` (BaseCache's)."""

    # -- lock: redis-py's Lock on the daemon's locks (nearcache.lock) -------------
    def lock(self, key, version=None, timeout=None, sleep=0.1, blocking=True, blocking_timeout=None,
             thread_local=True):
        return self._client.lock(self._key(key, version), timeout, sleep, blocking, blocking_timeout, thread_local)

    def alock(self, key, version=None, timeout=None, sleep=0.1, blocking=True, blocking_timeout=None):
        """lock() for coroutines: `async with cache.alock("name"):` (redis.asyncio's Lock interface)."""
        return self._client.alock(self._key(key, version), timeout, sleep, blocking, blocking_timeout)

    # -- patterns: keys, iter_keys, delete_pattern -------------------------------
    # As django-redis: KEY_FUNCTION(pattern, escaped KEY_PREFIX, escaped VERSION),
    # and keys given back by REVERSE_KEY_FUNCTION (default: without
    # "prefix:version:"). keys/iter_keys list this host's table (SCAN);
    # delete_pattern also deletes from Redis with a tier.
    def make_pattern(self, pattern, version=None, prefix=None) -> bytes:
        prefix = self.key_prefix if prefix is None else prefix
        version = self.version if version is None else version
        return key_bytes(self.key_func(pattern, glob_escape(prefix), glob_escape(str(version))))

    _reverse_key_func = None  # REVERSE_KEY_FUNCTION (NearCache sets it)

    def reverse_key(self, kb: bytes) -> str:
        k = kb.decode("utf-8", "surrogatepass")
        return self._reverse_key_func(k) if self._reverse_key_func else k.split(":", 2)[2]

    def iter_keys(self, search, itersize=None, version=None):
        for kb in self._client.iter_keys(self.make_pattern(search, version), itersize or SCAN_COUNT):
            yield self.reverse_key(kb)

    def keys(self, search, version=None) -> list:
        return list(self.iter_keys(search, version=version))

    def delete_pattern(self, pattern, version=None, prefix=None, itersize=None) -> int:
        """The number of keys this host deleted (itersize: accepted, unused: the daemon slices)."""
        return self._client.delete_pattern(self.make_pattern(pattern, version, prefix))

    async def aiter_keys(self, search, itersize=None, version=None):
        async for kb in self._client.aiter_keys(self.make_pattern(search, version), itersize or SCAN_COUNT):
            yield self.reverse_key(kb)

    async def akeys(self, search, version=None) -> list:
        return [k async for k in self.aiter_keys(search, version=version)]

    async def adelete_pattern(self, pattern, version=None, prefix=None, itersize=None) -> int:
        return await self._client.adelete_pattern(self.make_pattern(pattern, version, prefix))

    # -- TTL -------------------------------------------------------------------
    def ttl(self, key, version=None):
        return _seconds(self._client.pttl(self._key(key, version)))

    def pttl(self, key, version=None):
        return _millis(self._client.pttl(self._key(key, version)))

    def expire(self, key, timeout, version=None) -> bool:
        return self._client.expire_ms(self._key(key, version), _ms(timeout, 1000))

    def pexpire(self, key, timeout, version=None) -> bool:
        return self._client.expire_ms(self._key(key, version), _ms(timeout, 1))

    def expire_at(self, key, when, version=None) -> bool:
        return self._client.expire_ms(self._key(key, version), _ms_until(when, 1000))

    def pexpire_at(self, key, when, version=None) -> bool:
        return self._client.expire_ms(self._key(key, version), _ms_until(when, 1))

    def persist(self, key, version=None) -> bool:
        return self._client.expire_ms(self._key(key, version), None)

    async def attl(self, key, version=None):
        return _seconds(await self._client.apttl(self._key(key, version)))

    async def apttl(self, key, version=None):
        return _millis(await self._client.apttl(self._key(key, version)))

    async def aexpire(self, key, timeout, version=None) -> bool:
        return await self._client.aexpire_ms(self._key(key, version), _ms(timeout, 1000))

    async def apexpire(self, key, timeout, version=None) -> bool:
        return await self._client.aexpire_ms(self._key(key, version), _ms(timeout, 1))

    async def aexpire_at(self, key, when, version=None) -> bool:
        return await self._client.aexpire_ms(self._key(key, version), _ms_until(when, 1000))

    async def apexpire_at(self, key, when, version=None) -> bool:
        return await self._client.aexpire_ms(self._key(key, version), _ms_until(when, 1))

    async def apersist(self, key, version=None) -> bool:
        return await self._client.aexpire_ms(self._key(key, version), None)

    # -- incr_version: the value moves with its flags and its remaining TTL ----
    def _moved(self, key, version, delta, entry):
        if entry is None or entry[2] == -2:
            raise ValueError("Key '%s' not found" % key)
        data, flags, pttl = entry
        return data, flags, None if pttl == -1 else pttl / 1000, version + delta

    def incr_version(self, key, delta=1, version=None):
        version = self.version if version is None else version
        kb = self._key(key, version)
        data, flags, ttl, new = self._moved(key, version, delta, self._client.entry_ttl(kb))
        self._client.set(self._key(key, new), data, ttl, flags)
        self._client.delete(kb)
        return new

    async def aincr_version(self, key, delta=1, version=None):
        version = self.version if version is None else version
        kb = self._key(key, version)
        data, flags, ttl, new = self._moved(key, version, delta, await self._client.aentry_ttl(kb))
        await self._client.aset(self._key(key, new), data, ttl, flags)
        await self._client.adelete(kb)
        return new
