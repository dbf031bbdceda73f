#!/usr/bin/env python3
"""Hit latency with the Redis tier configured equals hit latency without it.

    NEARCACHE_BUILD=build .venv/bin/python bench/redis_hit_latency.py [--keys 1000] [--rounds 5]

Two nearcached run side by side: one with redis_url (and a redis-server), one
without. Both hold the same keys. A hit never touches the daemon, let alone
Redis: the client reads it from shared memory. Measured through the public
API (`nearcache.Client.get`) and through the bare native reader
(`Client.segment.get`), in interleaved rounds (with, without, with, ...) so
that noise from elsewhere on the machine hits both alike; per-call latency
from batches of gets timed with perf_counter_ns; best round of each.
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
from support.redis_server import RedisServer  # noqa: E402
from support.tier import client, wait_coherent  # noqa: E402

BATCH = 100


def measure(fn, keys: list, batches: int) -> list[float]:
    """Nanoseconds per call, one sample per batch of BATCH calls."""
    out = []
    n = len(keys)
    j = 0
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(BATCH):
            fn(keys[j])
            j = j + 1 if j + 1 < n else 0
        out.append((time.perf_counter_ns() - t0) / BATCH)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=2000)
    args = ap.parse_args()
    from nearcache.client import HIT

    with tempfile.TemporaryDirectory(prefix="nc-bench-hits-") as tmp:
        r = RedisServer(tmp, aof=False)
        with_redis = Daemon(tmp, name="with-redis", redis_url=r.url, log_level="warn")
        without = Daemon(tmp, name="without", log_level="warn")
        try:
            wait_coherent(with_redis)
            clients = {"with Redis": client(with_redis), "without Redis": client(without)}
            keys = [f"user:{i:06d}:profile" for i in range(args.keys)]
            bkeys = [k.encode() for k in keys]
            value = msgpack.packb({"name": "x" * 100, "id": 12345, "tags": ["a", "b", "c"]})
            for c in clients.values():
                for k in keys:
                    c.set(k, value)
                for k in bkeys:  # all of them hits from shared memory
                    assert c.segment.get(k)[0] == HIT
            before = {name: c.status() for name, c in clients.items()}
            best: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for name, c in clients.items():
                    for api, fn, ks in (("Client.get", c.get, keys), ("segment.get", c.segment.get, bkeys)):
                        s = sorted(measure(fn, ks, args.batches))
                        if (name, api) not in best or statistics.median(s) < statistics.median(best[(name, api)]):
                            best[(name, api)] = s
            print(f"{os.uname().machine}, {os.cpu_count()} cores; {args.keys} keys, {len(value)}-byte value; "
                  f"{args.batches} batches of {BATCH} gets per round, best of {args.rounds} interleaved rounds")
            print("Hit latency, nanoseconds per get (median / p99 of the batch means; lower is better)")
            print(f"  {'API':<14}{'with Redis':>22}{'without Redis':>22}{'ratio':>9}")
            for api in ("Client.get", "segment.get"):
                w, wo = best[("with Redis", api)], best[("without Redis", api)]
                p99 = lambda s: s[min(len(s) - 1, int(len(s) * 0.99))]  # noqa: E731
                print(f"  {api:<14}{statistics.median(w):>12.0f} / {p99(w):>7.0f}{statistics.median(wo):>12.0f} / "
                      f"{p99(wo):>7.0f}{statistics.median(w) / statistics.median(wo):>8.2f}x")
            after = {name: c.status() for name, c in clients.items()}
            for name in clients:
                gets = after[name]["shm_hits_total"] - before[name]["shm_hits_total"]
                daemon = after[name]["daemon_hits_total"] + after[name]["misses_total"] - \
                    before[name]["daemon_hits_total"] - before[name]["misses_total"]
                extra = ""
                if name == "with Redis":
                    extra = (f", Redis read-throughs {after[name]['redis_readthrough_hits_total']}"
                             f" (GETs the daemon sent to Redis)")
                print(f"  {name}: {gets} hits counted in shared memory, {daemon} lookups reached the daemon{extra}")
            assert with_redis.stop() == 0 and without.stop() == 0
        finally:
            with_redis.kill()
            without.kill()
            r.kill()


if __name__ == "__main__":
    main()
