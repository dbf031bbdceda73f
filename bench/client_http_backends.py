#!/usr/bin/env python3
"""End to end: gunicorn serving Django views on each cache backend, loaded by wrk.

    NEARCACHE_BUILD=build .venv/bin/python bench/client_http_backends.py [--quick] [--output FILE]

Needs: the nearcache client in the venv, gunicorn (requirements-dev.txt),
bench/requirements.txt, wrk, redis-server and memcached on PATH
(scripts/install-deps.sh bench). The script starts nearcached, redis-server
and memcached on Unix sockets in a temporary directory (bench/servers.py),
and one gunicorn per backend (2 sync workers, on 127.0.0.1) serving the app
of the real-server tests (tests/servers/app, ncapp); everything is stopped
at the end.

Views (ncapp's):
  fragments  ten cached ~200 B fragments read with one get_many
  throttle   DRF's throttle: read a list under one key, prepend, write it back
wrk: 1 thread, 8 connections, a 2 s warm-up then 8 s measured, per backend
and view; three rounds, each visiting every backend (the order reversed
every other round) so that load from elsewhere spreads over all of them.
Reported: the median over rounds of requests per second, and of wrk's 50th
and 99th percentile latencies; ratios of requests per second to LocMem and
to django-redis.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from servers import BenchServers, Report, bench_args

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "tests" / "servers" / "app"
VIEWS = ("fragments", "throttle")
TARGETS = {"LocMemCache": 1.0, "django_redis": 1.5}  # NearCache's req/s at least this many times theirs (issue 13)


def backends(servers: BenchServers) -> dict[str, dict]:
    """ncapp's environment (NCAPP_CACHE, NCAPP_LOCATION) for each backend compared."""
    nc, rs, mc = (servers.sockets[n] for n in ("nearcached", "redis-server", "memcached"))
    return {
        "NearCache": {"NCAPP_CACHE": "nearcache", "NCAPP_LOCATION": nc},
        "LocMemCache": {"NCAPP_CACHE": "locmem"},
        "django_redis": {"NCAPP_CACHE": "django_redis", "NCAPP_LOCATION": f"unix://{rs}?db=1"},
        "RedisCache": {"NCAPP_CACHE": "redis", "NCAPP_LOCATION": f"unix://{rs}?db=2"},
        "PyMemcacheCache": {"NCAPP_CACHE": "pymemcache", "NCAPP_LOCATION": f"unix:{mc}"},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """gunicorn with 2 sync workers serving ncapp on one backend, in its own process group."""

    def __init__(self, name: str, env: dict, log: Path):
        self.name = name
        self.port = free_port()
        args = [sys.executable, "-m", "gunicorn", "ncapp.wsgi:application", "--chdir", str(APP_DIR),
                "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--worker-class", "sync",
                "--log-level", "warning", "--timeout", "60"]
        full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ncapp.settings", "PYTHONPATH": str(APP_DIR), **env}
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(args, env=full_env, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.log = log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn for {self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("status"), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"gunicorn for {self.name} did not serve")

    def check(self) -> None:
        """Each view answers as it should (the numbers are of working views)."""
        for _ in range(2):  # the first fragments request builds them, the second reads them
            with urllib.request.urlopen(self.url("fragments"), timeout=5) as r:
                page = r.read().decode()
        assert page.count('class="fragment"') == 10, (self.name, page[:200])
        with urllib.request.urlopen(self.url("throttle?ident=check"), timeout=5) as r:
            assert r.status == 200, self.name

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker that outlived its master
        except ProcessLookupError:
            pass


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, seconds: float) -> dict:
    """One wrk run (1 thread, 8 connections): req/s and the 50th/99th percentile latencies in ms."""
    r = subprocess.run(["wrk", "-t1", "-c8", f"-d{seconds:g}s", "--latency", url], capture_output=True,
                       text=True, timeout=seconds + 30)
    out = r.stdout
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr or out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failures on {url}:\n{out}")
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}


def main() -> None:
    args = bench_args("one round of 1 s warm-up + 2 s (a smoke run)")
    rounds, warm, secs = (1, 1, 2) if args.quick else (3, 2, 8)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: scripts/install-deps.sh bench")

    out = Report(args.output)

    import django
    import gunicorn

    import nearcache
    with BenchServers() as servers:
        envs = backends(servers)
        apps: dict[str, Gunicorn] = {}
        try:
            for name, env in envs.items():
                apps[name] = Gunicorn(name, env, servers.tmp / f"gunicorn-{name}.log")
            for app in apps.values():
                app.wait_ready()
                app.check()
            out("nearcache end-to-end benchmark: gunicorn (2 sync workers) + Django views, loaded by wrk")
            out(f"python {sys.version.split()[0]}, Django {django.get_version()}, gunicorn {gunicorn.__version__}, "
                f"nearcache {nearcache.__version__}, {os.cpu_count()} CPUs; wrk 1 thread, 8 connections, "
                f"{warm} s warm-up + {secs} s measured, {rounds} round(s) alternating backends; loopback TCP, "
                f"the caches on Unix sockets")
            out()
            results = {name: {v: [] for v in VIEWS} for name in envs}
            for r in range(rounds):
                order = list(envs) if r % 2 == 0 else list(reversed(envs))
                for name in order:
                    for view in VIEWS:
                        wrk(apps[name].url(view), warm)
                        results[name][view].append(wrk(apps[name].url(view), secs))
        finally:
            for app in apps.values():
                app.stop()

    med = {name: {v: {k: statistics.median(s[k] for s in results[name][v]) for k in ("rps", "p50", "p99")}
                  for v in VIEWS} for name in results}
    for view in VIEWS:
        out(f"{view}: median over rounds")
        out(f"   {'backend':<16}{'req/s':>10}{'p50':>10}{'p99':>10}{'/ LocMem':>10}{'/ django_redis':>16}")
        for name, m in med.items():
            v = m[view]
            out(f"   {name:<16}{v['rps']:>10,.0f}{v['p50']:>8.2f}ms{v['p99']:>8.2f}ms"
                f"{v['rps'] / med['LocMemCache'][view]['rps']:>9.2f}x"
                f"{v['rps'] / med['django_redis'][view]['rps']:>15.2f}x")
        for other, target in TARGETS.items():
            ratio = med["NearCache"][view]["rps"] / med[other][view]["rps"]
            out(f"   NearCache / {other}: {ratio:.2f}x req/s (target >= {target:.1f}x: "
                f"{'met' if ratio >= target else 'NOT met'})")
        out()
    if rounds > 1:
        out("req/s per round (spread):")
        for name in results:
            out(f"   {name:<16}" + "   ".join(
                f"{view} " + " ".join(f"{s['rps']:,.0f}" for s in results[name][view]) for view in VIEWS))
    out.save()


if __name__ == "__main__":
    main()
