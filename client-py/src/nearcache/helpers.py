"""`get_cached_data`: look a key up, or compute it once and cache it.

Logs to the `nearcache` logger:

    DEBUG  Cache | action=get status=hit key='<key>'
    DEBUG  Cache | action=get status=miss key='<key>'
    DEBUG  Cache | action=set status=success key='<key>' timeout=<timeout>
"""
from __future__ import annotations

import logging

log = logging.getLogger("nearcache")

_MISSING = object()


def _freeze(result):
    # A QuerySet (anything with a callable .all) is stored as the list of its rows.
    all_ = getattr(result, "all", None)
    if callable(all_):
        return list(all_())
    return result


def get_cached_data(key, fetch_func, timeout=60 * 60 * 24, cache=None):
    """The cached value of `key`; on a miss `fetch_func()`'s result, stored for
    `timeout` seconds unless it is None. Against a NearCache, concurrent misses
    of one key in every worker on the host call `fetch_func` once (a lease,
    released if it returns None or raises). `cache` defaults to Django's
    default cache.
    """
    if cache is None:
        from django.core.cache import cache
    from nearcache.client import HIT
    from nearcache.django import NearCache

    if isinstance(cache, NearCache):
        kb = cache._key(key)
        st, value = cache._probe(kb)
        if st == HIT:
            log.debug("Cache | action=get status=hit key='%s'", key)
            return value
        log.debug("Cache | action=get status=miss key='%s'", key)
        computed = []

        def compute():
            computed.append(True)
            return _freeze(fetch_func())

        value, _ = cache._compute_once(kb, compute, timeout, store_none=False, status=st)
        if computed and value is not None:
            log.debug("Cache | action=set status=success key='%s' timeout=%s", key, timeout)
        return value

    value = cache.get(key, _MISSING)
    if value is not _MISSING:
        log.debug("Cache | action=get status=hit key='%s'", key)
        return value
    log.debug("Cache | action=get status=miss key='%s'", key)
    result = fetch_func()
    if result is not None:
        result = _freeze(result)
        cache.set(key, result, timeout)
        log.debug("Cache | action=set status=success key='%s' timeout=%s", key, timeout)
    return result
