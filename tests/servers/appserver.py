"""Real HTTP servers running ncapp (tests/servers/app) for the real-server tests,
and the load that the tests drive through them.

    with AppServer(tmp_path, "gevent", env={"NCAPP_LOCATION": d.socket}) as srv:
        srv.get("/set/k/v")                    # -> Reply(status, json, seconds, error)
        srv.worker_pids()                      # the processes that serve requests
        with Load(srv, threads=4) as load: ... # requests in a loop until the block ends
        load.samples                           # one Sample per request

Kinds: "sync", "gthread" and "gevent" are gunicorn's worker classes (WSGI,
sync views); "uvicorn" is uvicorn with the same number of worker processes
(ASGI, the async views under /async/). Every server listens on a free port
of 127.0.0.1 and runs in its own process group, killed whole when it stops,
so that no worker outlives a test.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from support.process import ChildProcess
from support.redis_server import free_port

APP_DIR = Path(__file__).resolve().parent / "app"
KINDS = ("sync", "gthread", "gevent", "uvicorn")
HTTP_TIMEOUT = 10.0  # a request that takes longer is recorded as failed: it hung


@dataclass
class Reply:
    status: int | None       # None: no HTTP answer within HTTP_TIMEOUT (or refused)
    body: dict | str | None
    seconds: float
    error: str = ""


@dataclass
class Sample:
    start: float             # time.monotonic() when sent
    end: float
    op: str                  # "set", "miss" (get of a key never written), "marker" (get of the marker)
    key: str
    value: str | None        # set: the value written; get: the value the view returned
    status: int | None
    pid: int | None
    error: str = ""
    cache_s: float | None = None  # the cache call's own time, measured in the view


class AppServer(ChildProcess):
    log_tail = 6000

    def __init__(self, directory, kind: str, workers: int = 2, threads: int = 4, env: dict | None = None,
                 start: bool = True):
        assert kind in KINDS, kind
        self.kind = kind
        self.workers = workers
        self.threads = threads
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.dir = Path(directory)
        self.log_path = self.dir / f"{kind}.log"
        self.port = 0
        self.prefix = "/async" if kind == "uvicorn" else ""
        if start:
            self.start()

    def args(self) -> list[str]:
        py = sys.executable
        if self.kind == "uvicorn":
            return [py, "-m", "uvicorn", "ncapp.asgi:application", "--app-dir", str(APP_DIR), "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", str(self.workers), "--no-access-log",
                    "--log-level", "warning"]
        args = [py, "-m", "gunicorn", "ncapp.wsgi:application", "--chdir", str(APP_DIR), "--bind",
                f"127.0.0.1:{self.port}", "--workers", str(self.workers), "--worker-class", self.kind,
                "--timeout", "60", "--graceful-timeout", "2", "--log-level", "warning"]
        if self.kind == "gthread":
            args += ["--threads", str(self.threads)]
        if self.kind == "gevent":
            args += ["--worker-connections", "2000"]
        return args

    def start(self, timeout: float = 30.0) -> "AppServer":
        self.port = free_port()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ncapp.settings", "PYTHONPATH": str(APP_DIR), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._started()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log()}")
            if self.get("/status", timeout=1.0).status == 200 and len(self.worker_pids()) == self.workers:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.kind} did not serve within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        rc = super().stop(timeout)
        self._kill_group()
        return rc

    def kill(self) -> None:
        super().kill()
        self._kill_group()

    def _kill_group(self) -> None:
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers the master left behind
            except ProcessLookupError:
                pass

    def __exit__(self, *exc) -> None:
        self.stop()

    def worker_pids(self) -> set[int]:
        """The master's child processes that are workers (uvicorn's supervisor also
        has multiprocessing's helpers as children: those are not)."""
        if not self.proc:
            return set()
        pids = set()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                cmdline = (d / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"resource_tracker" not in cmdline:
                pids.add(int(d.name))
        return pids

    # -- requests ------------------------------------------------------------
    def get(self, path: str, timeout: float = HTTP_TIMEOUT) -> Reply:
        """GET path (the async form under uvicorn); JSON bodies are decoded."""
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", self.prefix + path if path != "/status" else path)
            r = conn.getresponse()
            raw = r.read()
            body = json.loads(raw) if r.getheader("Content-Type", "").startswith("application/json") \
                else raw.decode(errors="replace")
            return Reply(r.status, body, time.monotonic() - t0)
        except (OSError, http.client.HTTPException, ValueError) as e:
            return Reply(None, None, time.monotonic() - t0, f"{type(e).__name__}: {e}")
        finally:
            conn.close()


class Load:
    """`threads` clients, each sending set / miss / marker requests back to back
    (one HTTP connection each) until the `with` block ends. Every set writes a
    key of its own (tag-thread-seq), so a test can check each write later."""

    def __init__(self, server: AppServer, threads: int, tag: str, marker: str = "marker", limit: float = 60.0):
        self.server = server
        self.tag = tag
        self.marker = marker
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit  # a bound on the loop whatever the test does
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(HTTP_TIMEOUT + 5)

    def _run(self, i: int) -> None:
        seq = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            seq += 1
            key = f"{self.tag}-{i}-{seq}"
            for op, path, value in (("set", f"/set/{key}/v{seq}", f"v{seq}"), ("miss", f"/get/absent-{key}", None),
                                    ("marker", f"/get/{self.marker}", None)):
                t0 = time.monotonic()
                r = self.server.get(path)
                body = r.body if isinstance(r.body, dict) else {}
                s = Sample(t0, t0 + r.seconds, op, key if op == "set" else path, value if op == "set"
                           else body.get("value"), r.status, body.get("pid"), r.error or
                           ("" if r.status == 200 else str(r.body)[-300:]),
                           body["cache_ms"] / 1e3 if "cache_ms" in body else None)
                with self._lock:
                    self.samples.append(s)

    def between(self, start: float, end: float = float("inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if start <= s.start < end]
