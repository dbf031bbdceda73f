"""Fixtures of the fault-isolation suite (a fault stays in the process that
made it): real nearcached and redis-server processes, forked workers,
SIGSTOP/SIGCONT and kill -9, attacked by real sockets and tools. Short
versions run by default; NEARCACHE_FAULTS_LONG=1 runs the longer ones (see
attack.py).
"""
from __future__ import annotations

import pytest

from support.fixtures import daemon  # noqa: F401
from support.redis_server import RedisServer
from support.sanitizers import no_sanitizer_reports  # noqa: F401 (autouse)


@pytest.fixture(autouse=True, scope="session")
def _django_settings():
    """Minimal settings for NearCache objects, unless another suite (tests/python) configured Django."""
    from django.conf import settings
    if not settings.configured:
        settings.configure(USE_TZ=False)


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path)
    yield r
    r.kill()
