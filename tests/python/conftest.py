"""Fixtures of the Python client's tests: real daemons and NearCache objects.

Every daemon is a real nearcached from $NEARCACHE_BUILD (tests/support/nearcached.py);
Django is configured by nc_django.
"""
from __future__ import annotations

import pytest

import nc_django
from support.fixtures import daemon  # noqa: F401
from support.nearcached import Daemon

nc_django.configure()


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("nc"))
    yield d
    d.stop()


@pytest.fixture
def make_cache():
    """make_cache(daemon, **OPTIONS) -> a NearCache for that daemon (params like CACHES entries)."""
    from nearcache.django import NearCache

    def make(d, params=None, **options):
        p = {"OPTIONS": options}
        p.update(params or {})
        return NearCache(d.socket if hasattr(d, "socket") else d, p)

    return make


@pytest.fixture
def cache(module_daemon, make_cache):
    """A STRICT NearCache on the module's daemon, emptied (a test file may define its own)."""
    c = make_cache(module_daemon, STRICT=True)
    c.clear()
    return c
