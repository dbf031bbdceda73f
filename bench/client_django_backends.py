#!/usr/bin/env python3
"""NearCache against Django's cache backends, in one process tree and one run.

    NEARCACHE_BUILD=build .venv/bin/python bench/client_django_backends.py [--quick] [--output FILE]

Needs: the nearcache client installed in the venv, bench/requirements.txt,
redis-server and memcached on PATH (scripts/install-deps.sh bench). The
script starts its own nearcached, redis-server and memcached on Unix sockets
in a temporary directory and stops them at the end.

Measured with a 20-character key and a value whose msgpack encoding is 200
bytes (a dict of the kind views cache):
  1. a nearcache hit decoded to a Python value (CacheCore, NearCache's path)
     against a dict lookup plus msgpack.unpackb of the same 200 bytes;
  2. each backend: get hit, get miss, set, get_many of 10 (all hits): median
     and p99 of single calls (timer overhead subtracted), and aggregate hit
     gets per second from 1 and 2 processes.
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time

from servers import BenchServers, Report, bench_args

KEY = "user:profile:0001234"  # 20 characters
assert len(KEY) == 20
VALUE = {
    "id": 1234, "username": "jdoe", "email": "jdoe@example.com", "first_name": "John", "last_name": "Doe",
    "is_active": True, "score": 4.75, "groups": ["editors", "staff"],
    "bio": "Writes about caching, queues and the odd database!!!!!", "lang": "en-gb", "tz": "UTC",
}


def configure(servers: BenchServers) -> dict:
    nc, rs, mc = (servers.sockets[n] for n in ("nearcached", "redis-server", "memcached"))
    tmp = servers.tmp
    import django
    from django.conf import settings
    caches = {
        "NearCache": {"BACKEND": "nearcache.django.NearCache", "LOCATION": nc},
        "LocMemCache": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "bench",
                        "OPTIONS": {"MAX_ENTRIES": 100000}},
        "FileBasedCache": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                           "LOCATION": str(tmp / "filecache"), "OPTIONS": {"MAX_ENTRIES": 100000}},
        "RedisCache": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                       "LOCATION": f"unix://{rs}"},
        "django_redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"unix://{rs}?db=1"},
        "PyMemcacheCache": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                            "LOCATION": f"unix:{mc}"},
        "diskcache": {"BACKEND": "diskcache.DjangoCache", "LOCATION": str(tmp / "diskcache")},
    }
    settings.configure(CACHES={"default": caches["LocMemCache"], **caches}, USE_TZ=True, SECRET_KEY="bench")
    django.setup()
    return caches


def timer_overhead() -> float:
    pc = time.perf_counter_ns
    samples = []
    for _ in range(20000):
        t0 = pc()
        samples.append(pc() - t0)
    return statistics.median(samples)


def sample(fn, n: int, overhead: float) -> list[float]:
    pc = time.perf_counter_ns
    for _ in range(min(n, 2000)):  # warm up
        fn()
    out = []
    for _ in range(n):
        t0 = pc()
        fn()
        out.append(pc() - t0 - overhead)
    return out


def stats(s: list[float]) -> tuple[float, float]:
    return s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"


def throughput_worker(alias: str, seconds: float, start_at: float, q) -> None:
    from django.core.cache import caches
    # A new backend object, as a freshly forked worker would build: the parent's
    # objects may hold sockets that only NearCache knows not to share.
    c = caches.create_connection(alias)
    c.get(KEY)
    while time.monotonic() < start_at:
        time.sleep(0.0005)
    end = start_at + seconds
    n = 0
    get = c.get
    while time.monotonic() < end:
        for _ in range(100):
            get(KEY)
        n += 100
    q.put(n)


def aggregate_gets(alias: str, procs: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    start_at = time.monotonic() + 0.3
    ps = [ctx.Process(target=throughput_worker, args=(alias, seconds, start_at, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    total = sum(q.get(timeout=60) for _ in ps)
    for p in ps:
        p.join()
    return total / seconds


def main() -> None:
    args = bench_args()
    n_fast, n_slow, secs = (2000, 300, 0.5) if args.quick else (100000, 5000, 2.0)

    out = Report(args.output)

    with BenchServers() as servers:
        caches_cfg = configure(servers)
        import django
        import msgpack
        from django.core.cache import caches

        import nearcache
        packed = msgpack.packb(VALUE)
        assert len(packed) == 200, len(packed)
        overhead = timer_overhead()
        out("nearcache client benchmark: NearCache against Django cache backends")
        out(f"python {sys.version.split()[0]}, Django {django.get_version()}, nearcache {nearcache.__version__}, "
            f"msgpack {msgpack.version}, {os.cpu_count()} CPUs; key {len(KEY)} chars, value {len(packed)} B msgpack")
        out(f"single-call latencies, timer overhead ({overhead:.0f} ns) subtracted; {n_fast} get samples for "
            f"in-process backends, {n_slow} for the others (a quarter of that for set and get_many), "
            f"taken in 5 interleaved rounds")
        out()

        # 1. Decoded hit against dict + unpackb.
        nc = caches["NearCache"]
        nc.set(KEY, VALUE, None)
        getattr(nc._client, "flush", lambda: None)()  # a set may not wait for the daemon (older clients: it does)
        kb = nc._key(KEY)
        assert nc._nc_probe(kb) == (nearcache.client.HIT, VALUE)
        d = {KEY: packed}
        unpackb = msgpack.unpackb
        probe = nc._nc_probe
        seg_get = nc._client.segment.get
        pooled = {"dec": [], "dict": [], "raw": []}
        for _ in range(5):
            pooled["dec"] += sample(lambda: probe(kb), n_fast // 5, overhead)
            pooled["dict"] += sample(lambda: unpackb(d[KEY]), n_fast // 5, overhead)
            pooled["raw"] += sample(lambda: seg_get(kb), n_fast // 5, overhead)
        dec_hit, dict_unp, raw_hit = (stats(sorted(pooled[k])) for k in ("dec", "dict", "raw"))
        out("1. decoded hit vs dict + msgpack.unpackb (median / p99)")
        out(f"   nearcache hit, decoded (CacheCore) {fmt_ns(dec_hit[0]):>10} / {fmt_ns(dec_hit[1]):>10}")
        out(f"   dict lookup + msgpack.unpackb      {fmt_ns(dict_unp[0]):>10} / {fmt_ns(dict_unp[1]):>10}")
        out(f"   nearcache hit, bytes (Segment.get) {fmt_ns(raw_hit[0]):>10} / {fmt_ns(raw_hit[1]):>10}")
        out(f"   ratio decoded hit / dict+unpackb: {dec_hit[0] / dict_unp[0]:.2f}x (target <= 1.00x)")
        out()

        # 2. Backends. Samples are taken in rounds that visit every backend in
        # turn, so that load from other processes on the machine spreads over
        # all of them instead of skewing whichever ran at the time.
        rounds = 5
        ops = ("get hit", "get miss", "set", "get_many(10)")
        in_process = {"NearCache", "LocMemCache"}
        many = [f"{KEY[:-2]}{i:02d}" for i in range(10)]
        calls = {}
        samples = {alias: {op: [] for op in ops} for alias in caches_cfg}
        for alias in caches_cfg:
            c = caches[alias]
            c.set(KEY, VALUE, None)
            c.set_many({k: VALUE for k in many}, None)
            assert c.get(KEY) == VALUE, alias
            assert c.get_many(many) == {k: VALUE for k in many}, alias
            calls[alias] = {
                "get hit": lambda c=c: c.get(KEY),
                "get miss": lambda c=c: c.get("user:profile:missing"),
                "set": lambda c=c: c.set(KEY, VALUE, 300),
                "get_many(10)": lambda c=c: c.get_many(many),
            }
        for _ in range(rounds):
            for alias in caches_cfg:
                n = (n_fast if alias in in_process else n_slow) // rounds
                for op in ops:
                    k = n if op.startswith("get ") else max(n // 4, 60)
                    samples[alias][op] += sample(calls[alias][op], k, overhead)
        results = {}
        for alias in caches_cfg:
            r = {op: stats(sorted(samples[alias][op])) for op in ops}
            caches[alias].set(KEY, VALUE, None)
            r["gets/s 1 proc"] = aggregate_gets(alias, 1, secs)
            r["gets/s 2 procs"] = aggregate_gets(alias, 2, secs)
            results[alias] = r

        out("2. Django cache backends (median / p99 per call; aggregate hit gets per second)")
        head = f"   {'backend':<16}" + "".join(f"{op:>24}" for op in ("get hit", "get miss", "set", "get_many(10)")) \
            + f"{'gets/s 1 proc':>16}{'gets/s 2 procs':>16}"
        out(head)
        for alias, r in results.items():
            row = f"   {alias:<16}"
            for op in ("get hit", "get miss", "set", "get_many(10)"):
                row += f"{fmt_ns(r[op][0]) + ' / ' + fmt_ns(r[op][1]):>24}"
            row += f"{r['gets/s 1 proc']:>16,.0f}{r['gets/s 2 procs']:>16,.0f}"
            out(row)
        out()

        ncr = results["NearCache"]
        out("3. ratios, NearCache / other (median; lower is better for latency)")
        targets = {"LocMemCache": 0.3, "RedisCache": 0.1, "django_redis": 0.1, "diskcache": 0.2}
        for alias, r in results.items():
            if alias == "NearCache":
                continue
            ratio = ncr["get hit"][0] / r["get hit"][0]
            t = targets.get(alias)
            tgt = f" (target <= {t:.2f}x: {'met' if ratio <= t else 'NOT met'})" if t else ""
            out(f"   get hit   vs {alias:<16} {ratio:6.3f}x{tgt}")
        # Issue 13: a miss answered in the process (no Redis tier), a write that does not wait.
        for op, t in (("get miss", 1.0), ("set", 1.5)):
            ratio = ncr[op][0] / results["LocMemCache"][op][0]
            out(f"   {op:<9} vs LocMemCache      {ratio:6.3f}x (target <= {t:.2f}x: {'met' if ratio <= t else 'NOT met'})")
        for alias in ("django_redis", "RedisCache", "PyMemcacheCache"):
            ratio = ncr["set"][0] / results[alias]["set"][0]
            tgt = " (target <= 0.50x: " + ("met" if ratio <= 0.5 else "NOT met") + ")" if alias == "django_redis" else ""
            out(f"   set       vs {alias:<16} {ratio:6.3f}x{tgt}")
        for alias in ("LocMemCache", "RedisCache", "django_redis"):
            ratio = ncr["get_many(10)"][0] / results[alias]["get_many(10)"][0]
            out(f"   get_many  vs {alias:<16} {ratio:6.3f}x")
        out(f"   gets/s, 2 procs / 1 proc: NearCache {ncr['gets/s 2 procs'] / ncr['gets/s 1 proc']:.2f}, "
            f"LocMemCache {results['LocMemCache']['gets/s 2 procs'] / results['LocMemCache']['gets/s 1 proc']:.2f}")
    out.save()


if __name__ == "__main__":
    main()
