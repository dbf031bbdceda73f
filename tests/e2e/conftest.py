"""Fixtures of the Redis tier's end-to-end tests: real redis-servers and real
nearcached processes sharing them, each with its own socket and segment (two
daemons on one machine = two hosts).

    def test_x(host, redis_server):       # the usual prologue: hosts on one Redis
        a, b = host("a"), host("b")
    def test_y(host, redis_servers):      # a Redis of its own (password, TCP, started late)
        r = redis_servers("pw", password="pw")
        a = host("a", url=r.url, fast=False)
    def test_z(host, cluster):            # a three-master Redis Cluster, one per test module
        a = host("a", url=cluster.url)

Everything started through them is stopped (a daemon's exit status checked)
or killed after the test.
"""
from __future__ import annotations

import pytest

from support.nearcached import Daemon
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServer
from support.sanitizers import no_sanitizer_reports  # noqa: F401 (autouse)
from support.tier import FAST, wait_coherent


@pytest.fixture
def redis_servers(tmp_path):
    """redis_servers(name, **options): a RedisServer in tmp_path (options as RedisServer's)."""
    made: list[RedisServer] = []

    def make(name: str = "redis", **options) -> RedisServer:
        made.append(RedisServer(tmp_path, name=name, **options))
        return made[-1]

    yield make
    for r in made:
        r.kill()


@pytest.fixture
def redis_server(redis_servers):
    return redis_servers()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real three-master Redis Cluster shared by a module's tests (the tests that break it restore it)."""
    c = RedisCluster(tmp_path_factory.mktemp("cluster"), masters=3)
    yield c
    c.kill()


@pytest.fixture
def host(tmp_path, request):
    """host(name, **options): a nearcached on redis_server, or on `url`.

    fast=True adds the quick reconnect and drain settings of support.tier.FAST;
    wait=True waits until it receives invalidations; start=False only builds it.
    """
    made: list[Daemon] = []
    servers: list[RedisServer] = []

    def make(name: str = "a", url: str | None = None, wait: bool = True, fast: bool = True, start: bool = True,
             **options) -> Daemon:
        if url is None:
            servers.append(request.getfixturevalue("redis_server"))
            url = servers[-1].url
        d = Daemon(tmp_path, name=name, start=start, **{**(FAST if fast else {}), "redis_url": url, **options})
        made.append(d)
        if start and wait:
            wait_coherent(d)
        return d

    yield make
    for d in made:
        if d.proc and d.proc.poll() is None:
            for r in servers:
                r.resume()
            assert d.stop() == 0, d.log()
