"""Fixtures several suites share; a conftest imports the ones it wants."""
from __future__ import annotations

import pytest

from support.nearcached import Daemon


@pytest.fixture
def daemon(tmp_path):
    """A real nearcached in the test's directory, stopped afterwards."""
    d = Daemon(tmp_path)
    yield d
    d.stop()
