"""The servers the side-by-side benchmarks compare: nearcached, redis-server
and memcached, each on a Unix socket in one temporary directory, started
together and stopped together.

    with BenchServers() as s:
        s.sockets["redis-server"]   # path of its socket

memcached runs with 2 worker threads (the machine's cores); redis-server and
nearcached are single-threaded. Neither redis-server nor memcached persists
anything.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("NEARCACHE_BUILD", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
NEARCACHED = BUILD / "daemon" / "nearcached"


def wait_socket(path: str, proc: subprocess.Popen, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{what} did not listen on {path}")


class BenchServers:
    def __init__(self) -> None:
        for tool in ("redis-server", "memcached"):
            if not shutil.which(tool):
                raise SystemExit(f"{tool} not found: scripts/install-deps.sh bench")
        self.tmp = Path(tempfile.mkdtemp(prefix="nearcache-bench-"))
        self.sockets = {name: str(self.tmp / f"{name}.sock") for name in ("nearcached", "redis-server", "memcached")}
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BenchServers":
        try:
            self._spawn("nearcached", [str(NEARCACHED), f"--socket={self.sockets['nearcached']}",
                                       f"--segment={self.tmp / 'nearcached.seg'}", "--segment_size=64M",
                                       "--log_level=warn"])
            self._spawn("redis-server", ["redis-server", "--port", "0", "--unixsocket", self.sockets["redis-server"],
                                         "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                                         "--dir", str(self.tmp), "--loglevel", "warning"])
            mc = ["memcached", "-s", self.sockets["memcached"], "-a", "0700", "-m", "64", "-t", "2"]
            if os.geteuid() == 0:
                mc += ["-u", "root"]
            self._spawn("memcached", mc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for p in self._procs:
            p.terminate()
        for p in self._procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _spawn(self, name: str, args: list[str]) -> None:
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._procs.append(p)
        wait_socket(self.sockets[name], p, name)

    @staticmethod
    def version(name: str) -> str:
        cmd = {"nearcached": [str(NEARCACHED), "--version"], "redis-server": ["redis-server", "--version"],
               "memcached": ["memcached", "-V"]}[name]
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().split("\n")[0]
        except OSError:
            return "?"
