#!/usr/bin/env python3
"""Disruptions: does a host stay warm through them, and is no read staler than the bound?

    NEARCACHE_BUILD=build .venv/bin/python bench/disruption.py [--quick] [--events a,b] [--output FILE]

Two nearcached processes as two hosts share a real redis-server. On host A,
four forked workers read a Zipf(0.99) set of 10^5 keys through
`get_cached_data` backed by a fake database (a shared array of versions) that
counts its fetches; on host B a writer rewrites 100 random keys per second
(database first, then `cache.set`). Host A reaches Redis through a loopback
proxy that can cut and heal its link. Events, one per run, each run on fresh
servers:

  graceful   host A's daemon: SIGTERM, then started again
  kill9      host A's daemon: SIGKILL, then started again
  partition  host A cut from Redis for 10 s (the proxy), then healed
  redis      redis-server restarted (its AOF keeps the data)
  failover   a primary, a replica and a Sentinel, both hosts through the
             Sentinel; the primary is killed and the replica promoted

Each event runs twice in the same invocation: "near" (warm restart and
repair on: the defaults) and "cold" (warm_restart = false,
redis_stale_grace_ms = 0: the table is dropped as nearcache did before).

Printed per event and mode:
  before     host A's shared-memory hit ratio in the second before the event
  after 1s   the same in the first second after the event ended
  to 95%     seconds from the event's end until a 1 s window is back at 95 %
             of `before` ("never" within the run)
  min >1s    the lowest 1 s window ratio from 1 s after the end on (target:
             at least 95 % of before)
  fetches    database fetches the event caused: those from its start to 5 s
             after its end, less the rate before it
  stale      reads that returned a value older than the bound: a version v
             read (the read begun) more than the bound after host B had
             accepted version v+1, the bound being 3 x redis_heartbeat_ms +
             redis_stale_grace_ms, or heartbeat_grace_ms if longer (readers
             of a killed daemon's table) (must be 0)
and, per event, near's fetches as a share of cold's (target: at most 10 %).
DISRUPTION_TRACE=1 also prints, on stderr, the reads, hits and fetches of
every 100 ms around each event and host A's outage counters.
"""
from __future__ import annotations

import argparse
import bisect
import logging
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import NEARCACHED, Daemon, Report  # noqa: F401 (sys.path set there)

from support.redis_proxy import HoldingProxy  # noqa: E402
from support.redis_server import RedisServer, Sentinel  # noqa: E402
from support.tier import status  # noqa: E402
from support.wait import wait_for  # noqa: E402

N_KEYS = 100_000
WORKERS = 4
WRITES_PER_S = 100
HEARTBEAT_MS = 200          # detection: 3 x this
GRACE_MS = 20_000           # the default redis_stale_grace_ms
HEARTBEAT_GRACE_MS = 2000   # readers stop serving a table whose writer is silent this long
BUCKET_S = 0.1              # the timeline's resolution
PAD = "x" * 120             # a value of about 150 bytes
EVENTS = ("graceful", "kill9", "partition", "redis", "failover")


def zipf_sampler(n: int, s: float = 0.99):
    cum, total = [], 0.0
    for i in range(1, n + 1):
        total += 1.0 / i ** s
        cum.append(total)
    return lambda r: bisect.bisect_left(cum, r.random() * total)


def supports(option: str) -> bool:
    out = subprocess.run([str(NEARCACHED), "--help"], capture_output=True, text=True).stdout
    return f"--{option}=" in out


# -- the processes -----------------------------------------------------------
class Shared:
    """What the forked processes share: the database and the timeline."""

    def __init__(self, seconds: float):
        self.versions = mp.Array("q", N_KEYS, lock=False)   # the database: a version per key
        self.nb = int(seconds / BUCKET_S) + 1
        # Per worker and bucket: reads, shared-memory hits, database fetches.
        self.timeline = mp.Array("q", WORKERS * self.nb * 3, lock=False)
        self.t0 = time.monotonic()
        self.stop = mp.Event()
        self.go = mp.Event()


def _cache(socket_path: str):
    from nearcache.django import NearCache

    logging.getLogger("nearcache").setLevel(logging.ERROR)  # the outage warnings are expected here
    return NearCache(socket_path, {"OPTIONS": {"SOCKET_TIMEOUT": 1.0}})


