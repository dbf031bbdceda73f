"""Fixtures for the daemon's end-to-end tests: a real nearcached per test."""
from __future__ import annotations

import pytest

from support.nearcached import Daemon
from support.rawproto import RawConn


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


@pytest.fixture
def conn(daemon):
    c = RawConn(daemon.socket)
    yield c
    c.close()
