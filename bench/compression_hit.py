#!/usr/bin/env python3
"""The hit of a 20 KB compressible value with and without COMPRESSOR, and the memory saved.

    NEARCACHE_BUILD=build .venv/bin/python bench/compression_hit.py [--quick] [--output FILE]

One nearcached (started here, in a temporary directory) and one NearCache per
setting: no compression, zlib, zstd, lz4 (decompressed natively on the hit
path) and lzma (decompressed by Python's lzma). The value is what a view
caches: 135 rows of a queryset's values(), about 20 KB of msgpack.

  1. `cache.get(key)` served from shared memory: median and p99 of single
     calls (timer overhead subtracted), samples taken in rounds that visit
     every setting in turn; the ratio to no compression.
  2. Decompression alone (the frame to bytes, no msgpack decoding), the
     part of 1. that compression adds.
  3. Memory: the stored size of the value, and the daemon's memory_used_bytes
     for 1000 such keys (headers included), against no compression.

The machine's load average is printed: on a shared machine the p99s are the
scheduler's more than the hit's; compare the medians.
"""
from __future__ import annotations

import os
import random
import sys

from servers import Daemon, NEARCACHED, Report, bench_args

from client_django_backends import fmt_ns, sample, stats, timer_overhead

SETTINGS = [("none", None), ("zlib", "zlib"), ("zstd", "zstd"), ("lz4", "lz4"), ("lzma", "lzma")]
KEY = "report:monthly:2024-05"
N_KEYS = 1000


def make_value() -> list:
    rnd = random.Random(16)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
             "kilo", "lima", "mike", "november", "oscar", "papa"]
    cities = ["Lyon", "Porto", "Gdansk", "Leeds", "Turin", "Graz", "Malmo", "Cork"]
    return [{"id": 10000 + i, "title": " ".join(rnd.choice(words) for _ in range(4)).title(),
             "author": f"user{rnd.randrange(500):03d}", "city": rnd.choice(cities),
             "score": round(rnd.uniform(0, 5), 2), "views": rnd.randrange(100000),
             "published": f"2024-05-{rnd.randrange(1, 29):02d}T{rnd.randrange(24):02d}:00:00Z",
             "tags": rnd.sample(words, 3), "active": rnd.random() < 0.8}
            for i in range(135)]


def status(socket: str) -> dict:
    from support.rawproto import RawConn
    with RawConn(socket) as c:
        return c.status()


def main() -> None:
    args = bench_args()
    n, rounds = (2000, 2) if args.quick else (50000, 5)

    import tempfile
    from pathlib import Path

    import django
    from django.conf import settings
    settings.configure(CACHES={}, SECRET_KEY="bench")
    django.setup()
    import nearcache
    from nearcache import compression as C
    from nearcache import packb
    from nearcache.client import HIT
    from nearcache.django import NearCache

    out = Report(args.output)
    value = make_value()
    plain = packb(value)
    tmp = Path(tempfile.mkdtemp(prefix="nearcache-bench-"))
    d = Daemon(tmp, name="nearcached", segment_size="256M", log_level="warn")
    try:
        caches = {name: NearCache(d.socket, {"KEY_PREFIX": name, "OPTIONS": {"COMPRESSOR": comp,
                                                                             "SYNC_WRITES": True, "STRICT": True,
                                                                             "SOCKET_TIMEOUT": 30}})
                  for name, comp in SETTINGS}
        overhead = timer_overhead()
        out("nearcache benchmark: the hit of a 20 KB compressible value, with and without COMPRESSOR")
        out(f"python {sys.version.split()[0]}, nearcache {nearcache.__version__}, {os.cpu_count()} CPUs, "
            f"{NEARCACHED.name}; value: 135 rows, {len(plain)} B msgpack; COMPRESS_MIN_BYTES 1024, default levels")
        out(f"cache.get hits from shared memory, {n} samples per setting in {rounds} interleaved rounds, "
            f"timer overhead ({overhead:.0f} ns) subtracted; load average at start "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        out()
        stored, used, frames = {}, {}, {}
        for name, c in caches.items():
            c.set(KEY, value, None)
            kb = c.make_key(KEY).encode()
            data, flags = c._client.fetch(kb)[:2]
            stored[name] = len(data)
            frames[name] = (C.codec_of(flags), data)
            assert c.get(KEY) == value and c._nc_probe(kb)[0] == HIT, name
            before = status(d.socket)["memory_used_bytes"]
            c.set_many({f"{KEY}:{i}": value for i in range(N_KEYS)}, None)
            used[name] = status(d.socket)["memory_used_bytes"] - before
        samples = {name: [] for name in caches}
        dec = {name: [] for name in caches if name != "none"}
        for _ in range(rounds):
            for name, c in caches.items():
                samples[name] += sample(lambda g=c.get: g(KEY), n // rounds, overhead)
            for name in dec:
                codec, frame = frames[name]
                dec[name] += sample(lambda f=frame, k=codec: C.decompress(k, f), n // rounds // 4, overhead)
        res = {name: stats(sorted(s)) for name, s in samples.items()}
        base = res["none"]
        out("1. cache.get hit (median / p99), and against no compression")
        out(f"   {'setting':8} {'median':>10} {'p99':>10} {'median x':>9} {'p99 x':>7}")
        for name, (med, p99) in res.items():
            out(f"   {name:8} {fmt_ns(med):>10} {fmt_ns(p99):>10} {med / base[0]:>8.2f}x {p99 / base[1]:>6.2f}x")
        out()
        out("2. decompression alone, frame -> bytes (median / p99); zlib, zstd, lz4 native, lzma Python's")
        for name, s_ in dec.items():
            med, p99 = stats(sorted(s_))
            out(f"   {name:8} {fmt_ns(med):>10} {fmt_ns(p99):>10}")
        out()
        out(f"3. memory: one value stored, and memory_used_bytes for {N_KEYS} keys (item headers included)")
        out(f"   {'setting':8} {'stored':>9} {'ratio':>6} {'1000 keys':>11} {'saved':>11} {'saved %':>8}")
        for name in caches:
            saved = used["none"] - used[name]
            out(f"   {name:8} {stored[name]:>7} B {stored[name] / stored['none']:>6.3f} {used[name] / 1e6:>8.2f} MB "
                f"{saved / 1e6:>8.2f} MB {100 * saved / used['none']:>7.1f}%")
    finally:
        d.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    out.save()


if __name__ == "__main__":
    main()
