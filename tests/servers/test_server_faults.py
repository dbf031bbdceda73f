"""NearCache under real servers with a faulty daemon (issue 13, faults 1, 2 and 4).

Each server kind (gunicorn sync, gthread, gevent workers; uvicorn with async
views) serves ncapp with a fail-open NearCache on a real nearcached, while
client threads here send requests back to back:
  - stalled: the daemon is SIGSTOPped; every request must still answer 200
    (a miss, a skipped write) within SOCKET_TIMEOUT + MARGIN: a cache call may
    wait SOCKET_TIMEOUT once, never twice, never forever;
  - then SIGCONT, or the stopped daemon SIGKILLed and started again on the
    same socket (a supervisor replacing a hung daemon):
    from 1 s after the daemon answers, every worker's writes land in the
    daemon and every worker reads the value written there since, whatever
    its call rate (a busy worker must not keep postponing its reconnect);
  - gevent: hundreds of requests in flight in one worker share a few daemon
    connections (STATUS lists each connection with its pid).
NEARCACHE_SERVERS_LONG=1: longer outages, 4 workers, 1000 greenlets, and a daemon
killed while it answers.
"""
from __future__ import annotations

import concurrent.futures
import os
import time

import msgpack
import pytest

from appserver import KINDS, AppServer, Load, Sample
from support.nearcached import Daemon
from support.rawproto import GET, OK, SET, STATUS, RawConn, mp

LONG = os.environ.get("NEARCACHE_SERVERS_LONG") == "1"
SOCKET_TIMEOUT = 0.4
MARGIN = 0.3           # the HTTP round trip and the scheduling of a loaded machine
BOUND = SOCKET_TIMEOUT + MARGIN  # < 2 * SOCKET_TIMEOUT: a call that waits twice is caught
RECOVERY = 1.0         # the bound: every client resumes within 1 s
STALL = 5.0 if LONG else 1.2  # > BOUND, as HUNG
DOWN = 3.0 if LONG else 0.5
HUNG = 5.0 if LONG else 1.0  # SIGSTOPped before the kill; > BOUND, or a client that never times out passes
CHECKED = 3.0 if LONG else 0.8   # seconds of load checked after RECOVERY
WORKERS = 4 if LONG else 2
THREADS = 4            # gthread's threads per worker
GREENLETS = 1000 if LONG else 200
POOL_BOUND = 16        # daemon connections one gevent worker may hold, however many greenlets


def clients(kind: str) -> int:
    """Concurrent clients that keep every worker busy without queueing behind a blocked one."""
    return {"sync": WORKERS, "gthread": WORKERS * THREADS}.get(kind, 2 * WORKERS)


@pytest.fixture(params=KINDS)
def served(request, tmp_path):
    d = Daemon(tmp_path)
    srv = AppServer(tmp_path, request.param, workers=WORKERS, threads=THREADS,
                    env={"NCAPP_LOCATION": d.socket, "NCAPP_SOCKET_TIMEOUT": SOCKET_TIMEOUT})
    yield d, srv
    srv.stop()
    d.stop()


# -- reading the daemon directly -------------------------------------------------
def set_marker(d: Daemon, value: str) -> None:
    with RawConn(d.socket) as c:
        assert c.call(SET, b":1:marker", mp(value), None)[1] == OK


def stored(d: Daemon, keys: list[str]) -> dict[str, str | None]:
    """What the daemon holds under each Django key (version 1), decoded."""
    with RawConn(d.socket) as c:
        for k in keys:
            c.send(GET, f":1:{k}".encode())
        replies = c.recv_n(len(keys))
    return {k: msgpack.unpackb(r[2]) if r[1] == OK else None for k, r in zip(keys, replies)}


# -- assertions -------------------------------------------------------------------
def show(samples: list[Sample], n: int = 5) -> str:
    return "\n".join(f"  {s.op} pid={s.pid} status={s.status} {s.end - s.start:.3f}s (cache call "
                     f"{'?' if s.cache_s is None else f'{s.cache_s:.3f}s'}) {s.key} {s.error}" for s in samples[:n])


