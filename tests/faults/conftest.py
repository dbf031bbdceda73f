"""Fixtures of tests/faults: each test reproduces a fault with real processes
(tests/support: real daemons, forked workers, SIGSTOP/SIGCONT, kill -9)."""
from __future__ import annotations

import pytest

from support.nearcached import Daemon


@pytest.fixture(autouse=True, scope="session")
def _django_settings():
    """Minimal settings for NearCache objects, unless another suite (tests/python) configured Django."""
    from django.conf import settings
    if not settings.configured:
        settings.configure(USE_TZ=False)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()
