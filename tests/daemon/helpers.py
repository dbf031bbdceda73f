"""Helpers for the daemon's end-to-end tests: the segment probe (a real
shared-memory reader, tests/support/segment_probe.cc; in support.probe) and the
nearcache CLI."""
from __future__ import annotations

import os
import subprocess

from support.nearcached import NEARCACHE_CLI
from support.probe import PROBE, Probe  # noqa: F401 (used by the tests)


def cli(*args: str, env: dict | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([str(NEARCACHE_CLI), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