def assert_answered(samples: list[Sample], what: str) -> None:
    """Every request answered 200 (fail-open) within BOUND."""
    assert samples, f"no request was sent {what}"
    failed = [s for s in samples if s.status != 200]
    assert not failed, f"{len(failed)} of {len(samples)} requests {what} did not answer 200:\n{show(failed)}"
    slow = sorted((s for s in samples if s.end - s.start > BOUND), key=lambda s: s.start - s.end)
    assert not slow, (f"{len(slow)} of {len(samples)} requests {what} took more than SOCKET_TIMEOUT + MARGIN "
                      f"({BOUND:.2f} s); slowest:\n{show(slow)}")


def assert_misses(samples: list[Sample]) -> None:
    hits = [s for s in samples if s.op == "miss" and s.value is not None]
    assert not hits, f"gets of keys never written returned values:\n{show(hits)}"


def assert_all_stored(d: Daemon, samples: list[Sample], what: str) -> None:
    sets = [s for s in samples if s.op == "set"]
    have = stored(d, [s.key for s in sets])
    lost = [s for s in sets if have[s.key] != s.value]
    assert not lost, f"{len(lost)} of {len(sets)} writes {what} are not in the daemon:\n{show(lost)}"


def assert_recovered(d: Daemon, srv: AppServer, load: Load, t0: float, marker: str, what: str) -> None:
    """From t0 + RECOVERY on, each worker's writes are stored and its reads see `marker`."""
    window = load.between(t0 + RECOVERY)
    failed = [s for s in window if s.status != 200]
    assert not failed, f"{len(failed)} requests {RECOVERY} s {what} did not answer 200:\n{show(failed)}"
    sets = [s for s in window if s.op == "set"]
    have = stored(d, [s.key for s in sets])
    report = []
    for pid in sorted(srv.worker_pids()):
        mine = [s for s in sets if s.pid == pid]
        lost = [s for s in mine if have[s.key] != s.value]
        stale = [s for s in window if s.pid == pid and s.op == "marker" and s.value != marker]
        if not mine:
            report.append(f"worker {pid}: served no write in the checked window (load did not reach it)")
        elif lost or stale:
            report.append(f"worker {pid}: {len(lost)} of {len(mine)} writes lost, {len(stale)} reads not "
                          f"{marker!r} (saw {sorted({str(s.value) for s in stale})[:3]})")
    assert not report, f"{RECOVERY} s {what}, for {CHECKED} s:\n  " + "\n  ".join(report)


def warm_up(d: Daemon, srv: AppServer, load: Load) -> float:
    """Checks the harness on a healthy daemon: answers, misses, writes stored, reads of the marker."""
    t = time.monotonic()
    time.sleep(0.3)
    healthy = load.between(t, time.monotonic())
    assert_answered(healthy, "with a healthy daemon")
    assert_misses(healthy)
    time.sleep(0.05)
    assert_all_stored(d, healthy, "with a healthy daemon")
    return t


# -- the tests ---------------------------------------------------------------------
def test_stalled_daemon_answers_within_timeout_then_every_worker_resumes(served):
    d, srv = served
    pids = srv.worker_pids()
    set_marker(d, "before")
    with Load(srv, clients(srv.kind), "stall") as load:
        warm_up(d, srv, load)
        d.pause()
        paused = time.monotonic()
        time.sleep(STALL)
        d.resume()
        t0 = time.monotonic()
        set_marker(d, "after")
        time.sleep(RECOVERY + CHECKED)
    # Requests that began while the daemon was stopped (those in flight at
    # SIGCONT may have been answered by it: all the same).
    stalled = load.between(paused, t0 - BOUND)
    assert_answered(stalled, f"while the daemon was SIGSTOPped ({srv.kind})")
    assert_misses(stalled)
    time.sleep(0.1)
    assert_recovered(d, srv, load, t0, "after", f"after SIGCONT ({srv.kind}, stopped {STALL} s)")
    assert srv.worker_pids() == pids, "a worker was replaced (it hung past gunicorn's timeout, or crashed)"


