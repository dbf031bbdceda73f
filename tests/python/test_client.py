"""nearcache.Client against a real nearcached: every operation, shared-memory hits, asyncio."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

import nearcache
from nearcache import Client, _native, packb


@pytest.fixture
def client(module_daemon):
    c = Client(module_daemon.socket)
    c.clear()
    yield c
    c.close()


def test_hello_maps_the_segment(client, module_daemon):
    assert client.ping()
    assert client.info["protocol"] == 2 and client.info["layout"] == _native.LAYOUT_VERSION
    assert client.segment.is_open and client.segment_path == module_daemon.segment
    assert client.segment.generation == client.info["generation"]


def test_hits_come_from_shared_memory(client):
    client.set("k", b"v" * 200, ttl=60)
    before = _native.Segment.totals()["hits"]
    assert client.get("k") == b"v" * 200
    assert client.get(b"k") == b"v" * 200
    assert _native.Segment.totals()["hits"] == before + 2
    assert client.segment.get(b"k") == (_native.HIT, b"v" * 200, 0)


def test_set_get_flags_ttl(client):
    assert client.set("f", b"x", ttl=None, flags=0x01)
    assert client.get_entry("f") == (b"x", 1)
    assert client.fetch(b"f") == (b"x", 1)
    assert client.set("gone", b"x", ttl=0) and client.get("gone") is None
    assert client.set("short", b"x", ttl=0.2) and client.get("short") == b"x"
    time.sleep(0.3)
    assert client.get("short") is None


def test_add_delete_touch_has_key(client):
    assert client.add("a", b"1") is True
    assert client.add("a", b"2") is False
    assert client.get("a") == b"1"
    assert client.has_key("a") and not client.has_key("nope")
    assert client.touch("a", 0.2) and not client.touch("nope", 1)
    time.sleep(0.3)
    assert not client.has_key("a")
    client.set("d", b"1")
    assert client.delete("d") is True and client.delete("d") is False


def test_many(client):
    assert client.set_many({"m1": b"1", "m2": b"2", b"m3": b"3"}, ttl=60) == []
    assert client.get_many(["m1", "m2", "m3", "mx"]) == {"m1": b"1", "m2": b"2", "m3": b"3"}
    assert client.fetch_many([b"m1", b"mx"]) == [(b"1", 0), None]
    assert client.delete_many(["m1", "m2", "mx"]) == 2
    keys = [f"bulk{i}" for i in range(2500)]  # more than one frame
    assert client.set_many({k: k.encode() for k in keys}) == []
    assert client.fetch_many([k.encode() for k in keys]) == [(k.encode(), 0) for k in keys]
    assert client.delete_many(keys) == 2500


def test_set_many_reports_values_over_the_limit(client, module_daemon):
    big = b"x" * (client.info["value_limit"] + 1)
    assert client.set_many({"ok": b"1", "big": big}) == ["big"]
    assert client.set("big", big) is False  # logged, not stored
    strict = Client(module_daemon.socket, strict=True)
    with pytest.raises(nearcache.ValueTooLarge, match="VALUE_TOO_LARGE"):
        strict.set("big", big)


def test_incr_decr(client):
    assert client.incr("n") is None
    client.set("n", packb(41))
    assert client.incr("n") == 42 and client.decr("n", 50) == -8
    client.set("s", packb("text"))
    with pytest.raises(nearcache.ProtocolError, match="NOT_INTEGER"):
        client.incr("s")


def test_clear_prefix(client):
    client.set_many({"a:1": b"1", "ab:1": b"2", "b:1": b"3"})
    assert client.clear("a:") == 1
    assert client.get_many(["a:1", "ab:1", "b:1"]) == {"ab:1": b"2", "b:1": b"3"}
    assert client.clear() == 2


def test_lease_and_release(client, module_daemon):
    first = client.lease("L", lease_ttl=5, wait=0.1)
    assert not first.hit and first.token is not None
    other = Client(module_daemon.socket)
    assert other.lease("L", lease_ttl=5, wait=0.05) == nearcache.Lease(hit=False)  # timed out waiting
    got = []
    t = threading.Thread(target=lambda: got.append(other.lease("L", lease_ttl=5, wait=5)))
    t.start()
    time.sleep(0.1)
    client.set("L", b"computed")  # ends the lease; the waiter gets the value
    t.join()
    assert got[0].hit and got[0].value == b"computed"
    lease = client.lease("L2", 5, 0.1)
    assert client.release("L2", lease.token) is True
    assert client.release("L2", lease.token) is False


def test_threads_use_their_own_connections(client):
    errors = []
    barrier = threading.Barrier(8)
    live = []

    def work(i):
        try:
            for j in range(200):
                client.set(f"t{i}-{j}", str(j).encode())
                assert client.fetch(f"t{i}-{j}".encode()) == (str(j).encode(), 0)
            barrier.wait()  # every thread alive with its connection open
            if i == 0:
                live.append(len(client.status()["connections"]))
            barrier.wait()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert live[0] >= 8


def test_asyncio_client(client):
    async def main():
        assert await client.aset("x", b"1", 60)
        assert await client.aget("x") == b"1"
        assert await client.afetch(b"x") == (b"1", 0)
        assert await client.aadd("x", b"2") is False
        results = await asyncio.gather(*(client.aset(f"g{i}", b"%d" % i) for i in range(50)))
        assert all(results)
        assert await client.afetch_many([b"g1", b"g49", b"nope"]) == [(b"1", 0), (b"49", 0), None]
        assert await client.aincr("nope") is None
        assert await client.atouch("x", 10) and await client.ahas_key("x")
        assert await client.adelete("x") and not await client.ahas_key("x")
        lease = await client.alease("al", 5, 0.1)
        assert lease.token is not None and await client.arelease("al", lease.token)
        assert await client.adelete_many(["g1", "g2"]) == 2
        return await client.aclear()

    assert asyncio.run(main()) >= 48
    # A second event loop gets its own connection.
    assert asyncio.run(client.aset("y", b"2")) and client.get("y") == b"2"


@pytest.mark.parametrize("busy_poll", [0.0, 50e-6, 0.5])
def test_replies_arrive_whether_the_client_polls_or_blocks(module_daemon, busy_poll):
    """busy_poll only decides how a reply is waited for: polled, blocked on, or both."""
    c = Client(module_daemon.socket, busy_poll=busy_poll, use_shm=False)
    try:
        for i in range(200):
            assert c.set(f"bp:{i}", b"v%d" % i, ttl=None)
        assert [c.get(f"bp:{i}") for i in range(200)] == [b"v%d" % i for i in range(200)]
        # A reply that takes longer than the poll (a lease wait) is still received.
        key = f"bp:wait:{busy_poll}"
        lease = c.lease(key, lease_ttl=5, wait=5)
        assert lease.token
        other = Client(module_daemon.socket, busy_poll=busy_poll, use_shm=False)
        t = threading.Timer(0.05, lambda: c.set(key, b"done", ttl=None))
        t.start()
        waited = other.lease(key, lease_ttl=5, wait=5)
        t.join()
        assert waited.value == b"done"
        other.close()
    finally:
        c.close()
