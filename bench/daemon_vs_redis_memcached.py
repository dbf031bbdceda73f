#!/usr/bin/env python3
"""nearcached against redis-server and memcached over Unix sockets, in one run.

    NEARCACHE_BUILD=build .venv/bin/python bench/daemon_vs_redis_memcached.py [--quick]

Starts its own nearcached, redis-server and memcached on Unix sockets in a
temporary directory (Debian's packages: scripts/install-deps.sh bench) and
measures the servers, not a client library: every request is pre-encoded in
the server's own protocol (msgpack, RESP, memcached text) and sent over a raw
socket by a small C++ load generator (bench/daemon_loadgen.cc), which reads
each reply by its known length. The client side is identical for all three.

  1. Round trip of one SET and one GET (20-byte key, 200-byte value):
     median and p99 over many requests, one at a time.
  2. Pipelined throughput: batches of 100 GETs (hits), from 1 and from 2
     client processes at once, requests per second in total.
  3. nearcached only: 1000 connections ask LEASE for the same missing key at
     once; time until the one lease holder's SET has reached all 999 waiters.

Rounds are interleaved (A B C, A B C, ...) and the best round of each server
is reported, so a burst of load from elsewhere on the machine hurts all three
alike instead of one. memcached runs with 2 worker threads (the machine's
cores); redis-server and nearcached are single-threaded.
"""
from __future__ import annotations

import argparse
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack

from servers import BUILD, BenchServers

KEY = b"user:profile:0001234"
VALUE = bytes(range(200))
assert len(KEY) == 20 and len(VALUE) == 200
BATCH = 100


# ---------------------------------------------------------------- protocols

def mp(*items) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


class Proto:
    """Pre-encoded SET and GET requests of one server's protocol."""
    name: str
    set_req: bytes
    get_req: bytes


class NearcacheProto(Proto):
    name = "nearcached"
    # [op, id, args...]; one id for all: ids need not be unique (doc/protocol.md).
    set_req = mp(5, 1, KEY, VALUE, None)
    get_req = mp(3, 1, KEY)


