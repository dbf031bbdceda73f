"""Django's own cache test suite (BaseCacheTests) against NearCache with the
Redis tier configured: a real redis-server behind the daemon, every write
going behind to Redis, misses reading through it, ADD/INCR decided in it.

Same setup as test_django_suite.py otherwise (the "cull" caches excluded, as
for Django's RedisCacheTests). Between tests Django clears the caches, which
clears this cache's keys in Redis too.
"""
from __future__ import annotations

import shutil
import tempfile

import pytest

import nc_django
from support.nearcached import Daemon
from support.redis_server import RedisServer
from support.tier import wait_coherent

if nc_django.DJANGO_SUITE_ERROR is not None:
    raise RuntimeError(f"cannot fetch Django's cache test suite: {nc_django.DJANGO_SUITE_ERROR}")

from cache.tests import BaseCacheTests, caches_setting_for_tests, redis_excluded_caches  # noqa: E402
from django.test import TestCase, override_settings  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases, \
    teardown_test_environment  # noqa: E402

_DIR = tempfile.mkdtemp(prefix="nearcache-django-redis-suite-")
_SOCKET = f"{_DIR}/nc.sock"


@pytest.fixture(scope="module", autouse=True)
def django_environment():
    r = RedisServer(_DIR)
    d = Daemon(_DIR, redis_url=r.url, redis_prefix="django-suite:")
    wait_coherent(d)  # the table is flushed once when invalidations start: before the tests
    setup_test_environment()
    old = setup_databases(verbosity=0, interactive=False)
    yield d, r
    teardown_databases(old, verbosity=0)
    teardown_test_environment()
    try:
        assert d.stop() == 0, d.log()
    finally:
        r.kill()
        shutil.rmtree(_DIR, ignore_errors=True)


@override_settings(
    CACHES=caches_setting_for_tests(
        base={"BACKEND": "nearcache.django.NearCache", "LOCATION": _SOCKET, "OPTIONS": {"STRICT": True}},
        exclude=redis_excluded_caches,
    )
)
class NearCacheWithRedisDjangoSuiteTests(BaseCacheTests, TestCase):
    pass


def test_the_suite_went_through_redis(django_environment):
    """The suite above ran with the tier in the path: Redis got its writes and answered its atomics."""
    from support.rawproto import RawConn

    d, r = django_environment
    with RawConn(d.socket) as c:
        st = c.status()
    assert st["redis_connected"] == 1 and st["redis_coherent"] == 1
    assert st["redis_queue_flushed_total"] > 100
    assert st["redis_queue_dropped_total"] == 0 and st["redis_queue_failed_total"] == 0
    assert st["redis_local_decisions_total"] == 0
    assert r.calls("evalsha") > 0 and r.calls("set") > 100
