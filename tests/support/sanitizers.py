"""A pytest fixture for suites of real daemons: with a sanitizer build
(NEARCACHE_BUILD=build-asan, say) every log in the test's directory is read
after the test, and a sanitizer report fails the test that caused it.
A conftest imports it to apply it to its suite."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_sanitizer_reports(tmp_path):
    yield
    for log in tmp_path.glob("**/*.log"):
        text = log.read_text(errors="replace")
        assert "Sanitizer" not in text and "runtime error:" not in text, f"{log}:\n{text[-4000:]}"
