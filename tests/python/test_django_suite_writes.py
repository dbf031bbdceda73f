"""Django's own cache test suite against NearCache as deployed by default:
STRICT off, so set/set_many/delete_many do not wait for the daemon
(nearcache.writes). The suite's read-after-write checks are this process
reading its own pending writes; the ones that need an answer (add, incr,
delete, touch, get_or_set) wait for the acknowledgements first."""
from __future__ import annotations

import pytest
from django.test import TestCase, override_settings

import nc_django

_DIR, _SOCKET = nc_django.suite_directory("django-writes")


@pytest.fixture(scope="module", autouse=True)
def django_environment():
    yield from nc_django.suite_daemon(_DIR)


@override_settings(CACHES=nc_django.suite_caches(_SOCKET, strict=False))
class NearCacheWritesDjangoSuiteTests(nc_django.suite_module().BaseCacheTests, TestCase):
    pass
