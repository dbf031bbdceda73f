"""`NearCache`: the Django cache backend for nearcached.

    CACHES = {"default": {"BACKEND": "nearcache.django.NearCache", "LOCATION": "", "OPTIONS": {...}}}

The hit path (`get`, `get_many`) is `nearcache._native.CacheCore`: Django's
default key building and key validation, the shared-memory lookup and the
value decoding run natively in one call. Misses, writes, atomic operations and
leases go to the daemon through a `nearcache.Client` shared by every NearCache
of the process with the same LOCATION and OPTIONS. A custom KEY_FUNCTION (also
one assigned at run time) or a subclass that overrides make_key/validate_key
makes keys in Python, as Django does.

OPTIONS are documented in client-py/README.md.
"""
from __future__ import annotations

import pickle
import threading

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func

from nearcache import _native
from nearcache.client import HIT, UNAVAILABLE, Client
from nearcache.protocol import NOT_INTEGER, OUT_OF_RANGE, ProtocolError
from nearcache.serializer import Serializer, make_serializer

_clients: dict[tuple, Client] = {}
_clients_lock = threading.Lock()


def shared_client(path: str, **options) -> Client:
    """The process's Client for these settings (one mapping, connections per thread)."""
    key = (path, tuple(sorted(options.items())))
    c = _clients.get(key)
    if c is None:
        with _clients_lock:
            c = _clients.get(key)
            if c is None:
                c = _clients[key] = Client(path, **options)
    return c


def _bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _raise_foreign(data):
    raise ValueError("nearcache: value was written by another SERIALIZER (flag 0x01); "
                     "configure the same SERIALIZER to read it")


