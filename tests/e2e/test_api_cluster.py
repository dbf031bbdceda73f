"""The django-redis API's ops on a real three-master Redis Cluster (two hosts):
TTL, REPLACE and locks routed to the key's master (a lock's key in its name's
slot), DELETE_PATTERN run on every master."""
from __future__ import annotations

import pytest

from support.rawproto import EXISTS, LOCK, LOCK_QUERY, NOT_FOUND, OK, REPLACE, TTL, UNLOCK, RawConn, mp
from support.redis_cluster import RedisCluster
from support.tier import client, wait_flushed

P = b"nearcache:"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RedisCluster(tmp_path_factory.mktemp("cluster"), masters=3)
    yield c
    c.kill()


@pytest.fixture
def hosts(host, cluster):
    for n in cluster.masters():
        n.client().flushall()
    return host("a", url=cluster.url), host("b", url=cluster.url)


def test_ttl_replace_locks_and_delete_pattern_on_every_master(hosts, cluster):
    a, b = hosts
    ca, cb = client(a), client(b)
    for i in range(30):
        ca.set(f"k{i}", mp(i), ttl=60 + i)
    wait_flushed(a)
    assert len(cluster.keys(P + b"k*")) == 3  # on every master
    with RawConn(b.socket) as c:
        for i in range(30):
            r = c.call(TTL, b"k%d" % i)
            assert r[1] == OK and (59 + i) * 1000 < r[2] <= (60 + i) * 1000
            assert c.call(REPLACE, b"k%d" % i, mp(-i), None)[1] == OK
            assert c.call(LOCK, b"job%d" % i, b"t", 10_000)[1] == OK
        assert c.call(REPLACE, b"absent", mp(0), None)[1] == NOT_FOUND
    with RawConn(a.socket) as c:
        for i in range(30):
            assert c.call(TTL, b"k%d" % i)[1:] == [OK, None]
            assert c.call(LOCK, b"job%d" % i, b"u", 10_000)[1] == EXISTS    # held, decided on its master
            assert c.call(LOCK_QUERY, b"job%d" % i)[2] == b"t"
            assert c.call(UNLOCK, b"job%d" % i, b"t")[1] == OK
    assert cluster.get(P + b"k7") == mp(-7)
    assert cb.delete_pattern("k1*") >= 0
    wait_flushed(b)
    left = sorted(k for keys in cluster.keys(P + b"k*").values() for k in keys)
    assert left == sorted(P + b"k%d" % i for i in [0, *range(2, 10), *range(20, 30)])