def worker(sh: Shared, idx: int, socket_path: str, seed: int, stale_out) -> None:
    from nearcache import _native
    from nearcache.helpers import get_cached_data

    sh.go.wait()
    cache = _cache(socket_path)
    rnd = random.Random(seed)
    sample = zipf_sampler(N_KEYS)
    keys = [sample(rnd) for _ in range(200_000)]
    versions, tl, nb = sh.versions, sh.timeline, sh.nb
    base = idx * nb * 3
    candidates = []
    pos = 0
    last_hits = _native.Segment.totals()["hits"]
    fetched = 0

    def fetch(i):
        nonlocal fetched
        fetched += 1
        return {"v": versions[i], "pad": PAD}

    while not sh.stop.is_set():
        i = keys[pos]
        pos = (pos + 1) % len(keys)
        # Accounted to the bucket the read began in: a read that waits out an
        # outage must not carry the reads around it into another bucket.
        begun = time.monotonic()
        fetched = 0
        try:
            value = get_cached_data(f"k{i}", lambda i=i: fetch(i), timeout=86400, cache=cache)
        except Exception:  # noqa: BLE001 - a failed read counts as a read, never stale
            value = None
        # A value older than the database now is a candidate; the checker
        # compares when its successor was accepted with when this read began.
        if value is not None and value["v"] < versions[i]:
            candidates.append((begun, i, value["v"]))
        hits = _native.Segment.totals()["hits"]
        b = base + min(nb - 1, int((begun - sh.t0) / BUCKET_S)) * 3
        tl[b] += 1
        tl[b + 1] += hits - last_hits
        tl[b + 2] += fetched
        last_hits = hits
    stale_out.put(candidates)


def writer(sh: Shared, socket_path: str, log_out) -> None:
    sh.go.wait()
    cache = _cache(socket_path)
    rnd = random.Random(7)
    log = []  # (key, version, time host B accepted it)
    period = 1.0 / WRITES_PER_S
    nxt = time.monotonic()
    while not sh.stop.is_set():
        i = rnd.randrange(N_KEYS)
        sh.versions[i] += 1
        v = sh.versions[i]
        try:
            cache.set(f"k{i}", {"v": v, "pad": PAD}, 86400)
        except Exception:  # noqa: BLE001 - the database has it; the cache may not
            pass
        log.append((i, v, time.monotonic()))
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    log_out.put(log)


def proxy_process(directory: str, upstream: str, conn) -> None:
    """The loopback proxy in a process of its own (its threads stay out of the forked workers)."""
    p = HoldingProxy(directory, upstream, name="proxy-a")
    conn.send(p.url)
    for cmd in iter(conn.recv, "exit"):
        getattr(p, cmd)()
        conn.send("ok")
    p.close()


