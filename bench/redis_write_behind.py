#!/usr/bin/env python3
"""Sets through nearcached's write-behind against direct redis-py sets, in one run.

    NEARCACHE_BUILD=build .venv/bin/python bench/redis_write_behind.py [--sets 50000] [--rounds 3]

One redis-server and one nearcached with redis_url, both on Unix sockets. The
same keys and values (msgpack, 200 bytes) are set:

  - nearcache: `nearcache.Client.set`, one call at a time: answered once the
    daemon applied it to its table and queued it; the daemon pipelines the
    queue to Redis behind the client's back. "in Redis" is the rate counted
    until the queue has drained (every set acknowledged by Redis too);
  - redis-py: `redis.Redis.set`, one call at a time: a round trip to Redis;
  - batched: nearcache `set_many` of 100 against a redis-py pipeline of 100.

Rounds alternate (nearcache, redis-py, nearcache, ...); the best of each.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.nearcached import Daemon  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from support.tier import client, status, wait_coherent, wait_flushed  # noqa: E402

BATCH = 100


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = args.sets
    value = msgpack.packb("v" * 198)
    assert len(value) == 200
    with tempfile.TemporaryDirectory(prefix="nc-bench-wb-") as tmp:
        r = RedisServer(tmp, aof=False)
        d = Daemon(tmp, name="nc", redis_url=r.url, log_level="warn", segment_size="256M")
        try:
            wait_coherent(d)
            nc = client(d)
            rp = r.client()
            results: dict[str, float] = {}

            def best(name: str, rate: float) -> None:
                results[name] = max(results.get(name, 0.0), rate)

            for rnd in range(args.rounds):
                keys = [f"wb:{rnd}:{i:07d}" for i in range(n)]
                t0 = time.perf_counter()
                for k in keys:
                    nc.set(k, value)
                t1 = time.perf_counter()
                wait_flushed(d, timeout=120)
                t2 = time.perf_counter()
                best("nearcache set (acknowledged)", n / (t1 - t0))
                best("nearcache set (in Redis)", n / (t2 - t0))

                rkeys = [b"direct:%d:%07d" % (rnd, i) for i in range(n)]
                t0 = time.perf_counter()
                for k in rkeys:
                    rp.set(k, value)
                best("redis-py set", n / (time.perf_counter() - t0))

                t0 = time.perf_counter()
                for i in range(0, n, BATCH):
                    nc.set_many({k: value for k in keys[i:i + BATCH]})
                t1 = time.perf_counter()
                wait_flushed(d, timeout=120)
                t2 = time.perf_counter()
                best(f"nearcache set_many({BATCH}) (acknowledged)", n / (t1 - t0))
                best(f"nearcache set_many({BATCH}) (in Redis)", n / (t2 - t0))

                t0 = time.perf_counter()
                for i in range(0, n, BATCH):
                    p = rp.pipeline(transaction=False)
                    for k in rkeys[i:i + BATCH]:
                        p.set(k, value)
                    p.execute()
                best(f"redis-py pipeline({BATCH})", n / (time.perf_counter() - t0))
            st = status(d)
            assert st["redis_queue_dropped_total"] == 0 and st["redis_queue_failed_total"] == 0
            assert rp.get(f"nearcache:wb:0:{n - 1:07d}".encode()) == value
            print(f"{os.uname().machine}, {os.cpu_count()} cores; {n} sets of a 200-byte value per measurement, "
                  f"one client thread; best of {args.rounds} alternating rounds")
            print("Sets per second (higher is better)")
            for name, rate in results.items():
                print(f"  {name:<44}{rate:>12,.0f}")
            ack, direct = results["nearcache set (acknowledged)"], results["redis-py set"]
            print(f"  one at a time: nearcache acknowledges {ack / direct:.2f}x as many sets per second as redis-py "
                  f"gets answered; everything is in Redis at "
                  f"{results['nearcache set (in Redis)'] / direct:.2f}x redis-py's rate")
            print(f"  write-behind coalesced {st['redis_queue_coalesced_total']}, flushed "
                  f"{st['redis_queue_flushed_total']}, dropped {st['redis_queue_dropped_total']}")
            assert d.stop() == 0
        finally:
            d.kill()
            r.kill()


if __name__ == "__main__":
    main()