class RedisProto(Proto):
    name = "redis-server"

    @staticmethod
    def resp(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    set_req = resp.__func__(b"SET", KEY, VALUE)
    get_req = resp.__func__(b"GET", KEY)


class MemcachedProto(Proto):
    name = "memcached"
    set_req = b"set %s 0 0 %d\r\n%s\r\n" % (KEY, len(VALUE), VALUE)
    get_req = b"get %s\r\n" % KEY


def reply_len(sock: socket.socket, req: bytes) -> int:
    """Length of the reply to `req`: sent once, read until the connection goes quiet."""
    sock.sendall(req)
    sock.settimeout(0.3)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    sock.settimeout(None)
    assert data, "no reply"
    return len(data)


# ---------------------------------------------------------------- measurements

LOADGEN = BUILD / "bench" / "bench_daemon_loadgen"


def request_file(tmp: str, proto: Proto, what: str, cache: dict = {}) -> str:
    path = f"{tmp}/{proto.name}.{what}.req"
    if path not in cache:
        Path(path).write_bytes(proto.set_req if what == "SET" else proto.get_req)
        cache[path] = True
    return path


def reply_lengths(path: str, proto: Proto) -> dict[str, int]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        return {"SET": reply_len(s, proto.set_req), "GET": reply_len(s, proto.get_req)}


def round_trips(tmp: str, path: str, proto: Proto, lens: dict, n: int) -> dict[str, tuple[float, float]]:
    """n single SETs, then n single GETs: (median, p99) microseconds each."""
    out = {}
    for what in ("SET", "GET"):
        r = subprocess.run([str(LOADGEN), "rt", path, request_file(tmp, proto, what), str(lens[what]), str(n)],
                           capture_output=True, text=True, check=True)
        med, p99 = map(float, r.stdout.split())
        out[what] = (med, p99)
    return out


def pipelined(tmp: str, path: str, proto: Proto, lens: dict, procs: int, seconds: float) -> float:
    """GETs per second summed over `procs` client processes running at once."""
    ps = [subprocess.Popen([str(LOADGEN), "pipe", path, request_file(tmp, proto, "GET"), str(lens["GET"]),
                            str(BATCH), str(seconds)], stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    total = 0.0
    for p in ps:
        out, _ = p.communicate(timeout=seconds + 30)
        total += float(out)
    return total


def lease_stampede(path: str, n: int = 1000) -> tuple[float, float]:
    """n clients LEASE one missing key; returns (ms from first LEASE to all served, ms from SET to all served)."""
    key = b"stampede:%d" % time.monotonic_ns()
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        conns.append(s)
    unp = {s: msgpack.Unpacker(raw=False) for s in conns}
    for s in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    t0 = time.perf_counter()
    for i, s in enumerate(conns):
        s.sendall(mp(15, i, key, 10000, 10000))
    served, holder, t_set = 0, None, None
    while served < n - 1:
        for k, _ in sel.select(timeout=5):
            s = k.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            unp[s].feed(data)
            for r in unp[s]:
                if r[1] == 3 and holder is None:  # LEASED: "compute" and set
                    holder = s
                    t_set = time.perf_counter()
                    s.sendall(mp(5, 10**6, key, VALUE, 60000))
                elif r[1] == 0 and r[0] != 10**6:
                    served += 1
    t_end = time.perf_counter()
    for s in conns:
        s.close()
    return (t_end - t0) * 1000, (t_end - t_set) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests and shorter runs (a smoke test)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = 3000 if args.quick else 20000
    secs = 0.5 if args.quick else 2.0
    rounds = 1 if args.quick else args.rounds
    protos = [NearcacheProto(), RedisProto(), MemcachedProto()]
    with BenchServers() as servers:
        sockets, tmp = servers.sockets, str(servers.tmp)
        print("servers: " + "; ".join(servers.version(p.name) for p in protos))
        print(f"value {len(VALUE)} bytes, key {len(KEY)} bytes; {n} round trips per measurement, pipelined "
              f"batches of {BATCH} for {secs:g} s; best of {rounds} interleaved rounds\n")
        rt = {p.name: {"SET": [], "GET": []} for p in protos}
        thr = {p.name: {1: [], 2: []} for p in protos}
        lens = {p.name: reply_lengths(sockets[p.name], p) for p in protos}
        for _ in range(rounds):
            for p in protos:
                r = round_trips(tmp, sockets[p.name], p, lens[p.name], n)
                for what in ("SET", "GET"):
                    rt[p.name][what].append(r[what])
            for procs in (1, 2):
                for p in protos:
                    thr[p.name][procs].append(pipelined(tmp, sockets[p.name], p, lens[p.name], procs, secs))

        best = {name: {what: min(v[what]) for what in v} for name, v in rt.items()}
        print("Round trip, one request at a time (microseconds; lower is better)")
        print(f"  {'server':<14}{'SET median':>12}{'SET p99':>10}{'GET median':>12}{'GET p99':>10}")
        for p in protos:
            b = best[p.name]
            print(f"  {p.name:<14}{b['SET'][0]:>12.1f}{b['SET'][1]:>10.1f}{b['GET'][0]:>12.1f}{b['GET'][1]:>10.1f}")
        nc = best["nearcached"]
        for other in ("redis-server", "memcached"):
            o = best[other]
            target = " (target: <= 1.0x, aim 0.7x)" if other == "redis-server" else ""
            print(f"  nearcached / {other}: SET median {nc['SET'][0] / o['SET'][0]:.2f}x, "
                  f"GET median {nc['GET'][0] / o['GET'][0]:.2f}x{target}")
        print("  (each server does the minimum per request, epoll_wait + read + write, so the round trip is the\n"
              "   kernel's Unix-socket wake-up cost; nearcache's hits skip it: readers serve them from shared memory)")

        print("\nPipelined GET hits (requests per second, all client processes together; higher is better)")
        print(f"  {'server':<14}{'1 process':>14}{'2 processes':>14}")
        tbest = {name: {k: max(v) for k, v in d.items()} for name, d in thr.items()}
        for p in protos:
            print(f"  {p.name:<14}{tbest[p.name][1]:>14,.0f}{tbest[p.name][2]:>14,.0f}")
        for other in ("redis-server", "memcached"):
            print(f"  nearcached / {other}: {tbest['nearcached'][1] / tbest[other][1]:.2f}x (1 process), "
                  f"{tbest['nearcached'][2] / tbest[other][2]:.2f}x (2 processes)")

        total, after_set = min((lease_stampede(sockets["nearcached"]) for _ in range(rounds)), key=lambda t: t[0])
        print("\nLease stampede (nearcached): 1000 connections LEASE one missing key; one computes and SETs")
        print(f"  first LEASE sent -> all 999 waiters have the value: {total:.1f} ms "
              f"(of which SET -> last waiter served: {after_set:.1f} ms); 1 computation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