# -- one run -----------------------------------------------------------------
class Run:
    def __init__(self, event: str, mode: str, tmp: Path, quick: bool):
        self.event, self.mode, self.quick = event, mode, quick
        self.dir = tmp / f"{event}-{mode}"
        self.dir.mkdir()
        self.before_s = 3.0
        self.after_s = 4.0 if quick else 6.0
        self.servers = []

    def daemon_options(self) -> dict:
        o = dict(segment_size="96M", log_level="warn", redis_heartbeat_ms=HEARTBEAT_MS,
                 redis_reconnect_min_ms=20, redis_reconnect_max_ms=200, redis_stale_grace_ms=GRACE_MS,
                 heartbeat_grace_ms=HEARTBEAT_GRACE_MS)
        if self.mode == "cold":
            o["redis_stale_grace_ms"] = 0
            if supports("warm_restart"):
                o["warm_restart"] = "false"
        return o

    def topology(self):
        if self.event == "failover":
            self.primary = RedisServer(self.dir, "primary", tcp=True, loglevel="warning")
            self.replica = RedisServer(self.dir, "replica", tcp=True, loglevel="warning",
                                       replicaof=f"127.0.0.1 {self.primary.port}")
            self.servers += [self.primary, self.replica]
            wait_for(lambda: self.replica.client().info("replication").get("master_link_status") == "up", 10,
                     "the replica to sync")
            self.sentinel = Sentinel(self.dir, "s1", self.primary, "mymaster")
            self.servers.append(self.sentinel)
            wait_for(lambda: len(self.sentinel.command("SENTINEL", "replicas", "mymaster")) == 1, 10,
                     "the Sentinel to see the replica")
            via = dict(redis_sentinels=self.sentinel.addr, redis_sentinel_master="mymaster",
                       redis_sentinel_timeout_ms=200, redis_command_timeout_ms=300)
            url_a = url_b = None
        else:
            self.primary = RedisServer(self.dir, "redis", loglevel="warning")
            self.servers.append(self.primary)
            self.proxy_conn, child = mp.Pipe()
            self.proxy = mp.Process(target=proxy_process, args=(str(self.dir), self.primary.socket, child),
                                    daemon=True)
            self.proxy.start()
            url_a, url_b = self.proxy_conn.recv(), self.primary.url
            via = {}
        opts = self.daemon_options()
        self.a = Daemon(self.dir, "a", start=False, **opts, **via, **({"redis_url": url_a} if url_a else {}))
        self.b = Daemon(self.dir, "b", start=False, **opts, **via, **({"redis_url": url_b} if url_b else {}))
        return self

    def populate(self) -> None:
        """Every key in the database, in Redis and in both tables, before the readers start."""
        c = _cache(self.b.socket)
        items = {f"k{i}": {"v": 0, "pad": PAD} for i in range(N_KEYS)}
        keys = list(items)
        for j in range(0, N_KEYS, 2000):
            c.set_many({k: items[k] for k in keys[j:j + 2000]}, 86400)
        wait_for(lambda: status(self.b)["redis_queue_depth"] == 0, 60, "host B's writes to reach Redis")
        ca = _cache(self.a.socket)
        for j in range(0, N_KEYS, 2000):
            ca.get_many(keys[j:j + 2000])   # read through into host A's table

    def disrupt(self) -> None:
        e = self.event
        if e == "graceful":
            self.a.stop()
            self.a.start()
        elif e == "kill9":
            self.a.kill()
            self.a.start()
        elif e == "partition":
            self.proxy_conn.send("cut")
            self.proxy_conn.recv()
            time.sleep(3.0 if self.quick else 10.0)
            self.proxy_conn.send("heal")
            self.proxy_conn.recv()
        elif e == "redis":
            self.primary.restart()
        elif e == "failover":
            self.primary.kill()
            wait_for(lambda: self.sentinel.master_addr()[1] == self.replica.port, 30, "the Sentinel to fail over")

    def execute(self) -> dict:
        sh = Shared(600.0)  # from the fork: set-up, the run and the event itself
        stale_q, log_q = mp.Queue(), mp.Queue()
        # Fork before any server or thread exists in this process.
        procs = [mp.Process(target=worker, args=(sh, i, str(self.dir / "a.sock"), 100 + i, stale_q))
                 for i in range(WORKERS)]
        procs.append(mp.Process(target=writer, args=(sh, str(self.dir / "b.sock"), log_q)))
        for p in procs:
            p.start()
        try:
            self.topology()
            self.a.start()
            self.b.start()
            wait_for(lambda: all(status(d).get("redis_coherent") == 1 for d in (self.a, self.b)), 20,
                     "both hosts to receive invalidations")
            self.populate()
            sh.go.set()
            time.sleep(self.before_s + 2.0)  # 2 s to settle, then the "before" window
            start = time.monotonic()
            self.disrupt()
            end = time.monotonic()
            time.sleep(self.after_s)
            if os.environ.get("DISRUPTION_TRACE"):
                st = status(self.a)
                print(f"trace-status {self.event} {self.mode} " + " ".join(
                    f"{k}={v}" for k, v in sorted(st.items()) if isinstance(v, int) and v and (
                        "unavailable" in k or "local" in k or "repair" in k or "lease" in k or "dropped" in k)),
                    file=sys.stderr)
        finally:
            sh.stop.set()
            sh.go.set()
            candidates = [c for _ in range(WORKERS) for c in stale_q.get(timeout=60)]
            writes = log_q.get(timeout=60)
            for p in procs:
                p.join(10)
            for d in (getattr(self, "a", None), getattr(self, "b", None)):
                if d is not None:
                    d.kill()
            for s in self.servers:
                s.kill()
            if hasattr(self, "proxy"):
                self.proxy_conn.send("exit")
                self.proxy.join(5)
        return self.measure(sh, sh.t0, start, end, candidates, writes)

    def measure(self, sh: Shared, t0: float, start: float, end: float, candidates, writes) -> dict:
        tl, nb = sh.timeline, sh.nb

        def window(a: float, b: float):
            ba, bb = max(0, int((a - t0) / BUCKET_S)), min(nb, int((b - t0) / BUCKET_S))
            reads = hits = fetches = 0
            for w in range(WORKERS):
                base = w * nb * 3
                for k in range(ba, bb):
                    reads += tl[base + k * 3]
                    hits += tl[base + k * 3 + 1]
                    fetches += tl[base + k * 3 + 2]
            return reads, hits, fetches

        def ratio(a, b):
            r, h, _ = window(a, b)
            return h / r if r else 0.0

        if os.environ.get("DISRUPTION_TRACE"):  # per 100 ms around the event: reads, hits, fetches
            for k in range(int((start - 0.5 - t0) / BUCKET_S), int((end + 2.0 - t0) / BUCKET_S)):
                r, h, f = window(t0 + k * BUCKET_S, t0 + (k + 1) * BUCKET_S)
                print(f"trace {self.event} {self.mode} {t0 + k * BUCKET_S - start:+6.1f} {r:6d} {h:6d} {f:6d}",
                      file=sys.stderr)
        before = ratio(start - 1.0, start)
        after = ratio(end, end + 1.0)
        back = None
        t = end
        while t + 1.0 <= end + self.after_s:
            if ratio(t, t + 1.0) >= 0.95 * before:
                back = t - end
                break
            t += BUCKET_S
        lows = [ratio(t, t + 1.0) for t in frange(end + 1.0, end + self.after_s - 1.0, BUCKET_S)]
        _, _, f_before = window(start - 3.0, start)
        _, _, f_event = window(start, end + 5.0)
        caused = max(0.0, f_event - f_before / 3.0 * (end + 5.0 - start))
        # The stated bound (doc/redis.md): detection plus the grace; readers of
        # a crashed daemon's table serve it for up to heartbeat_grace_ms, with
        # no invalidation reaching it, whichever mode.
        bound = max(3 * HEARTBEAT_MS / 1000 + (GRACE_MS / 1000 if self.mode == "near" else 0),
                    HEARTBEAT_GRACE_MS / 1000)
        replaced_at = {(i, v): t for i, v, t in writes}
        stale = sum(1 for t, i, v in candidates
                    if (i, v + 1) in replaced_at and t - replaced_at[(i, v + 1)] > bound)
        return dict(before=before, after=after, back=back, low=min(lows) if lows else after, fetches=caused,
                    stale=stale, duration=end - start, reads=window(start - 3.0, end + self.after_s)[0])


