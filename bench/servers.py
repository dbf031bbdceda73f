"""The servers the side-by-side benchmarks compare: nearcached, redis-server
and memcached, each on a Unix socket in one temporary directory, started
together and stopped together.

    with BenchServers() as s:
        s.sockets["redis-server"]   # path of its socket

The processes are those of the tests (tests/support: nearcached.py,
redis_server.py, process.py), with settings for measuring: nearcached logs
warnings only, redis-server persists nothing, memcached runs with 2 worker
threads (the machine's cores); redis-server and nearcached are single-threaded.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.nearcached import BUILD, NEARCACHED, Daemon  # noqa: E402,F401 (BUILD: for the benchmarks)
from support.process import ChildProcess  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402


class Memcached(ChildProcess):
    """memcached on a Unix socket in `directory` (tests/support has no memcached: only the benchmarks use one)."""

    def __init__(self, directory: Path, name: str = "memcached"):
        self.socket = str(directory / f"{name}.sock")
        self.log_path = directory / f"{name}.log"
        args = ["memcached", "-s", self.socket, "-a", "0700", "-m", "64", "-t", "2"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._started()
        self.wait_listening(self.socket, what="memcached")


class BenchServers:
    def __init__(self) -> None:
        for tool in ("redis-server", "memcached"):
            if not shutil.which(tool):
                raise SystemExit(f"{tool} not found: scripts/install-deps.sh bench")
        self.tmp = Path(tempfile.mkdtemp(prefix="nearcache-bench-"))
        self.sockets: dict[str, str] = {}
        self._servers: list[ChildProcess] = []

    def __enter__(self) -> "BenchServers":
        try:
            self._add("nearcached", Daemon(self.tmp, name="nearcached", segment_size="64M", log_level="warn"))
            self._add("redis-server", RedisServer(self.tmp, name="redis-server", aof=False, loglevel="warning"))
            self._add("memcached", Memcached(self.tmp))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for s in self._servers:
            s.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _add(self, name: str, server) -> None:
        self._servers.append(server)
        self.sockets[name] = server.socket

    @staticmethod
    def version(name: str) -> str:
        cmd = {"nearcached": [str(NEARCACHED), "--version"], "redis-server": ["redis-server", "--version"],
               "memcached": ["memcached", "-V"]}[name]
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().split("\n")[0]
        except OSError:
            return "?"


def bench_args(quick_help: str = "fewer samples (a smoke run)") -> argparse.Namespace:
    """The options every benchmark takes: --quick (what a smoke run leaves out) and --output FILE."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--output", help="also write the report to this file")
    return ap.parse_args()


class Report:
    """A benchmark's report: printed as it goes, and written to --output at the end."""

    def __init__(self, output: str | None):
        self.output, self.lines = output, []

    def __call__(self, s: str = "") -> None:
        print(s, flush=True)
        self.lines.append(s)

    def save(self) -> None:
        if self.output:
            Path(self.output).write_text("\n".join(self.lines) + "\n")
