"""A CLEAR flood must not stall other clients (issue 12, item 4).

A table of ~260k entries; another process sends 256 prefix CLEARs per write,
again and again, while this process measures GET round trips on its own
connection. The daemon bounds CLEAR work per loop turn for all CLEARs
together, so a flood costs the others no more than one CLEAR at a time does.
"""
from __future__ import annotations

import multiprocessing
import random
import time

from support.nearcached import Daemon
from support.rawproto import CLEAR, GET, OK, SET, SET_MANY, RawConn, pack

PREFIXES = 256        # CLEARs per write, each with its own prefix (the daemon's in-flight bound)
PER_PREFIX = 200      # entries under each prefix
KEEP = 210_000        # entries under no cleared prefix: they must all survive
PHASE_S = 0.8         # each of the alternating phases, three of each
IDLE_PREFIX = b"z:"   # the baseline's CLEARs: a full pass each, nothing under it


def cleared_prefix(j: int) -> bytes:
    return b"c%03d:" % j  # no prefix is a prefix of another, nor of b"k:" or b"z:"


def fill(c: RawConn) -> int:
    keys = [b"k:%d" % i for i in range(KEEP)]
    keys += [cleared_prefix(j) + b"%d" % i for j in range(PREFIXES) for i in range(PER_PREFIX)]
    batch, sent = 2000, 0
    for start in range(0, len(keys), batch):
        c.send(SET_MANY, [[k, b"v" * 24, 0] for k in keys[start:start + batch]], None)
        sent += 1
    for r in c.recv_n(sent):
        assert r[1] == OK and r[2] == [], r
    return len(keys)


def clear_rounds(sock: str, prefixes: list[bytes], seconds: float, depth: int) -> list:
    """Rounds of one CLEAR per prefix, all in one write, followed in the same
    write by a SET under the first prefix: received after the CLEARs, it must
    survive them (the next round's first CLEAR removes it). `depth` rounds are
    kept in flight. Returns the [code, removed] replies of every round."""
    c = RawConn(sock, timeout=60)
    got: dict[int, list] = {}
    after_key = prefixes[0] + b"after"
    next_id = 0

    def send_round() -> tuple[list[int], int]:
        nonlocal next_id
        ids = list(range(next_id + 1, next_id + 1 + len(prefixes)))
        next_id += len(prefixes) + 1
        c.send_raw(b"".join(pack(CLEAR, i, p) for i, p in zip(ids, prefixes)) + pack(SET, next_id, after_key, b"x", None))
        return ids, next_id

    def wait(ids) -> None:
        while not all(i in got for i in ids):
            r = c.recv()
            got[r[0]] = r[1:]

    rounds = []
    deadline = time.monotonic() + seconds
    in_flight = [send_round() for _ in range(depth)]
    while in_flight:
        ids, set_id = in_flight.pop(0)
        wait(ids + [set_id])
        assert got.pop(set_id)[0] == OK
        rounds.append([got.pop(i) for i in ids])
        # The SET came after every CLEAR of its round: still there.
        c.send(GET, after_key, id=0)
        wait([0])
        assert got.pop(0)[0] == OK
        if time.monotonic() < deadline:
            in_flight.append(send_round())
    c.close()
    return rounds


def clearer(sock: str, prefixes: list[bytes], depth: int, out) -> None:
    """Child process running clear_rounds; sends back ("ok", rounds) or the error."""
    try:
        out.send(("ok", clear_rounds(sock, prefixes, PHASE_S, depth)))
    except BaseException as e:  # the parent reports it
        out.send(("error", repr(e)))


def get_latencies(c: RawConn, seconds: float) -> list[float]:
    lat = []
    deadline = time.monotonic() + seconds
    rnd = random.Random(1)
    while time.monotonic() < deadline:
        key = b"k:%d" % rnd.randrange(KEEP)
        t0 = time.perf_counter()
        r = c.call(GET, key)
        lat.append(time.perf_counter() - t0)
        assert r[1] == OK, (key, r)  # never removed by a CLEAR of another prefix
    return sorted(lat)


