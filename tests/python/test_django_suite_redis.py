"""Django's own cache test suite (BaseCacheTests) against NearCache with the
Redis tier configured: a real redis-server behind the daemon, every write
going behind to Redis, misses reading through it, ADD/INCR decided in it.

Same setup as test_django_suite.py otherwise (the "cull" caches excluded, as
for Django's RedisCacheTests). Between tests Django clears the caches, which
clears this cache's keys in Redis too.
"""
from __future__ import annotations

import shutil

import pytest
from django.test import TestCase, override_settings

import nc_django
from support.nearcached import Daemon
from support.redis_server import RedisServer
from support.tier import wait_coherent

BaseCacheTests = nc_django.suite_module().BaseCacheTests

_DIR, _SOCKET = nc_django.suite_directory("django-redis-suite")


@pytest.fixture(scope="module", autouse=True)
def django_environment():
    r = RedisServer(_DIR)
    d = Daemon(_DIR, redis_url=r.url, redis_prefix="django-suite:")
    wait_coherent(d)  # the table is flushed once when invalidations start: before the tests
    with nc_django.test_environment():
        yield d, r
    try:
        assert d.stop() == 0, d.log()
    finally:
        r.kill()
        shutil.rmtree(_DIR, ignore_errors=True)


@override_settings(CACHES=nc_django.suite_caches(_SOCKET))
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
