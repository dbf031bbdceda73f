"""Django's own cache test suite (BaseCacheTests) against NearCache with
COMPRESSOR="zlib" and COMPRESS_MIN_BYTES=0: every value that compresses
smaller is stored compressed and read back through the native decompression
on the hit path. Same setup as test_django_suite.py otherwise."""
from __future__ import annotations

import pytest
from django.test import TestCase, override_settings

import nc_django

t = nc_django.suite_module()

_DIR, _SOCKET = nc_django.suite_directory("django-suite-compressed")


@pytest.fixture(scope="module", autouse=True)
def django_environment():
    yield from nc_django.suite_daemon(_DIR)


_CACHES = t.caches_setting_for_tests(
    base=nc_django.nearcache_settings(_SOCKET, STRICT=True, COMPRESSOR="zlib", COMPRESS_MIN_BYTES=0),
    exclude=t.redis_excluded_caches)


@override_settings(CACHES=_CACHES)
class NearCacheCompressedDjangoSuiteTests(t.BaseCacheTests, TestCase):
    def test_values_were_compressed(self):
        from django.core.cache import cache
        cache.set("compressed", "spam " * 1000)
        data, flags = cache._client.fetch(cache.make_key("compressed").encode())[:2]
        self.assertEqual((flags >> 1) & 7, 1)
        self.assertLess(len(data), 200)
        self.assertEqual(cache.get("compressed"), "spam " * 1000)
