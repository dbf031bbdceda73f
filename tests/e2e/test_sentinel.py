"""The Redis tier behind Redis Sentinel, end to end: a real primary and replica
(redis-server over TCP), real Sentinels (`redis-server --sentinel`, quorum 1,
down-after 500 ms, failover-timeout 1000 ms) and two nearcached processes as
two hosts that know only the Sentinels: coherence and read-through through the
master they name, failover by killing the primary, a Sentinel down, and the
replica promoted while writes are queued.

NEARCACHE_SENTINEL_LONG=1 adds a run with three Sentinels (quorum 2) that
fail over with the first of them down.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from support.nearcached import Daemon
from support.rawproto import mp
from support.certs import make_pki
from support.redis_server import RedisServer, Sentinel, free_port
from support.tier import FAST, client, shm, status, wait_coherent, wait_flushed, wait_for

P = b"nearcache:"
MASTER = "mymaster"


@dataclass
class Topology:
    primary: RedisServer
    replica: RedisServer
    sentinels: list[Sentinel] = field(default_factory=list)

    def opts(self, **more) -> dict:
        return dict(redis_sentinels=",".join(s.addr for s in self.sentinels), redis_sentinel_master=MASTER,
                    redis_connect_timeout_ms=1000, redis_command_timeout_ms=300, redis_sentinel_timeout_ms=200,
                    **more)


def role(r: RedisServer) -> str:
    import redis

    try:
        return r.client().execute_command("ROLE")[0].decode()
    except redis.exceptions.ConnectionError:
        return "?"



def value(r: RedisServer, key: bytes):
    """What the server has under the key; None also when it drops the connection
    (a replica being promoted or demoted may)."""
    import redis

    try:
        return r.client().get(key)
    except redis.exceptions.ConnectionError:
        return None


@pytest.fixture
def topology(redis_servers, tmp_path):
    """topology(sentinels=1, quorum=1): a primary, its replica (in sync) and Sentinels monitoring them."""
    made: list[Sentinel] = []

    def make(sentinels: int = 1, quorum: int = 1, password: str | None = None) -> Topology:
        primary = redis_servers("primary", tcp=True)
        replica = redis_servers("replica", tcp=True, replicaof=f"127.0.0.1 {primary.port}")
        wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up", 10,
                 "the replica to sync")
        t = Topology(primary, replica)
        for i in range(sentinels):
            made.append(Sentinel(tmp_path, f"s{i + 1}", primary, MASTER, quorum=quorum, password=password))
            t.sentinels.append(made[-1])
        for s in t.sentinels:  # a failover needs a replica the Sentinel knows
            wait_for(lambda: len(s.command("SENTINEL", "replicas", MASTER)) == 1, 10, "the Sentinel to see the replica")
        return t

    yield make
    for s in made:
        s.kill()


@pytest.fixture
def host(tmp_path, topology):
    """host(name, topology, url=None): a nearcached that knows only the Sentinels (no redis_url when url is None).

    Requested after `topology`, so that the daemons stop before the servers."""
    made: list[Daemon] = []

    def make(name: str, t: Topology, url: str | None = None, **options) -> Daemon:
        o = {**FAST, **t.opts(), **options}
        if url is not None:
            o["redis_url"] = url
        made.append(Daemon(tmp_path, name=name, **o))
        wait_coherent(made[-1])
        return made[-1]

    yield make
    for d in made:
        if d.proc and d.proc.poll() is None:
            assert d.stop() == 0, d.log()


def where(r: RedisServer) -> str:
    return f"127.0.0.1:{r.port}"


def test_two_hosts_coherent_and_reading_through_the_master_the_sentinel_names(topology, host):
    t = topology()
    # The two URL forms: no redis_url at all, and the scheme alone.
    a = host("a", t)
    b = host("b", t, url="redis://")
    ca, cb = client(a), client(b)
    for i in range(20):
        ca.set(f"k{i}", mp(i))
    wait_flushed(a)
    assert value(t.primary, P + b"k7") == mp(7)
    assert cb.get("k7") == mp(7)  # read through the master
    assert shm(cb, b"k7") == mp(7)
    ca.set("k7", mp(-7))
    wait_for(lambda: shm(cb, b"k7") != mp(7), 5, "the invalidation through the master")
    assert cb.get("k7") == mp(-7)
    st = status(a)
    r = st["redis"]
    assert r["sentinel_master"] == MASTER and r["master"] == where(t.primary) and r["sentinel"] == t.sentinels[0].addr
    assert st["redis_sentinel_queries_total"] >= 1 and st["redis_sentinel_failovers_total"] == 0
    assert r["url"] == "redis:///"


def test_failover_by_killing_the_primary_writes_resume_on_the_new_master(topology, host):
    t = topology()
    a, b = host("a", t), host("b", t)
    ca, cb = client(a), client(b)
    for i in range(10):
        ca.set(f"before{i}", mp(i))
    wait_flushed(a)
    wait_for(lambda: value(t.replica, P + b"before9") == mp(9), 5, "the replica to have the writes")
    t0 = time.monotonic()
    t.primary.kill()
    for i in range(10):
        ca.set(f"after{i}", mp(100 + i))  # queued while there is no master
    wait_for(lambda: value(t.replica, P + b"after9") == mp(109), 20, "the writes to reach the new master")
    resumed = time.monotonic() - t0
    assert role(t.replica) == "master"
    # Failover (down-after 500 ms + election + promotion) plus at most redis_reconnect_max_ms (200 ms here).
    assert resumed < 10, resumed
    assert all(value(t.replica, P + f"after{i}".encode()) == mp(100 + i) for i in range(10))
    wait_coherent(a, b)
    sa = status(a)
    assert sa["redis"]["master"] == where(t.replica) and sa["redis_sentinel_failovers_total"] >= 1
    assert sa["redis_queue_dropped_total"] == 0 and sa["redis_queue_failed_total"] == 0
    assert cb.get("after3") == mp(103)  # the other host reads the later writes from the new master
    assert cb.get("before4") == mp(4)
    ca.set("after3", mp(-3))  # and invalidations flow on the new master
    wait_for(lambda: shm(cb, b"after3") != mp(103), 5, "an invalidation from the new master")
    assert cb.get("after3") == mp(-3)


def test_a_sentinel_down_the_next_one_answers(topology, host):
    t = topology(sentinels=2)
    s1, s2 = t.sentinels
    a = host("a", t)
    ca = client(a)
    assert status(a)["redis"]["sentinel"] == s1.addr
    s1.kill()
    t.primary.client().client_kill_filter(_type="normal", skipme=True)  # both links reconnect, asking again
    wait_for(lambda: status(a)["redis"]["sentinel"] == s2.addr, 10, "the second Sentinel to answer")
    wait_coherent(a)
    ca.set("x", mp(1))
    wait_flushed(a)
    assert value(t.primary, P + b"x") == mp(1)
    # No Sentinel at all: the link keeps retrying, each attempt bounded, and says why.
    s2.kill()
    t.primary.client().client_kill_filter(_type="normal", skipme=True)
    wait_for(lambda: "no Sentinel named the master" in status(a)["redis"]["last_error"], 10,
             "the data link to report the Sentinels down")
    st = status(a)
    assert st["redis"]["state"] != "connected" and st["redis_sentinel_query_failures_total"] >= 1
    s2.start()
    wait_coherent(a)
    assert status(a)["redis"]["sentinel"] == s2.addr


def test_the_sentinels_own_password_from_its_file(topology, host, tmp_path):
    t = topology(password="sentinel-pw")
    pw = tmp_path / "sentinel-password"
    pw.write_text("wrong\n")
    pw.chmod(0o600)
    d = Daemon(tmp_path, name="a", **{**FAST, **t.opts(redis_sentinel_password_file=pw)})
    try:
        wait_for(lambda: "no Sentinel named the master" in status(d)["redis"]["last_error"], 10,
                 "the wrong Sentinel password to be reported")
        assert status(d)["redis_connected"] == 0
        pw.write_text("sentinel-pw\n")
        d.signal(signal.SIGHUP)  # read again, used from the next connection to a Sentinel
        wait_coherent(d)
        assert status(d)["redis"]["master"] == where(t.primary)
    finally:
        assert d.stop() == 0, d.log()
    pw.chmod(0o644)  # as redis_password_file: readable by others is refused at start
    bad = Daemon(tmp_path, name="b", start=False, **{**FAST, **t.opts(redis_sentinel_password_file=pw)})
    r = subprocess.run(bad.args(), capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "redis_sentinel_password_file" in r.stdout + r.stderr, r


def test_replica_promoted_while_writes_are_queued(topology, host):
    t = topology()
    a, b = host("a", t), host("b", t)
    ca, cb = client(a), client(b)
    ca.set("seed", mp(0))
    wait_flushed(a)
    wait_for(lambda: value(t.replica, P + b"seed") == mp(0), 5, "the replica to sync")
    t.primary.pause()  # SIGSTOP: the data link times out, the Sentinel sees it down and promotes the replica
    try:
        n = 200
        for i in range(n):
            ca.set(f"q{i}", mp(i))
        wait_for(lambda: role(t.replica) == "master", 20, "the replica to be promoted")
        st = wait_flushed(a, timeout=20)
    finally:
        t.primary.resume()
    # Every queued write reached the new master, or was reported dropped or refused.
    r = t.replica.client()
    missing = [i for i in range(n) if r.get(P + f"q{i}".encode()) != mp(i)]  # promoted: no longer drops clients
    reported = st["redis_queue_dropped_total"] + st["redis_queue_failed_total"]
    assert len(missing) <= reported, (missing[:10], reported)
    assert st["redis"]["master"] == where(t.replica)
    wait_coherent(a, b)
    present = next(i for i in range(n) if i not in missing)
    assert cb.get(f"q{present}") == mp(present)


@pytest.mark.skipif(not os.environ.get("NEARCACHE_SENTINEL_LONG"), reason="NEARCACHE_SENTINEL_LONG=1 runs it")
def test_three_sentinels_quorum_two_fail_over_with_one_sentinel_down(topology, host):
    t = topology(sentinels=3, quorum=2)
    for s in t.sentinels:  # quorum 2 needs Sentinels that know each other (hello messages every 2 s)
        wait_for(lambda: len(s.command("SENTINEL", "sentinels", MASTER)) == 2, 30, "the Sentinels to meet")
    a, b = host("a", t), host("b", t)
    ca, cb = client(a), client(b)
    ca.set("before", mp(1))
    wait_flushed(a)
    wait_for(lambda: value(t.replica, P + b"before") == mp(1), 5, "the replica to sync")
    t.sentinels[0].kill()  # the first Sentinel listed, and the one subscribed to: the others answer
    t.primary.kill()
    ca.set("after", mp(2))
    wait_for(lambda: value(t.replica, P + b"after") == mp(2), 30, "the write on the new master")
    wait_coherent(a, b)
    assert cb.get("after") == mp(2) and cb.get("before") == mp(1)
    st = status(a)
    assert st["redis"]["master"] == where(t.replica) and st["redis_sentinel_failovers_total"] >= 1
    assert st["redis"]["sentinel"] != t.sentinels[0].addr


def test_sentinel_over_tls_fails_over_to_the_replica(redis_servers, tmp_path, host):
    """TLS only, everywhere: the Sentinel, the primary and the replica listen on
    TLS ports (no plain TCP), replication and the Sentinel's own links use TLS,
    and the daemons know `rediss://` and the CA only."""
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")

    def tls(port: int) -> dict:
        return dict(tls_port=port, tls_cert_file=pki / "server.crt", tls_key_file=pki / "server.key",
                    tls_ca_cert_file=pki / "ca.crt", tls_auth_clients="no", tls_replication="yes")

    pport, rport = free_port(), free_port()
    primary = redis_servers("tls-primary", **tls(pport))
    replica = redis_servers("tls-replica", **tls(rport), replicaof=f"127.0.0.1 {pport}")
    wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up", 10,
             "the replica to sync over TLS")
    s = Sentinel(tmp_path, "tls-s1", primary, MASTER, tls=pki, master_port=pport)
    try:
        wait_for(lambda: len(s.command("SENTINEL", "replicas", MASTER)) == 1, 10, "the Sentinel to see the replica")
        t = Topology(primary, replica, [s])
        a = host("a", t, url="rediss://", redis_tls_ca_file=pki / "ca.crt")
        b = host("b", t, url="rediss://", redis_tls_ca_file=pki / "ca.crt")
        ca, cb = client(a), client(b)
        ca.set("k", mp(1))
        wait_flushed(a)
        assert cb.get("k") == mp(1)
        st = status(a)
        assert st["redis"]["tls"] == "on" and st["redis"]["master"] == f"127.0.0.1:{pport}"
        primary.kill()
        wait_for(lambda: s.master_addr()[1] == rport, 20, "the Sentinel to promote the replica")
        ca.set("k", mp(2))
        wait_for(lambda: value(replica, P + b"k") == mp(2), 20, "the write on the promoted replica, over TLS")
        wait_coherent(a, b, timeout=20)
        wait_for(lambda: cb.get("k") == mp(2), 10, "b to read the write from the new master")
        assert status(a)["redis"]["master"] == f"127.0.0.1:{rport}"
    finally:
        s.kill()  # the host fixture stops the daemons (they need no Sentinel to stop)
