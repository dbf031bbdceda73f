"""NearCache.lock against a real daemon: redis-py's Lock interface and errors,
exclusive across threads and processes, timeout=None bounded by max_lock_ms."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from nearcache import core
from nearcache.lock import Lock, LockError, LockNotOwnedError
from support.nearcached import Daemon


def test_acquire_release_and_the_context_manager(cache):
    lock = cache.lock("job", timeout=10)
    assert isinstance(lock, Lock)
    assert lock.locked() is False and lock.owned() is False
    assert lock.acquire() is True
    assert lock.locked() is True and lock.owned() is True
    other = cache.lock("job", timeout=10)
    assert other.acquire(blocking=False) is False
    t0 = time.monotonic()
    assert other.acquire(blocking_timeout=0.3) is False
    assert time.monotonic() - t0 >= 0.3
    assert other.owned() is False
    lock.release()
    assert lock.locked() is False
    with pytest.raises(LockError, match="unlocked"):
        lock.release()
    with cache.lock("job", timeout=10) as held:
        assert held.owned()
        assert cache.lock("job").acquire(blocking=False) is False
    forever = cache.lock("job")  # timeout=None: bounded by max_lock_ms
    assert forever.acquire(blocking=False) is True
    forever.release()


def test_the_lock_is_not_the_value(cache):
    cache.set("name", "value")
    with cache.lock("name", timeout=5):
        assert cache.get("name") == "value"
        cache.delete("name")
        assert cache.lock("name").acquire(blocking=False) is False


def test_an_expired_lock_is_not_owned_and_cannot_be_released_or_extended(cache):
    lock = cache.lock("exp", timeout=0.3, sleep=0.05)
    assert lock.acquire()
    time.sleep(0.5)
    assert not lock.locked()
    other = cache.lock("exp", timeout=10)
    assert other.acquire(blocking=False)
    with pytest.raises(LockNotOwnedError):
        lock.extend(1)
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert other.owned()
    other.release()


def test_extend_and_reacquire(cache):
    lock = cache.lock("ext", timeout=1)
    assert lock.acquire()
    assert lock.extend(5) is True
    ttl = cache._client._run(core.lock_query(lock.name))[1]
    assert 5000 < ttl <= 6000
    assert lock.extend(2, replace_ttl=True) is True
    assert cache._client._run(core.lock_query(lock.name))[1] <= 2000
    assert lock.reacquire() is True
    lock.release()
    with pytest.raises(LockError, match="unlocked"):
        lock.extend(1)
    forever = cache.lock("ext2")
    assert forever.acquire()
    with pytest.raises(LockError, match="no timeout"):
        forever.extend(1)
    with pytest.raises(LockError, match="no timeout"):
        forever.reacquire()
    forever.release()


def test_thread_local_tokens(cache):
    lock = cache.lock("tl", timeout=10)
    assert lock.acquire()
    errors = []

    def other():
        try:
            lock.release()
        except LockError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and "unlocked" in str(errors[0])  # another thread holds no token
    lock.release()
    shared = cache.lock("tl", timeout=10, thread_local=False)
    assert shared.acquire()
    t = threading.Thread(target=shared.release)
    t.start()
    t.join()
    assert not shared.locked()


def _count_under_lock(socket: str, path: str, n: int) -> None:
    from nearcache import Client

    c = Client(socket)
    for _ in range(n):
        with c.lock("counter", timeout=10, sleep=0.001):
            with open(path) as f:
                v = int(f.read())
            with open(path, "w") as f:
                f.write(str(v + 1))


def test_exclusive_across_processes(module_daemon, tmp_path):
    path = tmp_path / "counter"
    path.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_count_under_lock, args=(module_daemon.socket, str(path), 30)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert path.read_text() == "120"


def test_timeout_none_is_bounded_by_max_lock_ms(tmp_path, make_cache):
    with Daemon(tmp_path, max_lock_ms=400) as d:
        c = make_cache(d, STRICT=True)
        lock = c.lock("k")
        assert lock.acquire()
        assert c.lock("k").acquire(blocking_timeout=5, sleep=0.05)  # freed by the bound


def test_an_unreachable_daemon_raises(tmp_path, make_cache):
    from nearcache.protocol import CacheUnavailable

    c = make_cache(str(tmp_path / "none.sock"), SOCKET_TIMEOUT=0.2)   # fail-open for the cache ...
    with pytest.raises(CacheUnavailable):
        c.lock("k").acquire()                                          # ... never for a lock


def test_async_lock_waits_off_the_event_loop(cache):
    """alock: the same lock for coroutines; a waiting acquire leaves the loop free."""
    import asyncio

    from nearcache.lock import AsyncLock

    async def main():
        lock = cache.alock("ajob", timeout=10)
        assert isinstance(lock, AsyncLock)
        async with lock:
            assert await lock.locked() and await lock.owned()
            other = cache.alock("ajob", timeout=10)
            ticks = 0

            async def tick():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticker = asyncio.create_task(tick())
            assert await other.acquire(blocking_timeout=0.3) is False
            ticker.cancel()
            assert ticks >= 10  # the loop kept turning while acquire waited
            assert cache.lock("ajob").acquire(blocking=False) is False  # the sync API sees it held
            assert await lock.extend(5)
        assert await lock.locked() is False
        with pytest.raises(LockError, match="unlocked"):
            await lock.release()

    asyncio.run(main())