def frange(a: float, b: float, step: float):
    while a <= b:
        yield a
        a += step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a 3 s partition and shorter windows (a smoke run)")
    ap.add_argument("--events", default=",".join(EVENTS), help=f"comma-separated subset of {','.join(EVENTS)}")
    ap.add_argument("--output", help="also write the report to this file")
    args = ap.parse_args()
    events = [e for e in args.events.split(",") if e]
    for e in events:
        if e not in EVENTS:
            raise SystemExit(f"unknown event {e!r}: one of {', '.join(EVENTS)}")
    import django
    from django.conf import settings

    settings.configure()
    django.setup()
    mp.set_start_method("fork")

    out = Report(args.output)
    out(f"# {time.strftime('%Y-%m-%d')} {os.uname().machine}, {os.cpu_count()} cores; "
        f"{WORKERS} readers (Zipf 0.99 over {N_KEYS} keys) on host A, {WRITES_PER_S} writes/s on host B")
    out(f"# bound: 3 x {HEARTBEAT_MS} ms + redis_stale_grace_ms ({GRACE_MS} ms near, 0 cold), at least "
        f"heartbeat_grace_ms ({HEARTBEAT_GRACE_MS} ms); "
        f"warm_restart option {'present' if supports('warm_restart') else 'ABSENT in this build'}")
    out(f"   {'event':<10} {'mode':<5} {'before':>7} {'after 1s':>9} {'to 95%':>7} {'min >1s':>8} "
        f"{'fetches':>8} {'stale':>6}")
    tmp = Path(tempfile.mkdtemp(prefix="nearcache-disruption-"))
    for e in events:
        res = {}
        for mode in ("near", "cold"):
            r = res[mode] = Run(e, mode, tmp, args.quick).execute()
            back = "never" if r["back"] is None else f"{r['back']:.1f}s"
            out(f"   {e:<10} {mode:<5} {r['before']:7.1%} {r['after']:9.1%} {back:>7} {r['low']:8.1%} "
                f"{r['fetches']:8.0f} {r['stale']:6d}")
        share = res["near"]["fetches"] / res["cold"]["fetches"] if res["cold"]["fetches"] else float("nan")
        low = res["near"]["low"] / res["near"]["before"] if res["near"]["before"] else float("nan")
        out(f"   {e:<10} near/cold fetches {share:6.1%} (target <= 10%); near min >1s / before {low:6.1%} "
            f"(target >= 95%); stale near {res['near']['stale']} (target 0), cold {res['cold']['stale']}")
    out.save()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
