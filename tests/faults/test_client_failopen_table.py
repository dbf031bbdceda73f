"""Issue 13 item 7: what every NearCache call returns with the daemon SIGSTOPped
and STRICT off, sync and async alike, and as client-py/README.md's fail-open
table says. Each call is made twice: in the fast-fail window after a timeout,
and with the window closed (the call itself waits out SOCKET_TIMEOUT)."""
from __future__ import annotations

import asyncio
import time

import pytest

from nearcache.django import NearCache
from support.nearcached import Daemon

TIMEOUT = 0.25
SKIPPED = ["m1", "m2"]  # set_many's keys: none was sent

# (method, args, result in the window, result with the window closed when it differs)
# ("raise", type) is an exception. With the window closed, the write channel (its
# first write after the stop was taken by the kernel, then stalled) reconnects, its
# HELLO times out, and set_many's keys are listed as not stored too.
CALLS = [
    ("get", ("k",), None, None),
    ("get", ("k", "dflt"), "dflt", None),
    ("get_many", (["k", "j"],), {}, None),
    ("has_key", ("k",), False, None),
    ("set", ("k", 1), False, True),  # with the window closed: sent (the kernel took it), so True
    ("add", ("k", 1), False, None),
    ("touch", ("k", 10), False, None),
    ("delete", ("k",), False, None),
    ("set_many", ({"m1": 1, "m2": 2},), SKIPPED, None),
    ("delete_many", (["m1", "m2"],), None, None),
    ("incr", ("n",), ("raise", ValueError), None),
    ("decr", ("n",), ("raise", ValueError), None),
    ("get_or_set", ("g", lambda: "computed"), "computed", None),
    ("incr_version", ("k",), ("raise", ValueError), None),
    ("decr_version", ("k",), ("raise", ValueError), None),
    ("clear", (), None, None),
    # django-redis's methods (nearcache.redis_api): an empty cache too
    ("ttl", ("k",), 0, None),
    ("pttl", ("k",), 0, None),
    ("expire", ("k", 10), False, None),
    ("persist", ("k",), False, None),
    ("keys", ("*",), [], None),
    ("delete_pattern", ("*",), 0, None),
    ("close", (), None, None),
]


def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the outcome compared is the exception's type
        return ("raise", type(e))


async def aoutcome(fn, *args):
    try:
        return await fn(*args)
    except Exception as e:  # noqa: BLE001
        return ("raise", type(e))


@pytest.fixture
def stopped(tmp_path):
    d = Daemon(tmp_path, heartbeat_interval_ms=20, heartbeat_grace_ms=100)
    cache = NearCache(d.socket, {"OPTIONS": {"SOCKET_TIMEOUT": TIMEOUT, "WARN_INTERVAL": 3600}})
    cache.set("k", 1)
    cache.set("n", 1)
    assert cache.get("k") == 1 and cache._client.flush()
    d.pause()
    time.sleep(0.3)  # past the heartbeat grace: the segment serves no hit either
    yield cache
    d.resume()
    d.stop()


def _window(cache, open_: bool) -> None:
    policy = cache._client.policy
    if open_:
        while not policy.window_open():
            cache.get("trigger")          # times out: the window opens
    else:
        time.sleep(max(0.0, policy.down_until - time.monotonic()) + 0.01)


@pytest.mark.parametrize("in_window", [True, False], ids=["fast-fail", "timeout"])
def test_every_call_fails_open_alike_sync_and_async(stopped, in_window):
    cache = stopped
    rows = []
    for name, args, expected, closed in CALLS:
        want = expected if in_window or closed is None else closed
        _window(cache, in_window)
        t0 = time.monotonic()
        sync = outcome(getattr(cache, name), *args)
        took = time.monotonic() - t0
        _window(cache, in_window)
        asynchronous = asyncio.run(aoutcome(getattr(cache, "a" + name), *args))
        rows.append((name, sync, asynchronous, want))
        assert took < TIMEOUT * 2 + 0.2, (name, took)
    wrong = [r for r in rows if not (r[1] == r[2] == r[3])]
    assert not wrong, "\n".join(f"{n}: sync {s!r} async {a!r} documented {w!r}" for n, s, a, w in wrong)
