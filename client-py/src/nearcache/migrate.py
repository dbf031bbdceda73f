"""nearcache/migrate.py — `SwitchCache`: moving from django-redis (or any Django
cache) to NearCache without losing sessions and rate-limit counters.

    CACHES = {
        "default": {"BACKEND": "nearcache.migrate.SwitchCache",
                    "OPTIONS": {"NEW": "nearcache", "OLD": "redis"}},
        "nearcache": {"BACKEND": "nearcache.django.NearCache", "KEY_PREFIX": "app"},
        "redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://...", "KEY_PREFIX": "app"},
    }

A two-level read for the switch: every read asks NEW first; a miss there
asks OLD, and a value found in OLD is copied into NEW with its remaining TTL
(django-redis's `ttl()`; else the entry's TIMEOUT) and returned. `add` and
`incr`/`decr` of a key only OLD has copy it first, so a rate-limit counter
goes on counting where it was. Writes go to NEW, and to OLD too while
`WRITE_OLD` is on (the default), so that switching back loses nothing;
deletes and `clear` go to both. Each inner cache keeps its own KEY_PREFIX,
VERSION and format: OLD's values are read by OLD's own backend, never
reinterpreted (django-redis stores integers as ASCII digits and its keys
have no prefix in Redis; nearcache's Redis tier keeps its own keys under its
`redis_prefix`, so both can share one Redis).

The `version` argument is passed through to both; KEY_PREFIX, VERSION and
TIMEOUT of this entry are not used (the inner caches' apply).
"""
from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

_MISS = object()


class SwitchCache(BaseCache):
    """Reads NEW, then OLD (copying what it finds into NEW); writes NEW (and OLD with WRITE_OLD)."""

    def __init__(self, location, params):
        super().__init__(params)
        opts = {str(k).upper(): v for k, v in (params.get("OPTIONS") or {}).items()}
        unknown = set(opts) - {"NEW", "OLD", "WRITE_OLD"}
        if unknown or "NEW" not in opts or "OLD" not in opts:
            raise ImproperlyConfigured(f"nearcache.migrate.SwitchCache: OPTIONS needs NEW and OLD (cache aliases) "
                                       f"and may have WRITE_OLD; got {sorted(opts)}")
        self._new_alias, self._old_alias = opts["NEW"], opts["OLD"]
        self.write_old = bool(opts.get("WRITE_OLD", True))
        self.copied = 0  # values copied from OLD into NEW by this object

    @property
    def new(self) -> BaseCache:
        return caches[self._new_alias]

    @property
    def old(self) -> BaseCache:
        return caches[self._old_alias]

    def _remaining(self, key, version):
        """OLD's remaining TTL of key in seconds (None: no expiry), DEFAULT_TIMEOUT when OLD cannot tell."""
        ttl = getattr(self.old, "ttl", None)
        if ttl is None:
            return DEFAULT_TIMEOUT
        t = ttl(key, version=version)
        if t == 0:  # gone meanwhile (django-redis: 0 for a missing key)
            return 0
        return t

    def _from_old(self, key, version):
        """OLD's value of key, copied into NEW (with its remaining TTL); _MISS when OLD lacks it."""
        value = self.old.get(key, _MISS, version=version)
        if value is _MISS:
            return _MISS
        timeout = self._remaining(key, version)
        if timeout != 0:
            self.new.add(key, value, timeout, version=version)  # add: a write to NEW meanwhile wins
            self.copied += 1
        return value

    # -- reads -----------------------------------------------------------------
    def get(self, key, default=None, version=None):
        value = self.new.get(key, _MISS, version=version)
        if value is _MISS:
            value = self._from_old(key, version)
        return default if value is _MISS else value

    def get_many(self, keys, version=None):
        keys = list(keys)
        found = self.new.get_many(keys, version=version)
        for key in keys:
            if key not in found:
                value = self._from_old(key, version)
                if value is not _MISS:
                    found[key] = value
        return found

    def has_key(self, key, version=None):
        return self.new.has_key(key, version=version) or self.old.has_key(key, version=version)

    # -- writes ----------------------------------------------------------------
    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self.new.set(key, value, timeout, version=version)
        if self.write_old:
            self.old.set(key, value, timeout, version=version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        if not self.new.has_key(key, version=version) and self._from_old(key, version) is not _MISS:
            return False  # OLD has it: now NEW too
        added = self.new.add(key, value, timeout, version=version)
        if added and self.write_old:
            self.old.set(key, value, timeout, version=version)
        return added

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        failed = self.new.set_many(data, timeout, version=version)
        if self.write_old:
            self.old.set_many(data, timeout, version=version)
        return failed

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        touched = self.new.touch(key, timeout, version=version)
        if self.write_old or not touched:
            touched = self.old.touch(key, timeout, version=version) or touched
        return touched

    def incr(self, key, delta=1, version=None):
        try:
            value = self.new.incr(key, delta, version=version)
        except ValueError:  # not in NEW: OLD's counter, copied, goes on from where it was
            if self._from_old(key, version) is _MISS:
                raise
            value = self.new.incr(key, delta, version=version)
        if self.write_old:
            try:
                self.old.incr(key, delta, version=version)
            except ValueError:
                pass  # expired in OLD: NEW holds the count
        return value

    def decr(self, key, delta=1, version=None):
        return self.incr(key, -delta, version=version)

    def delete(self, key, version=None):
        new = self.new.delete(key, version=version)
        return bool(self.old.delete(key, version=version)) or bool(new)

    def delete_many(self, keys, version=None):
        keys = list(keys)
        self.new.delete_many(keys, version=version)
        self.old.delete_many(keys, version=version)

    def clear(self):
        self.new.clear()
        self.old.clear()

    def close(self, **kwargs):
        pass  # Django closes each inner cache itself (they are in CACHES)
