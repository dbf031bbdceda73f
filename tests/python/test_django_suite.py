"""Django's own cache test suite (BaseCacheTests of the installed Django) against NearCache.

Run the way Django runs it for its built-in backends: a TestCase subclass of
BaseCacheTests with CACHES overridden. Like Django's RedisCacheTests, the
"cull" and "zero_cull" caches are excluded, so the two culling tests skip
themselves (MAX_ENTRIES/CULL_FREQUENCY do not apply to the daemon's table).
Everything else must pass, against a real nearcached.
"""
from __future__ import annotations

import pytest
from django.test import TestCase, override_settings

import nc_django

BaseCacheTests = nc_django.suite_module().BaseCacheTests

_DIR, _SOCKET = nc_django.suite_directory("django-suite")


@pytest.fixture(scope="module", autouse=True)
def django_environment():
    yield from nc_django.suite_daemon(_DIR)


@override_settings(CACHES=nc_django.suite_caches(_SOCKET))
class NearCacheDjangoSuiteTests(BaseCacheTests, TestCase):
    pass


def test_get_cached_data_freezes_a_real_queryset(django_environment, caplog):
    """A QuerySet result is stored as the list of its rows; later hits need no query."""
    import logging

    from cache.models import Poll
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from nearcache import get_cached_data
    from nearcache.django import NearCache

    caplog.set_level(logging.DEBUG, logger="nearcache")
    cache = NearCache(_SOCKET, {"OPTIONS": {"STRICT": True}})
    cache.clear()
    Poll.objects.create(question="q1", answer="a1")
    Poll.objects.create(question="q2", answer="a2")
    try:
        with CaptureQueriesContext(connection) as queries:
            rows = get_cached_data("polls", lambda: Poll.objects.order_by("question"), cache=cache)
        assert [p.question for p in rows] == ["q1", "q2"] and isinstance(rows, list)
        assert len(queries) == 1
        with CaptureQueriesContext(connection) as queries:
            again = get_cached_data("polls", lambda: Poll.objects.order_by("question"), cache=cache)
        assert len(queries) == 0 and [(p.pk, p.question) for p in again] == [(p.pk, p.question) for p in rows]
        assert [r.getMessage() for r in caplog.records if r.name == "nearcache"] == [
            "Cache | action=get status=miss key='polls'",
            "Cache | action=set status=success key='polls' timeout=86400",
            "Cache | action=get status=hit key='polls'"]
    finally:
        Poll.objects.all().delete()
