"""Helpers for the daemon's end-to-end tests: the segment probe (a real
shared-memory reader, tests/support/segment_probe.cc; in support.probe) and the
nearcache CLI."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from support.nearcached import NEARCACHE_CLI
from support.probe import PROBE, Probe  # noqa: F401 (used by the tests)


def cli(*args: str, env: dict | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([str(NEARCACHE_CLI), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@contextlib.contextmanager
def small_tmpfs(directory, size: str = "20m"):
    """A tmpfs of `size` mounted at `directory`/small for the block, unmounted after
    (lazily: a reader may still map a file in it); skips the test unless it can mount."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = Path(directory) / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
