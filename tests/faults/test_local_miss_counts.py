"""Local misses are counted once (issue 12, item 1's counters): a definite
miss a reader process answers itself (nothing in an authoritative table)
never reaches the daemon, so the process counts it in its hit region
(`local_misses`) and STATUS adds it to `misses_total` and the hit ratios
(`shm_local_misses_total` alone). A lie there moves the count only by what
one process could plausibly do, like the region's other counters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from support.nearcached import Daemon
from support.rawproto import OK, SET, RawConn, mp

from test_hints import MAX_PER_MS, MAGIC, memfd, register, wait_for

# A worker: H hits and N definite misses with the client, then H2 hits and
# N2 definite misses (get and get_many) with the Django backend; reports the
# counts its process recorded.
WORKER = r"""
import json, sys
from django.conf import settings
settings.configure(USE_TZ=False, CACHES={"default": {"BACKEND": "nearcache.django.NearCache",
                                                     "LOCATION": sys.argv[1]}})
from django.core.cache import cache
from nearcache import Client
from nearcache._native import Segment
h, n = int(sys.argv[2]), int(sys.argv[3])
c = Client(sys.argv[1])
c.set(b"present", b"v")
got = [c.get(b"present") for _ in range(h)] + [c.get(b"absent%d" % i) for i in range(n)]
assert got[:h] == [b"v"] * h and got[h:] == [None] * n, got
cache.set("dj", 1)
dj = [cache.get("dj") for _ in range(h)] + [cache.get("nope%d" % i) for i in range(n)]
assert dj == [1] * h + [None] * n, dj
assert cache.get_many(["dj", "gone1", "gone2"]) == {"dj": 1}
print(json.dumps(dict(Segment.totals(), shm=c.segment.is_open)), flush=True)
c.close()
"""


def status(d: Daemon) -> dict:
    with RawConn(d.socket) as c:
        return c.status()


def test_a_workers_local_misses_show_in_misses_total_and_the_hit_ratio(tmp_path):
    h, n = 30, 40
    with Daemon(tmp_path) as d:  # no Redis tier: the table is authoritative
        before = status(d)
        assert before["shm_authoritative"] == 1 and before["misses_total"] == 0
        out = subprocess.run([sys.executable, "-c", WORKER, d.socket, str(h), str(n)], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert out.returncode == 0, out.stderr
        totals = json.loads(out.stdout)
        assert totals["shm"], totals
        # Client.get: n; the backend's get (native path): n; its get_many: 2.
        local = 2 * n + 2
        assert totals["local_misses"] == local, totals
        # The worker closed its connections: its region was read a last time.
        assert wait_for(lambda: status(d)["reader_processes"] == 0, 10)
        s = status(d)
        assert s["shm_local_misses_total"] == local, s
        assert s["misses_total"] == local, s  # the daemon itself saw no miss
        assert s["shm_misses_total"] >= local, s
        # Hits: from shared memory (counted in the region) or the daemon; a get
        # answered from this process's own unacknowledged write counts nowhere.
        hits = s["hits_total"]
        assert totals["hits"] > 0 and hits >= totals["hits"], (s, totals)
        assert abs(s["hit_ratio"] - hits / (hits + local)) < 1e-3, s
        assert 0 < s["hit_ratio_1m"] < 1, s


def test_a_lie_about_local_misses_is_clamped(tmp_path):
    with Daemon(tmp_path) as d, RawConn(d.socket) as c:
        assert c.call(SET, b"k", mp("v"), None)[1] == OK
        fd = memfd()
        reg = register(d, fd)
        t0 = time.monotonic()
        fake = (MAGIC.to_bytes(8, "little") + (2).to_bytes(4, "little") + (4096).to_bytes(4, "little") +
                b"".join(v.to_bytes(8, "little") for v in (0, 0, 0, 0, 0, 2**63)))  # local_misses = 2**63
        os.pwrite(fd, fake, 0)
        assert wait_for(lambda: c.status()["shm_local_misses_total"] > 0, 10)
        time.sleep(0.1)
        reg.close()
        assert wait_for(lambda: c.status()["reader_processes"] == 0, 10)
        elapsed_ms = (time.monotonic() - t0) * 1000 + 100
        s = c.status()
        assert s["shm_local_misses_total"] <= elapsed_ms * MAX_PER_MS, s
        assert s["misses_total"] == s["shm_local_misses_total"], s
        os.close(fd)
