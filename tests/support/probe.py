"""The segment probe (tests/support/segment_probe.cc): a real shared-memory
reader in its own process, driven line by line."""
from __future__ import annotations

import subprocess

from support.nearcached import BUILD

PROBE = BUILD / "tests" / "support" / "segment_probe"


class Probe:
    """Holds one read-only mapping of a segment across daemon restarts."""

    def __init__(self):
        self.proc = subprocess.Popen([str(PROBE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _cmd(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        return dict(kv.split("=", 1) for kv in reply[1:] if "=" in kv)

    def open(self, path: str) -> dict:
        return self._cmd(f"open {path}")

    def alive(self) -> bool:
        return self._cmd("check")["alive"] == "1"

    def generation(self) -> int:
        return int(self._cmd("check")["generation"])

    def get(self, key: str) -> str:
        return self._cmd(f"get {key}")["status"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
