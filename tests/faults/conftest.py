"""Fixtures of tests/faults: each test reproduces a fault with real processes
(tests/support: real daemons, forked workers, SIGSTOP/SIGCONT, kill -9)."""
from __future__ import annotations

import pytest

from support.nearcached import Daemon


def _configure_django() -> None:
    from django.conf import settings
    if not settings.configured:
        settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
                           USE_TZ=False)


_configure_django()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()
