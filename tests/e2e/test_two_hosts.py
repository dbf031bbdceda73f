"""Two hosts sharing one Redis: coherence, the read-through race, atomic
operations decided in Redis, read-your-writes with write-behind, and the same
bytes in Redis as in shared memory.

Each host is a real nearcached with its own socket and segment; clients are
the Python client (shared-memory hits) or the raw protocol (pipelining).
"""
from __future__ import annotations

import re
import statistics
import threading
import time

import msgpack
import pytest

from support.rawproto import ADD, CLEAR, DECR, DELETE, EXISTS, GET, GET_MANY, HAS_KEY, INCR, LEASE, LEASED, \
    NOT_FOUND, OK, RELEASE, SET, TIMEOUT, TOUCH, RawConn, mp
from support.redis_proxy import HoldingProxy
from support.tier import client, shm, status, wait_flushed, wait_for
from support.wait import wait_status

P = b"nearcache:"


def test_a_write_on_one_host_is_read_on_the_other_after_the_invalidation(host, redis_server):
    a, b = host("a"), host("b")
    ca, cb = client(a), client(b)
    ca.set("k", mp(0))
    wait_flushed(a)
    assert cb.get("k") == mp(0)  # a local miss on b, read through Redis and installed
    assert shm(cb, b"k") == mp(0)
    delays = []
    for i in range(1, 201):
        t0 = time.perf_counter()
        ca.set("k", mp(i))
        # b stops serving the old value from shared memory once the invalidation arrived ...
        wait_for(lambda: shm(cb, b"k") != mp(i - 1), 5, "the invalidation", interval=0)
        delays.append(time.perf_counter() - t0)
        # ... and then reads the new one through Redis.
        assert cb.get("k") == mp(i)
        assert shm(cb, b"k") == mp(i)
    delays.sort()
    print(f"\nA write -> B invalidated: median {statistics.median(delays) * 1e3:.2f} ms, "
          f"p99 {delays[int(len(delays) * 0.99) - 1] * 1e3:.2f} ms, max {delays[-1] * 1e3:.2f} ms "
          f"over {len(delays)} writes (bench/redis_invalidation.py measures it properly)")
    assert delays[len(delays) // 2] < 0.05
    st = status(b)
    assert st["redis_invalidations_total"] >= 200
    assert st["redis_readthrough_hits_total"] >= 201
    # a's own writes never came back to it (NOLOOP): its value stayed in shared memory.
    assert status(a)["redis_invalidations_total"] == 0
    assert shm(ca, b"k") == mp(200)


def test_values_in_redis_are_the_bytes_clients_store(host, redis_server):
    a, b = host("a"), host("b")
    ca, cb = client(a), client(b)
    r = redis_server.client()
    ca.set("plain", mp({"a": [1, 2]}), ttl=60)
    ca.set("flagged", b"\x80\x03pickled", flags=1)
    ca.set("forever", mp("x"))
    wait_flushed(a)
    assert r.get(P + b"plain") == mp({"a": [1, 2]})
    assert 59_000 < r.pttl(P + b"plain") <= 60_000
    assert r.pttl(P + b"forever") == -1
    # A value with flags travels in an envelope; the other host gets value and flags back.
    assert r.get(P + b"flagged") != b"\x80\x03pickled"
    assert cb.get_entry("flagged") == (b"\x80\x03pickled", 1)
    # A value another tool wrote in the same format is served, with Redis's TTL (bounded by the ceiling).
    r.set(P + b"from-redis-py", mp([1, "two"]), px=30_000)
    with RawConn(b.socket) as c:
        rep = c.call(GET, b"from-redis-py")
        assert rep[1:4] == [OK, mp([1, "two"]), 0] and 29_000 < rep[4] <= 30_000
        assert c.call(GET, b"absent")[1] == NOT_FOUND
    assert r.get(P + b"absent") is None  # a miss is not cached in Redis


def test_the_read_through_racing_an_invalidation_never_installs_the_stale_value(host, redis_server, tmp_path):
    """Staged with a proxy that holds b's GET reply until a's write was invalidated on b."""
    a = host("a")
    with HoldingProxy(tmp_path, redis_server.socket) as proxy:
        # Long timeouts: the held reply must not time out; the race is what is tested.
        b = host("b", url=proxy.url, redis_wait_ms=10000, redis_command_timeout_ms=10000)
        ca, cb = client(a), client(b, timeout=20)
        ca.set("race", mp("old"))
        wait_flushed(a)
        before = status(b)
        proxy.hold_replies_after(P + b"race")
        with RawConn(b.socket) as reader:
            rid = reader.send(GET, b"race")
            proxy.wait_held()  # Redis answered "old"; b has not seen the answer
            ca.set("race", mp("new"))
            wait_for(lambda: status(b)["redis_invalidations_total"] > before["redis_invalidations_total"], 5,
                     "b to receive the invalidation")
            proxy.release()
            reply = reader.recv()
        # The reader asked before the write: it may get what Redis had then ...
        assert reply[0] == rid and reply[1:3] == [OK, mp("old")]
        # ... but the stale value was not installed: nobody reads it afterwards.
        after = status(b)
        assert after["redis_readthrough_stale_total"] == before["redis_readthrough_stale_total"] + 1
        assert shm(cb, b"race") is None
        assert cb.get("race") == mp("new")
        assert shm(cb, b"race") == mp("new")


def test_add_incr_and_lease_from_both_hosts_at_once(host, redis_server):
    a, b = host("a"), host("b")
    hosts = [a, b]
    threads_per_host = 4
    start = threading.Barrier(2 * threads_per_host)
    results = {"add": [], "incr": [], "lease": []}
    lock = threading.Lock()

    def worker(d, n):
        with RawConn(d.socket) as c:
            start.wait()
            # ADD: one winner among every client of both hosts, per key.
            adds = [c.call(ADD, f"add{k}".encode(), mp(f"{d.name}{n}"), None)[1] for k in range(20)]
            # INCR: no increment lost.
            incrs = 0
            for _ in range(100):
                rep = c.call(INCR, b"counter", 1)
                assert rep[1] == OK, rep
                incrs += 1
            # LEASE: one holder at a time; the others wait for its value.
            rep = c.call(LEASE, b"lease", 5000, 5000)
            if rep[1] == LEASED:
                time.sleep(0.05)  # computing the value, while the others wait
                assert c.call(SET, b"lease", mp("computed"), None)[1] == OK
            with lock:
                results["add"].append(adds)
                results["incr"].append(incrs)
                results["lease"].append(rep)

    client(a).set("counter", mp(0))
    wait_flushed(a)
    ts = [threading.Thread(target=worker, args=(d, n)) for d in hosts for n in range(threads_per_host)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(results["add"]) == 2 * threads_per_host
    for k in range(20):
        outcomes = [adds[k] for adds in results["add"]]
        assert outcomes.count(OK) == 1 and outcomes.count(EXISTS) == len(outcomes) - 1, (k, outcomes)
    expected = 100 * 2 * threads_per_host
    assert sum(results["incr"]) == expected
    r = redis_server.client()
    assert msgpack.unpackb(r.get(P + b"counter")) == expected
    for d in hosts:  # both hosts read the final count (no stale local copy)
        with RawConn(d.socket) as c:
            assert c.call(GET, b"counter")[2] == mp(expected)
    statuses = [rep[1] for rep in results["lease"]]
    assert statuses.count(LEASED) == 1, results["lease"]
    assert all(rep[1:3] == [OK, mp("computed")] for rep in results["lease"] if rep[1] != LEASED)
    # Each host's winner: the ADD winners' values are in Redis and served by both hosts.
    for k in range(20):
        v = r.get(P + f"add{k}".encode())
        for d in hosts:
            with RawConn(d.socket) as c:
                assert c.call(GET, f"add{k}".encode())[2] == v


def test_a_lease_across_hosts_is_handed_on_when_released(host):
    a, b = host("a"), host("b")
    with RawConn(a.socket) as ca, RawConn(b.socket) as cb:
        rep = ca.call(LEASE, b"job", 10000, 0)
        assert rep[1] == LEASED
        token = rep[2]
        assert cb.call(LEASE, b"job", 10000, 0)[1] == TIMEOUT  # held by host a
        assert ca.call(LEASE, b"job", 10000, 0)[1] == TIMEOUT  # and by its holder's host for others
        waiting = cb.send(LEASE, b"job", 10000, 5000)
        wait_status(b, "b's LEASE to wait", lease_waiters=1)
        t0 = time.monotonic()
        assert ca.call(RELEASE, b"job", token)[1] == OK
        rep = cb.recv()
        assert rep[0] == waiting and rep[1] == LEASED  # b's waiter got it, within a poll or so
        assert time.monotonic() - t0 < 1.0
        assert ca.call(RELEASE, b"job", token)[1] == NOT_FOUND
        # The holder's connection closing gives it back too.
        assert ca.call(LEASE, b"job", 10000, 0)[1] == TIMEOUT
    with RawConn(a.socket) as ca:
        assert ca.call(LEASE, b"job", 10000, 2000)[1] == LEASED


@pytest.mark.parametrize("round", range(3))
def test_read_your_writes_with_write_behind(host, redis_server, round):
    """Each sequence is pipelined in one write, so the first operation is still
    queued (or in flight) when the second runs; the answers are those of a
    daemon without Redis."""
    a = host("a")
    r = redis_server.client()
    with RawConn(a.socket) as c:
        for i in range(50):
            k = f"k{round}-{i}".encode()
            r.set(P + k, mp("old"))  # Redis has a value this host never read
            c.send(DELETE, k)
            c.send(GET, k)
            c.send(HAS_KEY, k)
            dl, get, has = c.recv_n(3)
            assert dl[1] == NOT_FOUND and get[1] == NOT_FOUND and has[1] == NOT_FOUND, (dl, get, has)

            c.send(SET, k, mp(1), None)
            c.send(INCR, k, 1)
            c.send(DECR, k, 5)
            c.send(GET, k)
            s, inc, dec, get = c.recv_n(4)
            assert s[1] == OK and inc[1:] == [OK, 2] and dec[1:] == [OK, -3] and get[2] == mp(-3), (inc, dec, get)

            c.send(DELETE, k)
            c.send(ADD, k, mp("added"), None)
            c.send(ADD, k, mp("again"), None)
            c.send(GET, k)
            dl, add1, add2, get = c.recv_n(4)
            assert add1[1] == OK and add2[1] == EXISTS and get[2] == mp("added"), (dl, add1, add2, get)

            c.send(SET, k, mp("x"), None)
            c.send(TOUCH, k, 0)  # expire at once
            c.send(GET, k)
            s, t, get = c.recv_n(3)
            assert t[1] == OK and get[1] == NOT_FOUND, (t, get)
        # Missing keys stay errors, never new keys.
        assert c.call(INCR, b"never-set", 1)[1] == NOT_FOUND
    wait_flushed(a)
    for i in range(50):
        assert r.get(P + f"k{round}-{i}".encode()) is None


def test_clear_removes_this_cache_s_keys_from_redis_and_other_hosts(host, redis_server):
    a, b = host("a"), host("b")
    r = redis_server.client()
    r.set(b"other-app:key", b"kept")
    ca, cb = client(a), client(b)
    for i in range(3000):
        ca.set(f"app:{i}", mp(i))
    ca.set("other:1", mp(1))
    wait_flushed(a)
    assert cb.get("app:7") == mp(7) and cb.get("other:1") == mp(1)
    assert ca.clear(b"app:") == 3000
    wait_flushed(a)
    assert r.get(P + b"app:7") is None and r.get(P + b"other:1") == mp(1)
    assert r.get(b"other-app:key") == b"kept"
    wait_for(lambda: shm(cb, b"app:7") is None, 5, "b to drop the cleared key")
    assert cb.get("app:7") is None and cb.get("other:1") == mp(1)
    assert status(a)["redis_queue_failed_total"] == 0


def test_get_many_reads_the_missing_keys_through_in_one_go(host, redis_server):
    a, b = host("a"), host("b")
    ca = client(a)
    ca.set_many({f"m{i}": mp(i) for i in range(0, 200, 2)})
    wait_flushed(a)
    with RawConn(b.socket) as c:
        c.call(SET, b"m1", mp("local"), None)
        rep = c.call(GET_MANY, [f"m{i}".encode() for i in range(200)])
        assert rep[1] == OK
        got = rep[2]
        for i in range(200):
            if i % 2 == 0:
                assert got[i] == [mp(i), 0], i
            elif i == 1:
                assert got[i] == [mp("local"), 0]
            else:
                assert got[i] is None
    assert status(b)["redis_readthrough_hits_total"] == 100


def test_touch_of_a_key_only_redis_has(host, redis_server):
    a, b = host("a"), host("b")
    client(a).set("t", mp(1), ttl=100)
    wait_flushed(a)
    with RawConn(b.socket) as c:
        assert c.call(TOUCH, b"t", 500_000)[1] == OK
        assert c.call(TOUCH, b"absent", 5000)[1] == NOT_FOUND
    wait_flushed(b)
    assert 400_000 < redis_server.client().pttl(P + b"t") <= 500_000


def test_clear_of_everything_keeps_other_prefixes_in_redis(host, redis_server):
    a = host("a", redis_prefix="app1:")
    r = redis_server.client()
    r.set(b"app2:x", b"1")
    with RawConn(a.socket) as c:
        c.call(SET, b"x", mp(1), None)
        assert c.call(CLEAR)[1] == OK
    wait_flushed(a)
    assert r.get(b"app1:x") is None and r.get(b"app2:x") == b"1"


def test_nearcache_status_shows_the_redis_tier(host, redis_server):
    import json
    import subprocess

    from support.nearcached import NEARCACHE_CLI

    a = host("a")
    client(a).set("k", mp(1))
    wait_flushed(a)

    def cli(*args):
        return subprocess.run([str(NEARCACHE_CLI), f"--socket={a.socket}", "status", *args], capture_output=True,
                              text=True, timeout=10).stdout

    text = cli()
    assert f"redis: unix://{redis_server.socket} (prefix 'nearcache:')" in text
    assert "data link: connected since" in text and "invalidations: connected (coherent)" in text
    assert re.search(r"write-behind flushed:\s+1\n", text)
    j = json.loads(cli("--json"))
    assert j["redis"]["state"] == "connected" and j["redis_queue_flushed_total"] == 1
    prom = cli("--prometheus")
    assert "\nnearcache_redis_connected 1\n" in prom and "\nnearcache_redis_queue_depth 0\n" in prom
