#!/usr/bin/env python3
"""Eviction quality of two builds side by side: bench_shm_hit_ratio of each.

    python3 bench/shm_hit_ratio_vs.py OLD_BUILD NEW_BUILD [--rounds 3] [-- ARGS...]

Runs OLD_BUILD/bench/bench_shm_hit_ratio and NEW_BUILD/bench/bench_shm_hit_ratio
in turn (old, new, new, old, ...), prints every run's output, then for each
row (alpha, cache share) the median over rounds of each build's table hit
ratio, "no hints" and LRU columns, and new - old in points. The target (issue
12, item 1) is the table's hit ratio within 1 point of the old build's.
ARGS go to both binaries (--keys, --requests, ...).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROW = re.compile(r"^(\d\.\d)\s+(\d+)\s+%\s+[\d.]+\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)%", re.M)


def run(which: str, build: Path, args: list[str]) -> dict:
    exe = build / "bench" / "bench_shm_hit_ratio"
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, check=True).stdout
    print(f"--- {which} build: bench_shm_hit_ratio {' '.join(args)}".rstrip(), flush=True)
    print(out, end="", flush=True)
    rows = {(m[1], m[2]): tuple(float(x) for x in m.groups()[2:]) for m in ROW.finditer(out)}
    if not rows:
        raise SystemExit(f"{exe}: no result rows in its output")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("args", nargs=argparse.REMAINDER)
    o = ap.parse_args()
    args = [a for a in o.args if a != "--"]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(o.rounds):
        for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
            runs[which].append(run(which, getattr(o, which), args))
    print(f"\nold build vs new build, {o.rounds} alternating rounds, median of rounds (hit ratio, %)")
    print("alpha  cache   old table  new table  new-old   old no-hints  new no-hints   LRU    verdict")
    worst = 0.0
    for key in runs["old"][0]:
        med = {w: [statistics.median(x[key][i] for x in runs[w]) for i in range(3)] for w in runs}
        spread = {w: max(x[key][0] for x in runs[w]) - min(x[key][0] for x in runs[w]) for w in runs}
        d = med["new"][0] - med["old"][0]
        worst = min(worst, d)
        print(f"{key[0]:<6} {key[1]:>3} %   {med['old'][0]:8.2f}   {med['new'][0]:8.2f}   {d:+6.2f}   "
              f"{med['old'][1]:11.2f}   {med['new'][1]:11.2f}   {med['new'][2]:6.2f}   "
              f"{'ok' if d >= -1.0 else 'LOST > 1 point'}  (spread old {spread['old']:.2f}, new {spread['new']:.2f})")
    print(f"largest loss: {-worst:.2f} points (target: at most 1)")
    return 0 if worst >= -1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
