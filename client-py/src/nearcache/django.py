"""`NearCache`: the Django cache backend for nearcached.

    CACHES = {"default": {"BACKEND": "nearcache.django.NearCache", "LOCATION": "", "OPTIONS": {...}}}

The hit path (`get`, `get_many`) is `nearcache._native.CacheCore`: Django's
default key building and key validation, the shared-memory lookup and the
value decoding run natively in one call. Misses, writes, atomic operations and
leases go to the daemon through a `nearcache.Client` shared by every NearCache
of the process with the same LOCATION and OPTIONS. A custom KEY_FUNCTION (also
one assigned at run time) or a subclass that overrides make_key/validate_key
makes keys in Python, as Django does.

Fail-open (STRICT off, the default) is the Client's policy, written once in
nearcache.core: no exception but Django's own (ValueError for incr of an
absent key, TypeError/OverflowError for incr of a non-integer or past 64
bits) reaches the application. A value this process cannot decode is a
miss, counted and logged once per key and WARN_INTERVAL, STRICT or not; so is
a value the daemon marks foreign (flag 0x80: read from Redis, not written by
nearcache), which get_or_set then replaces with what it computes.

OPTIONS are documented in client-py/README.md and parsed by nearcache.settings:
a CACHES entry with an error there (an unknown option, a Redis URL as
LOCATION, ...) makes a MisconfiguredNearCache, whose every call raises
ImproperlyConfigured; the system check `nearcache.settings.check_caches`
(tag `caches`, registered here and by the `nearcache` app) says it at start.
"""
from __future__ import annotations

import contextvars
import logging
import threading
import time

import msgpack
from django.core import checks
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func
from django.core.exceptions import ImproperlyConfigured

from nearcache import _native, settings
from nearcache.client import DEFINITE_MISSES, HIT, UNAVAILABLE, Client
from nearcache.compression import decompress
from nearcache.core import _too_large as too_large, key_bytes, set_value_limit
from nearcache.protocol import NOT_INTEGER, OUT_OF_RANGE, ProtocolError
from nearcache.redis_api import RedisAPI
from nearcache.serializer import EXT_CODES, FLAG_FOREIGN, Serializer

log = logging.getLogger("nearcache.django")

_clients: dict[tuple, Client] = {}
_clients_lock = threading.Lock()
_MISS = object()


class ForeignValue(ValueError):
    """A value nearcache did not write (flag FLAG_FOREIGN): never decoded, a miss."""
# Keys whose value this thread or task is computing in get_or_set: a nested
# get_or_set of one of them computes directly instead of waiting for itself.
_computing: contextvars.ContextVar[frozenset] = contextvars.ContextVar("nearcache_computing", default=frozenset())


def shared_client(path: str, **options) -> Client:
    """The process's Client for these settings (one mapping, one connection pool)."""
    key = (path, tuple(sorted(options.items())))
    c = _clients.get(key)
    if c is None:
        with _clients_lock:
            c = _clients.get(key)
            if c is None:
                c = _clients[key] = Client(path, **options)
    return c


def _raise_foreign(data):
    raise ValueError("nearcache: value was written by another SERIALIZER (flag 0x01); "
                     "configure the same SERIALIZER to read it")


