"""Redis Cluster over TLS: two daemons (two hosts) on a real three-master
cluster whose nodes speak only TLS to clients that use the announced ports
(`tls-cluster yes`: CLUSTER SLOTS names the TLS ports, the bus is TLS too).
The seed URL is rediss://; every master's data and invalidation links are
verified against the test CA; writes land on every master, the other host
reads them through and is invalidated; ADD is decided on the key's master; a
slot moved to another master is followed there (MOVED names its TLS port),
by a queued write and by an ADD (whose MOVED comes inside its transaction).
"""
from __future__ import annotations

import pytest

from support.certs import make_pki
from support.rawproto import ADD, EXISTS, OK, RawConn, mp
from support.redis_cluster import RedisCluster
from support.tier import client, shm, status, wait_flushed, wait_for

P = b"nearcache:"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pki):
    c = RedisCluster(tmp_path_factory.mktemp("tlscluster"), masters=3, tls=pki)
    yield c
    c.kill()


def test_cluster_over_tls_writes_reads_invalidations_and_atomics(host, cluster, pki):
    assert cluster.url.startswith("rediss://")
    a = host("a", url=cluster.url, redis_tls_ca_file=pki / "ca.crt")
    b = host("b", url=cluster.url, redis_tls_ca_file=pki / "ca.crt")
    st = status(a)
    assert st["redis_cluster_masters"] == 3 and st["redis_tls"] == 1 and st["redis_tls_verify"] == 1, st["redis"]
    # Every master is reached on its TLS port (the announced one).
    tls_ports = {str(cluster.port_of(n)) for n in cluster.nodes}
    assert {m.rsplit(":", 1)[1] for m in st["redis"]["master"].split(",")} <= tls_ports, st["redis"]
    ca, cb = client(a), client(b)
    for i in range(30):
        ca.set(f"t{i}", mp(i))
    wait_flushed(a)
    assert all(len(v) >= 3 for v in cluster.keys(P + b"t*").values())
    for i in range(30):
        assert cb.get(f"t{i}") == mp(i)  # read through, over TLS, from the key's master
    for i in range(0, 30, 5):
        cb.set(f"t{i}", mp(100 + i))
    wait_flushed(b)
    for i in range(0, 30, 5):
        wait_for(lambda: shm(ca, f"t{i}".encode()) != mp(i), 5, "the invalidation over TLS")
        assert ca.get(f"t{i}") == mp(100 + i)
    with RawConn(a.socket) as ra, RawConn(b.socket) as rb:
        for i in range(9):
            k = f"n{i}".encode()
            assert ra.call(ADD, k, mp(1), None)[1] == OK
            assert rb.call(ADD, k, mp(2), None)[1] == EXISTS
    st = status(a)
    assert st["redis_atomic_errors_total"] == 0 and st["redis_tls_verify_failures_total"] == 0, st["redis"]


def test_cluster_over_tls_follows_a_moved_slot_to_the_new_masters_tls_port(host, cluster, pki):
    a = host("a", url=cluster.url, redis_tls_ca_file=pki / "ca.crt")
    ca = client(a)
    ca.set("m1", mp(1))
    wait_flushed(a)
    slot = cluster.slot(P + b"m1")
    src = cluster.owner(slot)
    dst = next(n for n in cluster.masters() if n is not src)
    cluster.move_slot(slot, dst)
    ca.set("m1", mp(2))  # sent to the old master first: MOVED, then to dst over TLS
    wait_flushed(a)
    assert dst.client().get(P + b"m1") == mp(2)
    assert status(a)["redis_cluster_moved_total"] >= 1
    # An ADD answered MOVED (as EXECABORT of its MULTI) is sent to the new master.
    k = next(f"x{i}".encode() for i in range(100) if cluster.slot(P + f"x{i}".encode()) != slot)
    slot2 = cluster.slot(P + k)
    src2 = cluster.owner(slot2)
    dst2 = next(n for n in cluster.masters() if n is not src2)
    cluster.move_slot(slot2, dst2)
    redirects = status(a)["redis_cluster_redirect_replies_total"]
    with RawConn(a.socket) as ra:
        assert ra.call(ADD, k, mp(7), None)[1] == OK
    assert dst2.client().get(P + k) == mp(7)
    st = status(a)
    assert st["redis_cluster_redirect_replies_total"] > redirects, st["redis"]
    assert st["redis_cluster_slots_moved_total"] == 2 and st["redis_atomic_errors_total"] == 0, st["redis"]
    assert st["redis_local_decisions_total"] == 0  # decided on the new master, not on this host
    assert st["redis_tls_verify_failures_total"] == 0
