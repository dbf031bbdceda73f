"""Start and stop real nearcached processes for tests.

    with Daemon(tmp_path, value_limit="64K") as d:
        d.socket, d.segment          # paths inside tmp_path
        d.restart(); d.kill(); d.stop()

Options are the daemon's own (`nearcached --help`), passed as `--name=value`.
The binary is `$NEARCACHE_BUILD/daemon/nearcached` (default build/). Every
daemon started here is stopped when the context exits or the test process
ends, and its files live in the test's temporary directory.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .process import ChildProcess

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("NEARCACHE_BUILD", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
NEARCACHED = BUILD / "daemon" / "nearcached"
NEARCACHE_CLI = BUILD / "daemon" / "nearcache"


class Daemon(ChildProcess):
    def __init__(self, directory, name: str = "nc", start: bool = True, **options):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.socket = str(self.dir / f"{name}.sock")
        self.segment = str(self.dir / f"{name}.seg")
        self.options = {"socket": self.socket, "segment": self.segment, "segment_size": "16M",
                        "log_level": "debug"}
        self.options.update({k: str(v) for k, v in options.items()})
        # An explicit socket or segment option replaces the default path.
        self.socket = self.options["socket"]
        self.segment = self.options["segment"]
        self.log_path = self.dir / f"{name}.log"
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------
    def args(self) -> list[str]:
        return [str(NEARCACHED)] + [f"--{k}={v}" for k, v in self.options.items()]

    def start(self, timeout: float = 10.0, env: dict | None = None) -> "Daemon":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        log.close()
        self._started()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        self.wait_listening(self.socket, timeout, "nearcached")

    def restart(self, **changes) -> "Daemon":
        self.stop()
        self.options.update({k: str(v) for k, v in changes.items()})
        self.socket = self.options.get("socket", self.socket)
        self.segment = self.options.get("segment", self.segment)
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
