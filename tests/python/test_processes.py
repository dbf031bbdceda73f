"""Many processes on one daemon: fork after the client exists, a gunicorn-style
prefork, and leases that make 16 processes compute a key once."""
from __future__ import annotations

import multiprocessing
import os
import time

import pytest
from django.core import signals
from django.core.cache import caches
from django.test import override_settings

from nc_django import nearcache_settings
from nearcache import get_cached_data

fork = multiprocessing.get_context("fork")


def run_children(target, n, *args, timeout=30):
    procs = [fork.Process(target=target, args=(i, *args)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    return codes


def test_fork_after_client_creation(cache):
    cache.set("parent", "p")
    assert cache.get("parent") == "p"           # mapping and connection exist before fork
    parent_conn = cache._client._conn()

    def child(i, n):
        assert cache._client._conn() is not parent_conn
        cache.set(f"child-{i}", i)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if cache.get_many([f"child-{j}" for j in range(n)]) == {f"child-{j}": j for j in range(n)}:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("did not see the other children's writes")
        assert cache.get("parent") == "p"
        pids = {c["pid"] for c in cache._client.status()["connections"]}
        assert os.getpid() in pids

    codes = run_children(child, 4, 4)
    assert codes == [0] * 4
    # The parent's own connection was never used by a child and still works.
    assert cache._client._conn() is parent_conn
    assert cache.get_many([f"child-{j}" for j in range(4)]) == {f"child-{j}": j for j in range(4)}
    assert cache._nc_get_miss(cache._key("child-3"), None, 1) == 3


def test_prefork_workers(module_daemon):
    """gunicorn --preload: the app (and its cache) is set up in the master, used,
    then workers are forked and serve requests, each closing caches after a request."""
    settings = {"default": nearcache_settings(module_daemon.socket, STRICT=True)}
    with override_settings(CACHES=settings):
        master_cache = caches["default"]
        master_cache.clear()
        master_cache.set("config", {"feature": True}, None)
        master_cache.set("requests", 0, None)

        def handle_request(worker, n):
            signals.request_started.send(sender=None)
            try:
                c = caches["default"]
                assert c.get("config") == {"feature": True}
                page = c.get_or_set(f"page-{n % 5}", lambda: f"rendered {n % 5}", 60)
                assert page == f"rendered {n % 5}"
                c.incr("requests")
            finally:
                signals.request_finished.send(sender=None)  # Django closes caches here

        def worker(i):
            for n in range(50):
                handle_request(i, n)

        codes = run_children(worker, 4)
        assert codes == [0] * 4
        assert master_cache.get("requests") == 200
        assert master_cache.get_many([f"page-{k}" for k in range(5)]) == {
            f"page-{k}": f"rendered {k}" for k in range(5)}


def _count_lines(path) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("helper", ["get_or_set", "get_cached_data"])
def test_sixteen_processes_compute_once(cache, tmp_path, helper):
    log = tmp_path / "computed"
    start = time.monotonic() + 0.5

    def compute():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        return {"answer": 42}

    def child(i):
        while time.monotonic() < start:
            time.sleep(0.001)
        if helper == "get_or_set":
            v = cache.get_or_set("expensive", compute, 60)
        else:
            v = get_cached_data("expensive", compute, cache=cache)
        assert v == {"answer": 42}

    codes = run_children(child, 16)
    assert codes == [0] * 16
    assert _count_lines(log) == 1
    assert cache.get("expensive") == {"answer": 42}
