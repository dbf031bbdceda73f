#!/usr/bin/env python3
"""The Redis tier on three topologies in one run: one server over plain TCP,
one server over TLS, and a Redis Cluster of three masters (plain TCP).

    NEARCACHE_BUILD=build .venv/bin/python bench/redis_topologies.py [--sets 20000] [--reads 5000] [--rounds 3]

Per topology, two nearcached hosts (a writer and a reader) on the same
Redis, and three measures:

  - write-behind: `Client.set` of 200-byte values one at a time on the
    writer, counted until its queue drained (every set acknowledged by Redis);
  - read-through: `Client.get` on the reader of keys only Redis has (each a
    local miss the daemon reads through), microseconds per call;
  - hit path: `segment.get` of the same keys once installed (shared memory,
    no syscall), nanoseconds per call in batches of 100.

Rounds alternate the topologies; the best round of each (highest rate,
lowest median) is printed with ratios to one server over TCP.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.nearcached import Daemon  # noqa: E402
from support.certs import make_pki  # noqa: E402
from support.redis_cluster import RedisCluster  # noqa: E402
from support.redis_server import RedisServer, free_port  # noqa: E402
from support.tier import client, wait_coherent, wait_flushed  # noqa: E402

BATCH = 100


def p99(s: list[float]) -> float:
    s = sorted(s)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def measure(name: str, url: str, tmp: Path, rnd: int, args, value: bytes, extra: dict) -> dict:
    opts = dict(redis_url=url, log_level="warn", segment_size="256M", **extra)
    w = Daemon(tmp, name=f"{name}-w{rnd}", **opts)
    r = Daemon(tmp, name=f"{name}-r{rnd}", **opts)
    try:
        wait_coherent(w, r, timeout=30)
        cw, cr = client(w), client(r)
        keys = [f"b:{rnd}:{i:07d}" for i in range(args.sets)]
        t0 = time.perf_counter()
        for k in keys:
            cw.set(k, value)
        wait_flushed(w, timeout=120)
        rate = len(keys) / (time.perf_counter() - t0)
        reads = keys[: args.reads]
        lat = []
        for k in reads:
            t = time.perf_counter_ns()
            v = cr.get(k)
            lat.append((time.perf_counter_ns() - t) / 1000)
            assert v == value, k
        bkeys = [k.encode() for k in reads]
        hits = []
        seg = cr.segment
        for i in range(0, len(bkeys) - BATCH + 1, BATCH):
            batch = bkeys[i:i + BATCH]
            t = time.perf_counter_ns()
            for k in batch:
                seg.get(k)
            hits.append((time.perf_counter_ns() - t) / BATCH)
        assert all(seg.get(k)[1] == value for k in bkeys[:100])
        assert w.stop() == 0 and r.stop() == 0
        return {"rate": rate, "rt": lat, "hit": hits}
    finally:
        w.kill()
        r.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=int, default=20_000)
    ap.add_argument("--reads", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    value = msgpack.packb("v" * 198)
    with tempfile.TemporaryDirectory(prefix="nc-bench-topo-") as tmp_s:
        tmp = Path(tmp_s)
        certs = make_pki(Path(tempfile.mkdtemp(dir=tmp)))
        plain = RedisServer(tmp, name="plain", tcp=True, aof=False)
        port = free_port()
        tls = RedisServer(tmp, name="tls", aof=False, tls_port=port, tls_cert_file=certs / "server.crt",
                          tls_key_file=certs / "server.key", tls_ca_cert_file=certs / "ca.crt",
                          tls_auth_clients="no")
        cluster = RedisCluster(tmp / "cluster", masters=3)
        topologies = [
            ("one server, TCP", "tcp", plain.tcp_url(), {}),
            ("one server, TLS", "tls", f"rediss://localhost:{port}", {"redis_tls_ca_file": certs / "ca.crt"}),
            ("cluster of 3, TCP", "cluster", cluster.url, {}),
        ]
        best: dict[str, dict] = {}
        try:
            for rnd in range(args.rounds):
                for name, slug, url, extra in topologies:
                    m = measure(slug, url, tmp, rnd, args, value, extra)
                    b = best.setdefault(name, {"rate": 0.0})
                    b["rate"] = max(b["rate"], m["rate"])
                    for k in ("rt", "hit"):
                        if k not in b or statistics.median(m[k]) < statistics.median(b[k]):
                            b[k] = m[k]
                for c in [plain.client(), tls.client()] + [n.client() for n in cluster.masters()]:
                    c.flushall()
        finally:
            plain.kill()
            tls.kill()
            cluster.kill()
    base = best[topologies[0][0]]
    print(f"{os.uname().machine}, {os.cpu_count()} cores; {args.sets} sets and {args.reads} read-throughs of "
          f"{len(value)}-byte values per round, best of {args.rounds} interleaved rounds; every Redis on 127.0.0.1")
    print(f"  {'topology':<20}{'write-behind sets/s':>21}{'ratio':>7}{'read-through us med/p99':>26}{'ratio':>7}"
          f"{'shm hit ns med/p99':>21}{'ratio':>7}")
    for name, _, _, _ in topologies:
        b = best[name]
        print(f"  {name:<20}{b['rate']:>21.0f}{b['rate'] / base['rate']:>6.2f}x"
              f"{statistics.median(b['rt']):>17.1f} / {p99(b['rt']):>6.1f}"
              f"{statistics.median(b['rt']) / statistics.median(base['rt']):>6.2f}x"
              f"{statistics.median(b['hit']):>12.0f} / {p99(b['hit']):>6.0f}"
              f"{statistics.median(b['hit']) / statistics.median(base['hit']):>6.2f}x")


if __name__ == "__main__":
    main()