class NearCache(_native.CacheCore, BaseCache):
    """Django cache backend served by nearcached (see the module docstring)."""

    def __init__(self, location, params):
        BaseCache.__init__(self, params)
        opts = {str(k).upper(): v for k, v in (params.get("OPTIONS") or {}).items()}
        timeout = float(opts.get("SOCKET_TIMEOUT", 1.0))
        strict = opts.get("STRICT")
        if strict is None:
            strict = not _bool(opts.get("IGNORE_EXCEPTIONS", True))
        self._use_shm = _bool(opts.get("USE_SHM", True))
        self._client = shared_client(
            location or "",
            timeout=timeout,
            connect_timeout=float(opts.get("SOCKET_CONNECT_TIMEOUT", timeout)),
            strict=_bool(strict),
            warn_interval=float(opts.get("WARN_INTERVAL", 60.0)),
            use_shm=self._use_shm,
            client_name=str(opts.get("CLIENT_NAME", "django")),
            busy_poll=float(opts.get("BUSY_POLL_US", 50)) / 1e6,
        )
        self._serializer = make_serializer(opts.get("SERIALIZER"), _bool(opts.get("PICKLE", True)),
                                           int(opts.get("PICKLE_PROTOCOL", pickle.HIGHEST_PROTOCOL)))
        self._clear_prefix_only = _bool(opts.get("CLEAR_PREFIX_ONLY", False))
        self._lease_ttl = float(opts.get("LEASE_TIMEOUT", 30.0))
        self._lease_wait = float(opts.get("LEASE_WAIT", 30.0))
        cls = type(self)
        native_keys = (cls.make_key is NearCache.make_key and cls.validate_key is NearCache.validate_key
                       and cls.make_and_validate_key is NearCache.make_and_validate_key)
        self._nc_configure(self._client.segment if self._use_shm else None, native_keys, default_key_func,
                           self._serializer.fallback, self._serializer.loads or _raise_foreign)
        if type(self._serializer) is not Serializer:
            self._encode = self._serializer.dumps

    # -- keys and values -----------------------------------------------------
    def _key(self, key, version=None) -> bytes:
        kb = self._nc_key(key, version)
        if kb is None:
            k = self.make_and_validate_key(key, version=version)
            kb = (k if isinstance(k, str) else str(k)).encode()
        return kb

    def _encode(self, value) -> tuple[bytes, int]:
        return self._nc_pack(value), 0

    def _ttl(self, timeout):
        """Django timeout (seconds; None = forever; 0 or less = expire at once) for the Client."""
        if timeout is DEFAULT_TIMEOUT:
            return self.default_timeout
        return timeout

    def _probe(self, kb: bytes):
        if self._use_shm:
            st, value = self._nc_probe(kb)
            if st == UNAVAILABLE:
                self._client.refresh_segment()
            return st, value
        return UNAVAILABLE, None

    # -- hooks of the native get/get_many --------------------------------------
    def _nc_get_miss(self, kb: bytes, default, status: int):
        if status == UNAVAILABLE and self._use_shm:
            self._client.refresh_segment()
        e = self._client.fetch(kb)
        return default if e is None else self._nc_decode(e[0], e[1])

    def _nc_get_slow(self, key, default, version):
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return self._nc_get_miss(kb, default, st)

    def _nc_get_many_miss(self, pending: list, result: dict) -> None:
        entries = self._client.fetch_many([kb for _, kb, _ in pending])
        for (key, _, _), e in zip(pending, entries):
            if e is not None:
                result[key] = self._nc_decode(e[0], e[1])

    def _nc_get_many_slow(self, keys, version):
        result = {}
        pending = []
        for key in keys:
            kb = self._key(key, version)
            st, value = self._probe(kb)
            if st == HIT:
                result[key] = value
            else:
                pending.append((key, kb, st))
        if pending:
            self._nc_get_many_miss(pending, result)
        return result

    # -- BaseCache -----------------------------------------------------------
    # get() and get_many() are CacheCore's.

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        kb = self._key(key, version)
        data, flags = self._encode(value)
        self._client.set(kb, data, self._ttl(timeout), flags)

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

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        items = []
        for key, value in data.items():
            v, flags = self._encode(value)
            items.append((key, self._key(key, version), v, flags))
        failed = set(self._client.set_many([(kb, v, f) for _, kb, v, f in items], self._ttl(timeout)))
        return [key for key, kb, _, _ in items if kb in failed]

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
        if value is None:
            raise ValueError("Key '%s' not found" % key)
        return value

    def _incr_result(self, key, fn):
        try:
            value = fn()
        except ProtocolError as e:
            raise self._incr_error(e) from None
        return self._incr_value(key, value)

    def incr(self, key, delta=1, version=None):
        kb = self._key(key, version)
        return self._incr_result(key, lambda: self._client.incr(kb, delta))

    def decr(self, key, delta=1, version=None):
        kb = self._key(key, version)
        return self._incr_result(key, lambda: self._client.incr(kb, -delta))

    def clear(self):
        """Clears the whole table, or with CLEAR_PREFIX_ONLY the keys of this KEY_PREFIX."""
        self._client.clear(f"{self.key_prefix}:" if self._clear_prefix_only else None)

    def close(self, **kwargs):
        # Called after every request: connections are kept (one per thread).
        pass

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """Django's get_or_set, computed once across workers (a lease)."""
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return self._compute_once(kb, default, self._ttl(timeout), store_none=True)[0]

    def _compute_once(self, kb: bytes, default, ttl, store_none: bool):
        """(value, computed_here). The lease holder computes; others get its value."""
        lease = self._client.lease(kb, self._lease_ttl, self._lease_wait)
        if lease.hit:
            return self._nc_decode(lease.value, lease.flags), False
        try:
            value = default() if callable(default) else default
            if value is None and not store_none:
                stored = False
            else:
                data, flags = self._encode(value)
                if lease.token is not None:
                    stored = self._client.set(kb, data, ttl, flags)  # ends the lease
                else:
                    stored = self._client.add(kb, data, ttl, flags)
        except BaseException:
            if lease.token is not None:
                self._client.release(kb, lease.token)
            raise
        if lease.token is not None and not stored:
            self._client.release(kb, lease.token)
        return value, True

    # -- async: hits run here, in the event loop's thread, with no executor ---
    def _adecode_entry(self, e, default):
        return default if e is None else self._nc_decode(e[0], e[1])

    async def aget(self, key, default=None, version=None):
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return self._adecode_entry(await self._client.afetch(kb), default)

    async def aget_many(self, keys, version=None):
        result = {}
        pending = []
        for key in keys:
            kb = self._key(key, version)
            st, value = self._probe(kb)
            if st == HIT:
                result[key] = value
            else:
                pending.append((key, kb))
        if pending:
            entries = await self._client.afetch_many([kb for _, kb in pending])
            for (key, _), e in zip(pending, entries):
                if e is not None:
                    result[key] = self._nc_decode(e[0], e[1])
        return result

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        kb = self._key(key, version)
        data, flags = self._encode(value)
        await self._client.aset(kb, data, self._ttl(timeout), flags)

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
        items = []
        for key, value in data.items():
            v, flags = self._encode(value)
            items.append((key, self._key(key, version), v, flags))
        failed = set(await self._client.aset_many([(kb, v, f) for _, kb, v, f in items], self._ttl(timeout)))
        return [key for key, kb, _, _ in items if kb in failed]

    async def adelete_many(self, keys, version=None):
        await self._client.adelete_many([self._key(k, version) for k in keys])

    async def _aincr(self, key, kb, delta):
        try:
            value = await self._client.aincr(kb, delta)
        except ProtocolError as e:
            raise self._incr_error(e) from None
        return self._incr_value(key, value)

    async def aincr(self, key, delta=1, version=None):
        return await self._aincr(key, self._key(key, version), delta)

    async def adecr(self, key, delta=1, version=None):
        return await self._aincr(key, self._key(key, version), -delta)

    async def aclear(self):
        await self._client.aclear(f"{self.key_prefix}:" if self._clear_prefix_only else None)

    async def aclose(self, **kwargs):
        pass

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        kb = self._key(key, version)
        st, value = self._probe(kb)
        if st == HIT:
            return value
        return (await self._acompute_once(kb, default, self._ttl(timeout), store_none=True))[0]

    async def _acompute_once(self, kb: bytes, default, ttl, store_none: bool):
        lease = await self._client.alease(kb, self._lease_ttl, self._lease_wait)
        if lease.hit:
            return self._nc_decode(lease.value, lease.flags), False
        try:
            value = default() if callable(default) else default
            if value is None and not store_none:
                stored = False
            else:
                data, flags = self._encode(value)
                if lease.token is not None:
                    stored = await self._client.aset(kb, data, ttl, flags)
                else:
                    stored = await self._client.aadd(kb, data, ttl, flags)
        except BaseException:
            if lease.token is not None:
                await self._client.arelease(kb, lease.token)
            raise
        if lease.token is not None and not stored:
            await self._client.arelease(kb, lease.token)
        return value, True