class NearCache(_native.CacheCore, RedisAPI, BaseCache):
    """Django cache backend served by nearcached (see the module docstring)."""

    def __init__(self, location, params):
        BaseCache.__init__(self, params)
        cfg = settings.parse(location, params)
        for w in cfg.warnings:
            log.warning("nearcache: %s", w)
        if cfg.errors:  # raised at first use; the system check says it at start
            self._nc_error = cfg.message()
            self.__class__ = MisconfiguredNearCache
            return
        o = cfg.options
        self._use_shm = o["USE_SHM"]
        self._warn_interval = o["WARN_INTERVAL"]
        self._client = shared_client(cfg.location, **cfg.client_kwargs())
        self._local_misses = self._client.local_misses
        self._serializer = o["SERIALIZER"]
        self._clear_prefix_only = o["CLEAR_PREFIX_ONLY"]
        self._lease_ttl = o["LEASE_TIMEOUT"]
        self._lease_wait = o["LEASE_WAIT"]
        self._reverse_key_func = o["REVERSE_KEY_FUNCTION"]
        self._bad_values: dict[bytes, float] = {}
        cls = type(self)
        native_keys = (cls.make_key is NearCache.make_key and cls.validate_key is NearCache.validate_key
                       and cls.make_and_validate_key is NearCache.make_and_validate_key)
        comp = o["COMPRESSOR"]  # nearcache.compression: values marked in their flags, read whatever it is
        self._nc_configure(self._client.segment if self._use_shm else None, native_keys, default_key_func,
                           self._serializer.fallback, self._serializer.loads or _raise_foreign, self._local_misses,
                           comp.decompress if comp else decompress, self._client._pending_writes)
        if type(self._serializer) is not Serializer:
            self._encode = self._serializer.dumps
        if comp:
            self._encode = comp.wrap(self._encode)

    # -- keys and values -----------------------------------------------------
    def _key(self, key, version=None) -> bytes:
        try:
            kb = self._nc_key(key, version)
        except UnicodeEncodeError:  # a lone surrogate: a valid Django key
            kb = None
        if kb is None:
            k = self.make_and_validate_key(key, version=version)
            kb = key_bytes(k if isinstance(k, str) else str(k))
        return kb

    def _encode(self, value) -> tuple[bytes, int]:
        try:
            return self._nc_pack(value), 0
        except ValueError:
            # Nested beyond msgpack's depth (a recursive structure): LocMem
            # pickles it, and so does this backend when pickle is on.
            fallback = self._serializer.fallback
            if fallback is None:
                raise
            return msgpack.packb(msgpack.ExtType(EXT_CODES["pickle"], fallback(value))), 0

    def _ttl(self, timeout):
        """Django timeout (seconds; None = forever; 0 or less = expire at once) for the Client."""
        if timeout is DEFAULT_TIMEOUT:
            return self.default_timeout
        return timeout

    def _decode(self, kb: bytes, data: bytes, flags: int, default=None):
        """A stored value; `default` (a miss) when this process cannot decode it."""
        try:
            if flags & FLAG_FOREIGN:
                raise ForeignValue(f"not a value nearcache wrote ({len(data)} bytes in Redis, "
                                   f"not msgpack and no envelope)")
            return self._nc_decode(data, flags)
        except Exception as e:
            self._undecodable(kb, e)
            return default

    def _undecodable(self, kb: bytes, e: Exception) -> None:
        self._client.counters["undecodable"] += 1
        now = time.monotonic()
        last = self._bad_values.get(kb)
        if last is None or now - last >= self._warn_interval:
            if len(self._bad_values) > 10000:
                self._bad_values.clear()
            self._bad_values[kb] = now
            log.warning("nearcache: the value of %r cannot be decoded (%s: %s); served as a miss",
                        kb[:200], type(e).__name__, e)

    def _probe(self, kb: bytes):
        found, e = self._client.pending(kb)
        if found:
            if e is None:
                return _native.MISS, None
            v = self._decode(kb, e[0], e[1], _MISS)
            return (_native.MISS, None) if v is _MISS else (HIT, v)
        if self._use_shm:
            try:
                return self._nc_probe(kb)
            except Exception as e:  # a value in the table that does not decode
                self._undecodable(kb, e)
                return _native.MISS, None
        return UNAVAILABLE, None

    # -- hooks of the native get/get_many --------------------------------------
    # get and get_many are CacheCore's: no Python frame on a hit. Their failures
    # (a key for Django's own checks, a value that does not decode) go to
    # _nc_get_slow / _nc_get_many_slow, which say which.
    def _nc_reap(self) -> bool:
        """Called by the native get/get_many when this process has unacknowledged writes:
        takes the replies already received; True when none is left pending."""
        ch = self._client._wchan
        return ch is None or ch.reap()

    def _nc_get_pending(self, key, default, version):
        """The native get's answer while this process's writes are unacknowledged: they come first."""
        kb = self._key(key, version)   # built (and validated) once
        found, e = self._client.pending(kb)
        if found and e is None:          # a pending delete
            return default
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return self._nc_get_miss(kb, default, st)

    def _nc_get_miss(self, kb: bytes, default, status: int):
        if status in DEFINITE_MISSES and self._local_misses:  # no write of this process pending: _probe
            self._client.segment.local_miss()
            return default
        e = self._client.fetch(kb, refresh=status == UNAVAILABLE and self._use_shm)
        return default if e is None else self._decode(kb, e[0], e[1], default)

    def _nc_get_slow(self, key, default, version):
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return self._nc_get_miss(kb, default, st)

    def _nc_get_many_miss(self, pending: list, result: dict) -> None:
        """The native get_many's hook: pending holds (key, kb, status) of its misses."""
        # Definite misses never get here with LOCAL_MISSES (the native get_many skips them).
        refresh = self._use_shm and any(st == UNAVAILABLE for _, _, st in pending)
        pairs = [(key, kb) for key, kb, _ in pending]
        self._decode_many(pairs, self._client.fetch_many([kb for _, kb in pairs], refresh), result)

    def _probe_many(self, keys, version) -> tuple[dict, list, bool]:
        """Hits from shared memory; the (key, kb) pairs left for the daemon; refresh the mapping?"""
        result, pending, refresh = {}, [], False
        for key in keys:
            kb = self._key(key, version)
            st, value = self._probe(kb)
            if st == HIT:
                result[key] = value
            elif st in DEFINITE_MISSES and self._local_misses:
                self._client.segment.local_miss()
            else:
                pending.append((key, kb))
                refresh |= st == UNAVAILABLE
        return result, pending, refresh and self._use_shm

    def _decode_many(self, pending: list, entries: list, result: dict) -> dict:
        for (key, kb), e in zip(pending, entries):
            if e is not None:
                v = self._decode(kb, e[0], e[1], _MISS)
                if v is not _MISS:
                    result[key] = v
        return result

    def _nc_get_many_slow(self, keys, version):
        result, pending, refresh = self._probe_many(keys, version)
        if pending:
            self._decode_many(pending, self._client.fetch_many([kb for _, kb in pending], refresh), result)
        return result

    # -- BaseCache -----------------------------------------------------------
    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False, xx=False):
        """Django's set; as django-redis's, nx stores only an absent key (add), xx only
        a present one, and the result says whether it stored (a set without nx/xx
        and without SYNC_WRITES: that it was sent)."""
        kb = self._key(key, version)
        data, flags = self._encode(value)
        ttl = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        return self._store(nx, xx)(kb, data, ttl, flags)

    def _store(self, nx, xx, prefix=""):
        if nx and xx:
            raise ValueError("set: nx and xx cannot both be set")
        c = self._client
        return getattr(c, prefix + ("add" if nx else "replace" if xx else "set"))

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        kb = self._key(key, version)
        data, flags = self._encode(value)
        return self._client.add(kb, data, self._ttl(timeout), flags)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._client.touch(self._key(key, version), self._ttl(timeout))

    def delete(self, key, version=None):
        return self._client.delete(self._key(key, version))

    def has_key(self, key, version=None):
        return self._client.has_key(self._key(key, version))

    def _items(self, data, version):
        items, keys = [], {}
        vl = set_value_limit(self._client.limits) or float("inf")
        for key, value in data.items():
            v, flags = self._encode(value)
            kb = self._key(key, version)
            keys[kb] = key
            items.append((kb, v, flags))
            if len(v) > vl:  # set_many returns it as not stored; the warning names it, as set's does
                e = too_large(kb, v, self._client.limits, set_op=True)
                self._client.policy.warn(f"status:{e.status}", "nearcache: %s", e)
        return items, keys

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        items, keys = self._items(data, version)
        return [keys[kb] for kb in self._client.set_many(items, self._ttl(timeout))]

    def delete_many(self, keys, version=None):
        self._client.delete_many([self._key(k, version) for k in keys])

    @staticmethod
    def _incr_error(e: ProtocolError) -> Exception:
        """The exception Django's API raises for an INCR/DECR error reply."""
        if e.status == NOT_INTEGER:
            return TypeError(e.message)
        if e.status == OUT_OF_RANGE:
            return OverflowError(e.message)
        return e

    @staticmethod
    def _incr_value(key, value):
        """An absent key is ValueError; fail-open, an unreachable daemon is an
        empty cache, so ValueError too (the same in sync and async code)."""
        if value is None:
            raise ValueError("Key '%s' not found" % key)
        return value

    def incr(self, key, delta=1, version=None):
        kb = self._key(key, version)
        try:
            value = self._client.incr(kb, delta)
        except ProtocolError as e:
            raise self._incr_error(e) from None
        return self._incr_value(key, value)

    def decr(self, key, delta=1, version=None):
        return self.incr(key, -delta, version)

    def clear(self):
        """Clears the whole table, or with CLEAR_PREFIX_ONLY the keys of this KEY_PREFIX."""
        self._client.clear(f"{self.key_prefix}:" if self._clear_prefix_only else None)

    def close(self, **kwargs):
        # Called after every request: connections are kept (a pool per process).
        pass

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """Django's get_or_set, computed once across workers (a lease)."""
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return self._compute_once(kb, default, self._ttl(timeout), store_none=True, status=st)[0]

    # -- compute once: the lease protocol, its sync and async transports -------
    def _lease_outcome(self, kb, lease):
        """(value, True) when the lease brought a value this process can decode."""
        if lease.hit:
            v = self._decode(kb, lease.value, lease.flags, _MISS)
            if v is not _MISS:
                return v, True
        return None, False

    @staticmethod
    def _replaces(lease) -> bool:
        """Whether the computed value replaces what the lease brought: a foreign
        value, which no reader can use (another SERIALIZER's value is kept: its
        processes read it)."""
        return lease.hit and bool(lease.flags & FLAG_FOREIGN)

    def _compute_once(self, kb: bytes, default, ttl, store_none: bool, status=None):
        """(value, computed_here). The lease holder computes; others get its value."""
        held = _computing.get()
        if kb in held:  # re-entered for a key this thread or task is computing
            return self._compute(kb, default, ttl, store_none, None), True
        lease = self._client.lease(kb, self._lease_ttl, self._lease_wait, refresh=status == UNAVAILABLE)
        value, found = self._lease_outcome(kb, lease)
        if found:
            return value, False
        mark = _computing.set(held | {kb})
        try:
            return self._compute(kb, default, ttl, store_none, lease.token, self._replaces(lease)), True
        finally:
            _computing.reset(mark)

    def _compute(self, kb, default, ttl, store_none, token, replace=False):
        try:
            value = default() if callable(default) else default
            stored = False
            if value is not None or store_none:
                data, flags = self._encode(value)
                # A lease holder's SET ends the lease; without one, ADD keeps a
                # value another worker stored meanwhile (unless `replace`).
                write = self._client.set if token is not None or replace else self._client.add
                stored = write(kb, data, ttl, flags)
        except BaseException:
            if token is not None:
                self._client.release(kb, token)
            raise
        if token is not None and not stored:
            self._client.release(kb, token)
        return value

    # -- async: hits run here, in the event loop's thread, with no executor ---
    async def aget(self, key, default=None, version=None):
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        if st in DEFINITE_MISSES and self._local_misses:
            self._client.segment.local_miss()
            return default
        e = await self._client.afetch(kb, refresh=st == UNAVAILABLE and self._use_shm)
        return default if e is None else self._decode(kb, e[0], e[1], default)

    async def aget_many(self, keys, version=None):
        result, pending, refresh = self._probe_many(keys, version)
        if pending:
            self._decode_many(pending, await self._client.afetch_many([kb for _, kb in pending], refresh), result)
        return result

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False, xx=False):
        kb = self._key(key, version)
        data, flags = self._encode(value)
        return await self._store(nx, xx, "a")(kb, data, self._ttl(timeout), flags)

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        kb = self._key(key, version)
        data, flags = self._encode(value)
        return await self._client.aadd(kb, data, self._ttl(timeout), flags)

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return await self._client.atouch(self._key(key, version), self._ttl(timeout))

    async def adelete(self, key, version=None):
        return await self._client.adelete(self._key(key, version))

    async def ahas_key(self, key, version=None):
        return await self._client.ahas_key(self._key(key, version))

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        items, keys = self._items(data, version)
        return [keys[kb] for kb in await self._client.aset_many(items, self._ttl(timeout))]

    async def adelete_many(self, keys, version=None):
        await self._client.adelete_many([self._key(k, version) for k in keys])

    async def aincr(self, key, delta=1, version=None):
        kb = self._key(key, version)
        try:
            value = await self._client.aincr(kb, delta)
        except ProtocolError as e:
            raise self._incr_error(e) from None
        return self._incr_value(key, value)

    async def adecr(self, key, delta=1, version=None):
        return await self.aincr(key, -delta, version)

    async def aclear(self):
        await self._client.aclear(f"{self.key_prefix}:" if self._clear_prefix_only else None)

    async def aclose(self, **kwargs):
        pass

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return (await self._acompute_once(kb, default, self._ttl(timeout), store_none=True, status=st))[0]

    async def _acompute_once(self, kb: bytes, default, ttl, store_none: bool, status=None):
        held = _computing.get()
        if kb in held:
            return await self._acompute(kb, default, ttl, store_none, None), True
        lease = await self._client.alease(kb, self._lease_ttl, self._lease_wait, refresh=status == UNAVAILABLE)
        value, found = self._lease_outcome(kb, lease)
        if found:
            return value, False
        mark = _computing.set(held | {kb})
        try:
            return await self._acompute(kb, default, ttl, store_none, lease.token, self._replaces(lease)), True
        finally:
            _computing.reset(mark)

    async def _acompute(self, kb, default, ttl, store_none, token, replace=False):
        try:
            value = default() if callable(default) else default
            stored = False
            if value is not None or store_none:
                data, flags = self._encode(value)
                write = self._client.aset if token is not None or replace else self._client.aadd
                stored = await write(kb, data, ttl, flags)
        except BaseException:
            if token is not None:
                await self._client.arelease(kb, token)
            raise
        if token is not None and not stored:
            await self._client.arelease(kb, token)
        return value


class MisconfiguredNearCache(NearCache):
    """A NearCache whose CACHES entry has errors: every cache call raises
    ImproperlyConfigured with them (close() stays a no-op: Django calls it
    after every request on every cache it made)."""

    _allowed = frozenset(("close", "aclose"))

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in MisconfiguredNearCache._allowed:
            attr = getattr(type(self), name, None)
            if callable(attr):
                raise ImproperlyConfigured(object.__getattribute__(self, "_nc_error"))
        return object.__getattribute__(self, name)


checks.register(settings.check_caches, checks.Tags.caches)
