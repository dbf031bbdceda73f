"""Helpers for end-to-end tests of the Redis tier: daemon status, waiting for
invalidations to flow and for the write-behind queue to drain, clients and
what they read from shared memory."""
from __future__ import annotations

from support.nearcached import Daemon
from support.rawproto import RawConn
from support.wait import wait_for  # noqa: F401 (the tests take it from here too)


def status(d: Daemon) -> dict:
    with RawConn(d.socket) as c:
        return c.status()


def coherent(d: Daemon) -> bool:
    st = status(d)
    return st.get("redis_coherent") == 1 and st.get("redis_connected") == 1


def wait_coherent(*daemons: Daemon, timeout: float = 10.0) -> None:
    for d in daemons:
        wait_for(lambda: coherent(d), timeout, f"{d.name} to receive invalidations")


def wait_flushed(d: Daemon, timeout: float = 10.0) -> dict:
    """Waits until the daemon's write-behind queue is empty; returns its status."""
    return wait_for(lambda: (lambda st: st if st["redis_queue_depth"] == 0 else None)(status(d)), timeout,
                    f"{d.name}'s write-behind queue to drain")


# Redis tier settings that keep the tests quick: fast reconnects, short drains.
FAST = dict(redis_reconnect_min_ms=20, redis_reconnect_max_ms=200, redis_heartbeat_ms=200,
            redis_drain_timeout_ms=5000)


def shm(c, key: bytes):
    """What a nearcache.Client reads from its shared-memory segment: the value, or None."""
    from nearcache.client import HIT

    st, value, _ = c.segment.get(key)
    return value if st == HIT else None


def client(d: Daemon, **options):
    """A nearcache.Client of the daemon with its segment mapped (shared-memory hits from the start)."""
    from nearcache import Client

    c = Client(d.socket, **options)
    assert c.ping()
    return c
