"""Fixtures of the Redis tier's end-to-end tests: a real redis-server and real
nearcached processes sharing it, each with its own socket and segment (two
daemons on one machine = two hosts).
"""
from __future__ import annotations

import pytest

from support.nearcached import Daemon
from support.redis_server import RedisServer
from support.sanitizers import no_sanitizer_reports  # noqa: F401 (autouse)
from support.tier import FAST, wait_coherent


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path)
    yield r
    r.kill()


@pytest.fixture
def host(tmp_path, redis_server):
    """host(name, **options): a nearcached on redis_server (stopped after the test, exit 0 checked)."""
    made = []

    def make(name: str = "a", url: str | None = None, wait: bool = True, **options) -> Daemon:
        opts = {**FAST, "redis_url": url or redis_server.url, **options}
        d = Daemon(tmp_path, name=name, **opts)
        made.append(d)
        if wait:
            wait_coherent(d)
        return d

    yield make
    for d in made:
        if d.proc and d.proc.poll() is None:
            redis_server.resume()
            assert d.stop() == 0, d.log()
