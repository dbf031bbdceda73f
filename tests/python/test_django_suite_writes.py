"""Django's own cache test suite against NearCache as deployed by default:
STRICT off, so set/set_many/delete_many do not wait for the daemon
(nearcache.writes). The suite's read-after-write checks are this process
reading its own pending writes; the ones that need an answer (add, incr,
delete, touch, get_or_set) wait for the acknowledgements first."""
from __future__ import annotations

import shutil
import tempfile

import pytest
from django.test import TestCase, override_settings

import nc_django
from support.nearcached import Daemon

_suite = nc_django.suite_module()

_DIR = tempfile.mkdtemp(prefix="nearcache-django-writes-")
_SOCKET = f"{_DIR}/nc.sock"


@pytest.fixture(scope="module", autouse=True)
def django_environment():
    d = Daemon(_DIR)
    with nc_django.test_environment():
        yield d
    d.stop()
    shutil.rmtree(_DIR, ignore_errors=True)


@override_settings(CACHES=_suite.caches_setting_for_tests(base=nc_django.nearcache_settings(_SOCKET, STRICT=False),
                                                          exclude=_suite.redis_excluded_caches))
class NearCacheWritesDjangoSuiteTests(_suite.BaseCacheTests, TestCase):
    pass