@pytest.mark.parametrize("hung", [True] + ([False] if LONG else []), ids=lambda h: "hung" if h else "crashed")
def test_killed_daemon_restarted_every_worker_resumes(served, hung):
    """hung: SIGSTOPped first, then killed, as a supervisor kills a daemon that
    stopped answering (the clients' requests timed out before their
    connections were refused); crashed: killed while answering."""
    d, srv = served
    pids = srv.worker_pids()
    set_marker(d, "before")
    with Load(srv, clients(srv.kind), "restart") as load:
        warm_up(d, srv, load)
        down = time.monotonic()
        if hung:
            d.pause()
            time.sleep(HUNG)
        d.kill()
        time.sleep(DOWN)
        d.start()
        t0 = time.monotonic()
        set_marker(d, "after")
        time.sleep(RECOVERY + CHECKED)
    # While hung, requests may wait SOCKET_TIMEOUT; once it is dead, connections are refused.
    outage = load.between(down, t0)
    assert_answered(outage, f"while the daemon was {'hung, then ' if hung else ''}down ({srv.kind})")
    assert_misses(outage)
    time.sleep(0.1)
    assert_recovered(d, srv, load, t0, "after", f"after a kill -9 and restart ({srv.kind}, "
                     f"{f'hung {HUNG} s, ' if hung else ''}down {DOWN} s)")
    assert srv.worker_pids() == pids, "a worker was replaced (it hung past gunicorn's timeout, or crashed)"


def test_gevent_greenlets_share_a_few_daemon_connections(tmp_path):
    with Daemon(tmp_path) as d, AppServer(tmp_path, "gevent", workers=2, env={
            "NCAPP_LOCATION": d.socket, "NCAPP_SOCKET_TIMEOUT": SOCKET_TIMEOUT}) as srv:
        pids = srv.worker_pids()
        hold = 1.0  # each request keeps its greenlet alive this long after its cache call
        with RawConn(d.socket) as st:
            before = st.call(STATUS)[2]["connections_total"]
            peak: dict[int, int] = {}
            with concurrent.futures.ThreadPoolExecutor(GREENLETS) as pool:
                t = time.monotonic()
                futures = [pool.submit(srv.get, f"/set/pool-{i}/v{i}?hold={hold}") for i in range(GREENLETS)]
                while not all(f.done() for f in futures) and time.monotonic() < t + 60:
                    per_pid: dict[int, int] = {}
                    for c in st.call(STATUS)[2]["connections"]:
                        if c["pid"] in pids:
                            per_pid[c["pid"]] = per_pid.get(c["pid"], 0) + 1
                    for p, n in per_pid.items():
                        peak[p] = max(peak.get(p, 0), n)
                    time.sleep(0.02)
                elapsed = time.monotonic() - t
                replies = [f.result() for f in futures]
            opened = st.call(STATUS)[2]["connections_total"] - before
        failed = [r for r in replies if r.status != 200]
        assert not failed, f"{len(failed)} of {GREENLETS} requests failed: {failed[:3]}"
        # The requests overlapped: served one after another they would take GREENLETS * hold / 2 s.
        assert elapsed < GREENLETS * hold / 8, f"{GREENLETS} requests took {elapsed:.1f} s: not concurrent"
        # gunicorn does not promise to spread them: one worker may take them all.
        served_by = {r.body["pid"] for r in replies}
        assert served_by <= pids, f"requests reached workers {served_by} beyond {pids}: a worker was replaced"
        assert all(n <= POOL_BOUND for n in peak.values()), \
            (f"{GREENLETS} concurrent greenlets held {peak} daemon connections per worker pid "
             f"(bound {POOL_BOUND}): one connection per greenlet")
        assert opened <= POOL_BOUND * len(pids) + 1, \
            f"the workers opened {opened} daemon connections for {GREENLETS} requests (bound {POOL_BOUND} each)"
        assert stored(d, ["pool-0", f"pool-{GREENLETS - 1}"]) == {"pool-0": "v0", f"pool-{GREENLETS - 1}":
                                                                  f"v{GREENLETS - 1}"}
