"""Django's own cache test suite (BaseCacheTests of the installed Django) against NearCache.

Run the way Django runs it for its built-in backends: a TestCase subclass of
BaseCacheTests with CACHES overridden. Like Django's RedisCacheTests, the
"cull" and "zero_cull" caches are excluded, so the two culling tests skip
themselves (MAX_ENTRIES/CULL_FREQUENCY do not apply to the daemon's table).
Everything else must pass, against a real nearcached.
"""
from __future__ import annotations

import tempfile

import pytest

import nc_django
from support.nearcached import Daemon

if nc_django.DJANGO_SUITE_ERROR is not None:
    raise RuntimeError(f"cannot fetch Django's cache test suite: {nc_django.DJANGO_SUITE_ERROR}")

from cache.tests import BaseCacheTests, caches_setting_for_tests, redis_excluded_caches  # noqa: E402
from django.test import TestCase, override_settings  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment, teardown_databases, \
    teardown_test_environment  # noqa: E402

_DIR = tempfile.mkdtemp(prefix="nearcache-django-suite-")
_SOCKET = f"{_DIR}/nc.sock"


@pytest.fixture(scope="module", autouse=True)
def django_environment():
    d = Daemon(_DIR)
    setup_test_environment()
    old = setup_databases(verbosity=0, interactive=False)
    yield d
    teardown_databases(old, verbosity=0)
    teardown_test_environment()
    d.stop()


@override_settings(
    CACHES=caches_setting_for_tests(
        base={"BACKEND": "nearcache.django.NearCache", "LOCATION": _SOCKET, "OPTIONS": {"STRICT": True}},
        exclude=redis_excluded_caches,
    )
)
class NearCacheDjangoSuiteTests(BaseCacheTests, TestCase):
    pass
