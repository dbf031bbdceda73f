"""Fixtures for the daemon's end-to-end tests: a real nearcached per test.

With a sanitizer build (NEARCACHE_BUILD=build-asan, say) every daemon log is
checked after each test: a sanitizer report fails the test that caused it.
"""
from __future__ import annotations

import pytest

from support.nearcached import Daemon
from support.rawproto import RawConn
from support.sanitizers import no_sanitizer_reports  # noqa: F401 (autouse)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    assert d.stop() == 0, d.log()


@pytest.fixture
def conn(daemon):
    c = RawConn(daemon.socket)
    yield c
    c.close()