def p99(lat: list[float]) -> float:
    return lat[int(len(lat) * 0.99)]


def measure_while_clearing(d: Daemon, getter: RawConn, prefixes: list[bytes], depth: int) -> tuple[list[float], list]:
    ctx = multiprocessing.get_context("fork")
    recv_end, send_end = ctx.Pipe(duplex=False)
    child = ctx.Process(target=clearer, args=(d.socket, prefixes, depth, send_end), daemon=True)
    child.start()
    try:
        time.sleep(0.1)  # the clears are under way
        lat = get_latencies(getter, PHASE_S - 0.3)
        assert recv_end.poll(PHASE_S + 60), "the clearing client got no answers"
        status, rounds = recv_end.recv()
        assert status == "ok", rounds
        child.join(10)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert rounds, "no CLEAR was answered"
    return lat, rounds


def test_clear_flood_does_not_stall_other_clients(tmp_path):
    with Daemon(tmp_path, segment_size="64M", expected_item_size="128", log_level="info") as d:
        c = RawConn(d.socket)
        n = fill(c)
        st = c.status()
        assert st["entries"] == n and st["evictions_total"] == 0
        getter = RawConn(d.socket)
        idle = get_latencies(getter, 1.0)

        # Baseline: one CLEAR at a time, the next one already sent, so the
        # daemon is as busy clearing as in the flood (each is a full pass over
        # the table, and the loop is never idle). The flood: 256 CLEARs per
        # write. The phases alternate, so a change in the machine's load falls
        # on both.
        one, one_rounds, flood, rounds = [], [], [], []
        for _ in range(3):
            lat, r = measure_while_clearing(d, getter, [IDLE_PREFIX], depth=2)
            one += lat
            one_rounds += r
            lat, r = measure_while_clearing(d, getter, [cleared_prefix(j) for j in range(PREFIXES)], depth=1)
            flood += lat
            rounds += r
        one.sort()
        flood.sort()

        # Every CLEAR was answered OK with what it removed: in the first round
        # every entry of its prefix, later only the SET that followed the
        # previous round. Nothing else was removed.
        for r, replies in enumerate(one_rounds):
            assert replies == [[OK, 0 if r == 0 else 1]], (r, replies)
        for r, replies in enumerate(rounds):
            for j, rep in enumerate(replies):
                expect = PER_PREFIX if r == 0 else (1 if j == 0 else 0)
                assert rep == [OK, expect], (r, j, rep)
        after = c.status()
        assert after["entries"] == KEEP + 2  # and the last SET of each kind of round
        assert after["cleared_total"] == PREFIXES * PER_PREFIX + len(rounds) - 1 + len(one_rounds) - 1
        assert after["clears_total"] == PREFIXES * len(rounds) + len(one_rounds)
        for j in (0, 17, PREFIXES - 1):
            assert c.call(GET, cleared_prefix(j) + b"1")[1] != OK

        # 5 ms is the bound on an otherwise idle 2-core machine. When other
        # processes load the cores, a daemon busy clearing waits for its share
        # of CPU for several ms at a time whatever it does per loop turn (up to
        # half its time on a runqueue was seen here), and one CLEAR at a time
        # shows that cost: the flood's p99 may then reach 4x the baseline's
        # p99 or the baseline's worst round trip, the longest the machine kept
        # a busy daemon waiting. A flood that stalled the loop (256 first
        # slices in one turn: p99 above 400 ms before) fails either way.
        assert len(one) > 100 and flood  # (a stalled loop answers few GETs: its p99 is their worst)
        bound = max(0.005, 4 * p99(one), one[-1])
        print(f"GET p99: idle {p99(idle) * 1e3:.2f} ms, one CLEAR at a time {p99(one) * 1e3:.2f} ms "
              f"(max {one[-1] * 1e3:.1f} ms; {len(one_rounds)} passes), {PREFIXES} CLEARs per write {p99(flood) * 1e3:.2f} ms "
              f"(max {flood[-1] * 1e3:.1f} ms; {len(rounds)} rounds) over {n} entries")
        assert p99(flood) < bound
        c.close()
        getter.close()
