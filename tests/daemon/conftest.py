"""Fixtures for the daemon's end-to-end tests: a real nearcached per test.

With a sanitizer build (NEARCACHE_BUILD=build-asan, say) every daemon log is
checked after each test: a sanitizer report fails the test that caused it.
"""
from __future__ import annotations

import pytest

from support.nearcached import Daemon
from support.rawproto import RawConn


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


@pytest.fixture(autouse=True)
def no_sanitizer_reports(tmp_path):
    yield
    for log in tmp_path.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Sanitizer" not in text and "runtime error:" not in text, f"{log}:\n{text[-4000:]}"
