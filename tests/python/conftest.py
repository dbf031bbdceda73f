"""Shared setup of the Python client's tests: Django settings, real daemons.

Django is configured once for the whole suite, the way Django's own runner
configures it for tests/cache (sqlite in memory, the `cache` test app when
Django's suite could be fetched). Every daemon is a real nearcached from
$NEARCACHE_BUILD (tests/support/nearcached.py).
"""
from __future__ import annotations

import os
import sys

import pytest

from support.nearcached import Daemon

DJANGO_SUITE_ERROR: BaseException | None = None


def _configure_django() -> None:
    global DJANGO_SUITE_ERROR
    import django
    from django.conf import settings

    if settings.configured:
        return
    apps = ["django.contrib.contenttypes", "django.contrib.auth"]
    try:
        from django_suite import suite_dir
        sys.path.insert(0, str(suite_dir()))
        apps.append("cache")
    except Exception as e:  # reported by test_django_suite.py, not here
        DJANGO_SUITE_ERROR = e
    settings.configure(
        DEBUG=False,
        SECRET_KEY="nearcache-tests",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=apps,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        MIDDLEWARE=[],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
        USE_TZ=False,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        ROOT_URLCONF=__name__,
    )
    django.setup()


urlpatterns: list = []
_configure_django()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("nc"))
    yield d
    d.stop()


def nearcache_settings(socket_path: str, **options) -> dict:
    return {"BACKEND": "nearcache.django.NearCache", "LOCATION": socket_path, "OPTIONS": options}


@pytest.fixture
def make_cache():
    """make_cache(daemon, **OPTIONS) -> a NearCache for that daemon (params like CACHES entries)."""
    from nearcache.django import NearCache

    def make(d, params=None, **options):
        p = {"OPTIONS": options}
        p.update(params or {})
        return NearCache(d.socket if hasattr(d, "socket") else d, p)

    return make
