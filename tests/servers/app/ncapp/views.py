"""Views of ncapp, each the cache pattern of a real site, in a sync and an async form.

    get/<key>            one read                      {"value", "pid", "cache_ms"}
    set/<key>/<value>    one write                     {"pid", "cache_ms"}
    fragments            ten ~200 B fragments with one get_many (missing ones built and set_many'd)
    throttle             DRF's throttle: read a list under one key, prepend now, write it back
    status               the backend's class, the pid and the requests this process served
`?hold=SECONDS` (get, set) sleeps after the cache call, holding the worker, its
thread or its greenlet, so that a test can look at the daemon while many
requests are in flight. Cache errors are not caught here: an exception that
fail-open lets through becomes a 500 the test sees.
"""
import asyncio
import collections
import os
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, JsonResponse

FRAGMENT_KEYS = [f"fragment:{i}" for i in range(10)]
HISTORY_LIMIT = 20  # entries kept by the throttle view: every request writes, the value stays small

_counts: collections.Counter = collections.Counter()
_counts_lock = threading.Lock()


def _count(view: str) -> None:
    with _counts_lock:
        _counts[view] += 1


def _hold(request) -> float:
    return float(request.GET.get("hold", 0))  # the views sleep only when it is set


def _fragment(i: int) -> str:
    head = f'<li class="fragment" id="f{i}">'
    return head + "x" * (200 - len(head) - 5) + "</li>"


def _page(found: dict) -> HttpResponse:
    body = "".join(found[k] for k in FRAGMENT_KEYS)
    return HttpResponse(f"<ul>{body}</ul>", content_type="text/html")


def _history_key(request) -> str:
    return "throttle:" + request.GET.get("ident", request.META.get("REMOTE_ADDR", "anon"))


def _prepend(history) -> list:
    return [time.time()] + list(history or [])[:HISTORY_LIMIT - 1]


# -- sync ----------------------------------------------------------------------
def get(request, key):
    _count("get")
    t0 = time.monotonic()
    value = cache.get(key)
    ms = (time.monotonic() - t0) * 1e3
    if hold := _hold(request):
        time.sleep(hold)
    return JsonResponse({"value": value, "pid": os.getpid(), "cache_ms": ms})


def set_(request, key, value):
    _count("set")
    t0 = time.monotonic()
    cache.set(key, value, 600)
    ms = (time.monotonic() - t0) * 1e3
    if hold := _hold(request):
        time.sleep(hold)
    return JsonResponse({"pid": os.getpid(), "cache_ms": ms})


def fragments(request):
    _count("fragments")
    found = cache.get_many(FRAGMENT_KEYS)
    if len(found) < len(FRAGMENT_KEYS):
        built = {k: _fragment(i) for i, k in enumerate(FRAGMENT_KEYS) if k not in found}
        cache.set_many(built, 600)
        found.update(built)
    return _page(found)


def throttle(request):
    _count("throttle")
    key = _history_key(request)
    history = _prepend(cache.get(key, []))
    cache.set(key, history, 60)
    return JsonResponse({"n": len(history)})


def status(request):
    with _counts_lock:
        counts = dict(_counts)
    return JsonResponse({"backend": settings.CACHES["default"]["BACKEND"], "pid": os.getpid(), "counts": counts})


# -- async (the cache's a* API; under ASGI these run on the event loop) ---------
async def aget(request, key):
    _count("aget")
    t0 = time.monotonic()
    value = await cache.aget(key)
    ms = (time.monotonic() - t0) * 1e3
    if hold := _hold(request):
        await asyncio.sleep(hold)
    return JsonResponse({"value": value, "pid": os.getpid(), "cache_ms": ms})


async def aset(request, key, value):
    _count("aset")
    t0 = time.monotonic()
    await cache.aset(key, value, 600)
    ms = (time.monotonic() - t0) * 1e3
    if hold := _hold(request):
        await asyncio.sleep(hold)
    return JsonResponse({"pid": os.getpid(), "cache_ms": ms})


async def afragments(request):
    _count("afragments")
    found = await cache.aget_many(FRAGMENT_KEYS)
    if len(found) < len(FRAGMENT_KEYS):
        built = {k: _fragment(i) for i, k in enumerate(FRAGMENT_KEYS) if k not in found}
        await cache.aset_many(built, 600)
        found.update(built)
    return _page(found)


async def athrottle(request):
    _count("athrottle")
    key = _history_key(request)
    history = _prepend(await cache.aget(key, []))
    await cache.aset(key, history, 60)
    return JsonResponse({"n": len(history)})
