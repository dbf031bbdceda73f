#!/usr/bin/env python3
"""Two builds of nearcache side by side in one run: did a change cost speed?

    python3 bench/compare_builds.py OLD_BUILD OLD_VENV NEW_BUILD NEW_VENV [--rounds 5]

Runs the table, daemon and Django-client benchmarks of this tree against each
build in turn (old, new, new, old, ...: the order alternates so that drift in
the machine's load hurts both alike), takes the headline medians of every
round, and prints the median of rounds for each build with new/old ratios.
A build is a CMake build tree (its bench/ and daemon/ binaries); a venv is
the virtualenv with that build's Python client installed.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (benchmark, metric, regex on its output whose first group is the number; "lower" or "higher" is better)
SHM = [
    ("table", "hit, random key (ns)", r"get hit, random key \(cache-cold bucket\)\s+([\d.]+)", "lower"),
    ("table", "hit, Zipf(0.99) (ns)", r"get hit, Zipf\(0\.99\) keys\s+([\d.]+)", "lower"),
    ("table", "hit, one hot key (ns)", r"get hit, one hot key\s+([\d.]+)", "lower"),
    ("table", "miss (ns)", r"get miss\s+([\d.]+)", "lower"),
    ("table", "hit under a writer (ns)", r"get hit, writer rewriting the same keys\s+([\d.]+)", "lower"),
]
DAEMON = [
    ("daemon", "SET round trip (us)", r"^\s*nearcached\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s*$", "lower"),
    ("daemon", "GET round trip (us)", r"^\s*nearcached\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s*$", "lower"),
    ("daemon", "pipelined GETs, 1 process (/s)", r"^\s*nearcached\s+([\d,]+)\s+[\d,]+\s*$", "higher"),
]
T = r"([\d.]+ (?:ns|us|ms))"  # a latency with its unit, as client_django_backends.py prints it
DJANGO = [
    ("django", "NearCache get hit (us)", rf"^\s*NearCache\s+{T} /", "lower"),
    ("django", "NearCache get miss (us)", rf"^\s*NearCache\s+{T} / {T}\s+{T}", "lower", 3),
    ("django", "NearCache set (us)", rf"^\s*NearCache\s+{T} / {T}\s+{T} / {T}\s+{T}", "lower", 5),
    ("django", "NearCache get_many(10) (us)", rf"^\s*NearCache(?:\s+{T} / {T}){{3}}\s+{T}", "lower", 3),
    ("django", "decoded hit, CacheCore (us)", rf"nearcache hit, decoded \(CacheCore\)\s+{T}", "lower"),
]
UNITS = {"ns": 1e-3, "us": 1.0, "ms": 1e3}


def number(m: re.Match, group: int) -> float:
    """The matched figure; a latency with a unit is converted to microseconds."""
    text = m.group(group).replace(",", "")
    value, _, unit = text.partition(" ")
    return float(value) * UNITS.get(unit, 1.0)


def run(cmd: list[str], env: dict | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=HERE.parent)
    if p.returncode != 0:
        sys.exit(f"compare_builds: {' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p.stdout


def measure(build: Path, venv: Path) -> dict[str, float]:
    py = str(venv / "bin" / "python")
    env = {"NEARCACHE_BUILD": str(build)}
    outputs = [
        (SHM, run([str(build / "bench" / "bench_shm_reader"), "--rounds", "1"])),
        (DAEMON, run([py, str(HERE / "daemon_vs_redis_memcached.py"), "--rounds", "1"], env)),
        (DJANGO, run([py, str(HERE / "client_django_backends.py"), "--quick"], env)),
    ]
    got = {}
    for rows, out in outputs:
        for _, metric, rx, _, *group in rows:
            m = re.search(rx, out, re.M)
            if not m:
                sys.exit(f"compare_builds: no '{metric}' in the output:\n{out}")
            got[metric] = number(m, group[0] if group else 1)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_build", type=Path)
    ap.add_argument("old_venv", type=Path)
    ap.add_argument("new_build", type=Path)
    ap.add_argument("new_venv", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    builds = {"old": (a.old_build.resolve(), a.old_venv.resolve()), "new": (a.new_build.resolve(), a.new_venv.resolve())}
    samples: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for r in range(a.rounds):
        for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
            for metric, v in measure(*builds[which]).items():
                samples[which].setdefault(metric, []).append(v)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

    print(f"old build vs new build, {a.rounds} alternating rounds, median of rounds (ratio new/old; "
          "within 5 % = 0.95x-1.05x)")
    print(f"  {'benchmark':8} {'metric':34} {'old':>12} {'new':>12} {'new/old':>8}  verdict")
    worst = 0.0
    for bench, metric, _, better, *_ in SHM + DAEMON + DJANGO:
        old, new = (statistics.median(samples[w][metric]) for w in ("old", "new"))
        ratio = new / old if old else float("nan")
        cost = ratio if better == "lower" else 1 / ratio  # > 1 means the new build is slower
        worst = max(worst, cost)
        verdict = "ok" if cost <= 1.05 else "SLOWER"
        print(f"  {bench:8} {metric:34} {old:12,.2f} {new:12,.2f} {ratio:7.3f}x  {verdict}")
    print(f"worst slowdown: {worst:.3f}x ({'within' if worst <= 1.05 else 'outside'} 5 %)")


if __name__ == "__main__":
    main()
