"""Misses answered locally without a Redis tier (client-py/README.md, "Local
misses"): the daemon states in the segment header that its table is the whole
truth, so a miss there, with no write of this process pending for the key, is
a miss without a round trip. Real daemons, real forked processes; requests
are counted with the daemon's STATUS (requests_total).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from support.nearcached import Daemon
from support.rawproto import RawConn
from support.wait import wait_for

N = 200


def requests(d) -> int:
    with RawConn(d.socket) as c:
        return c.status()["requests_total"]


def round_trips(d, fn) -> int:
    """Requests the daemon answered while fn ran (the STATUS that measures it excluded)."""
    before = requests(d)
    fn()
    return requests(d) - before - 1


def client(d, **options):
    from nearcache import Client

    c = Client(d.socket, **options)
    assert c.ping()
    return c


def lookups(c):
    for i in range(N):
        assert c.get(b"absent%d" % i) is None
        assert c.has_key(b"absent%d" % i) is False
    assert c.get_many([b"absent%d" % i for i in range(N)]) == {}


def test_a_definite_miss_is_answered_without_a_round_trip(daemon):
    from nearcache import _native

    c = client(daemon, sync_writes=False)
    with RawConn(daemon.socket) as raw:
        st = raw.status()
    assert st["shm_authoritative"] == 1 and st["config"]["authoritative"] is True
    assert c.segment.authoritative
    assert c.segment.get(b"absent")[0] == _native.ABSENT
    assert round_trips(daemon, lambda: lookups(c)) == 0
    # A value is still a hit, and a key the table cannot hold still asks the daemon (which says why).
    c.set(b"present", b"v")
    c._wchan.wait(10**9)
    assert c.get(b"present") == b"v" and c.has_key(b"present")
    assert c.segment.get(b"x" * 2000)[0] == _native.MISS


def test_the_django_backend_answers_definite_misses_locally(daemon, make_cache):
    cache = make_cache(daemon)
    cache.get("warm")  # the first call maps the segment (HELLO)
    assert round_trips(daemon, lambda: [cache.get(f"absent{i}") for i in range(N)]) == 0
    assert round_trips(daemon, lambda: cache.get_many([f"absent{i}" for i in range(N)])) == 0
    assert round_trips(daemon, lambda: [cache.has_key(f"absent{i}") for i in range(N)]) == 0
    assert cache.get("absent", "dflt") == "dflt"
    # A key built in Python (a custom key function) takes the same path.
    cache.key_func = lambda key, prefix, version: f"custom:{key}"
    assert round_trips(daemon, lambda: [cache.get(f"absent{i}", 7) == 7 for i in range(N)]) == 0


def test_local_misses_off_asks_the_daemon(daemon, make_cache):
    c = client(daemon, local_misses=False)
    assert round_trips(daemon, lambda: lookups(c)) >= 2 * N + 1
    cache = make_cache(daemon, LOCAL_MISSES=False)
    assert round_trips(daemon, lambda: [cache.get(f"absent{i}") for i in range(N)]) >= N


def test_a_daemon_that_is_not_authoritative_gets_every_miss(tmp_path, make_cache):
    from nearcache import _native

    d = Daemon(tmp_path, name="na", authoritative="false")
    try:
        c = client(d)
        st = requests(d)
        with RawConn(d.socket) as raw:
            s = raw.status()
        assert s["shm_authoritative"] == 0 and s["config"]["authoritative"] is False
        assert not c.segment.authoritative and c.segment.get(b"absent")[0] == _native.MISS
        assert round_trips(d, lambda: lookups(c)) >= 2 * N + 1
        cache = make_cache(d)
        assert round_trips(d, lambda: [cache.get(f"absent{i}") for i in range(N)]) >= N
        assert st > 0
    finally:
        d.stop()


def test_this_process_sees_its_own_pending_writes_with_local_misses(daemon, make_cache):
    """The daemon is stopped (SIGSTOP, within its heartbeat grace): the writes stay
    pending, the table says "absent" for sure, and this process still reads its writes."""
    from nearcache import _native

    c = client(daemon, sync_writes=False)
    cache = make_cache(daemon)
    c.set(b"gone", b"old")
    cache.set("gone", "old")
    c._wchan.wait(10**9)
    cache._client._wchan.wait(10**9)
    daemon.signal(signal.SIGSTOP)
    try:
        for i in range(20):
            assert c.set(b"mine%d" % i, b"v%d" % i)
            assert c.get(b"mine%d" % i) == b"v%d" % i
            assert c.has_key(b"mine%d" % i)
            cache.set(f"mine{i}", i)
            assert cache.get(f"mine{i}") == i
            assert cache.has_key(f"mine{i}")
        assert c.segment.get(b"mine0")[0] == _native.ABSENT  # the table does not have them yet
        assert c.get_many([b"mine%d" % i for i in range(20)]) == {b"mine%d" % i: b"v%d" % i for i in range(20)}
        assert cache.get_many([f"mine{i}" for i in range(20)]) == {f"mine{i}": i for i in range(20)}
        c.delete_many([b"gone"])
        cache.delete_many(["gone"])
        assert c.get(b"gone") is None and cache.get("gone") is None
    finally:
        daemon.signal(signal.SIGCONT)
    c._wchan.wait(10**9)
    cache._client._wchan.wait(10**9)
    assert c.fetch(b"mine19") == (b"v19", 0)
    assert c.get(b"gone") is None


def test_another_process_write_is_seen_by_a_local_miss(daemon):
    c = client(daemon)
    assert c.get(b"other") is None  # a local miss first
    code = textwrap.dedent(f"""
        from nearcache import Client
        c = Client({daemon.socket!r}, sync_writes=False)
        for i in range(50):
            c.set(b"other%d" % i, b"from the child")
        c.set(b"other", b"from the child")
        print("sent", flush=True)
    """)  # exits without waiting: the atexit flush sends the writes
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "sent" in out.stdout, out.stderr
    wait_for(lambda: c.get(b"other") == b"from the child", 5, "the child's write")
    assert all(c.get(b"other%d" % i) == b"from the child" for i in range(50))


def test_async_reads_answer_definite_misses_locally(daemon, make_cache):
    import asyncio

    c = client(daemon)
    cache = make_cache(daemon)
    cache.get("warm")

    async def reads():
        for i in range(N):
            assert await c.aget(b"absent%d" % i) is None
            assert await c.ahas_key(b"absent%d" % i) is False
            assert await cache.aget(f"absent{i}", 5) == 5
        assert await c.aget_many([b"absent%d" % i for i in range(N)]) == {}
        assert await cache.aget_many([f"absent{i}" for i in range(N)]) == {}

    assert round_trips(daemon, lambda: asyncio.run(reads())) == 0


def test_get_or_set_still_takes_the_lease_on_a_definite_miss(daemon, make_cache):
    cache = make_cache(daemon)
    cache.get("warm")
    before = requests(daemon)
    assert cache.get_or_set("computed", lambda: 42) == 42
    assert requests(daemon) - before - 1 >= 1  # the LEASE (its SET may still be on the write channel)
    assert cache.get("computed") == 42
