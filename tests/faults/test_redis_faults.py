"""The Redis tier under hostile or failing Redis contents (issue 12, items 3
and 6), with a real redis-server shared by two daemons (two hosts):

- a value far over value_limit written into Redis by another tool is refused
  before it is read (never buffered by the daemon), counted, and a miss;
- Redis refusing writes (maxmemory + noeviction) does not leave a value
  served on one host only; STATUS shows the refusal's cause and the log says
  it at warning level, rate-limited.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from attack import memory_kib, scale
from support.nearcached import Daemon
from support.rawproto import GET, LEASE, LEASED, NOT_FOUND, OK, SET, RawConn
from support.tier import FAST, status, wait_coherent, wait_flushed

MIB = 1 << 20


@pytest.fixture
def hosts(tmp_path, redis_server):
    made = []

    def make(*names, **options):
        for name in names:
            made.append(Daemon(tmp_path, name=name, redis_url=redis_server.url, **{**FAST, **options}))
        wait_coherent(*made[-len(names):])
        return made[-len(names):]

    yield make
    redis_server.client().config_set("maxmemory", 0)
    for d in made:
        assert d.stop() == 0, d.log()


def test_a_value_over_value_limit_in_redis_is_refused_before_it_is_read(hosts, redis_server, tmp_path):
    size = scale(80, 400) * MIB
    (a,) = hosts("a", value_limit="1M", redis_wait_ms=5000)  # each GET its own read, however busy the machine
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(size)  # zeros
    # Another tool writes it under the cache's prefix.
    subprocess.run(["redis-cli", "-s", redis_server.socket, "-x", "SET", "nearcache:huge"], stdin=open(big, "rb"),
                   check=True, stdout=subprocess.DEVNULL)
    assert redis_server.client().strlen("nearcache:huge") == size
    redis_server.client().set("nearcache:fine", b"\xa2ok")
    before = memory_kib(a.proc.pid)
    with RawConn(a.socket) as c:
        for _ in range(3):
            assert c.call(GET, b"huge")[1] == NOT_FOUND
        assert c.call(GET, b"fine")[1:3] == [OK, b"\xa2ok"]  # the read-through still works
        # LEASE (decided in Redis) does not fetch it either: no value, so the lease is granted.
        assert c.call(LEASE, b"huge", 5000, 0)[1] == LEASED
    st = status(a)
    assert st["redis_readthrough_oversize_total"] == 3
    grew = memory_kib(a.proc.pid)["VmHWM"] - before["VmHWM"]
    assert grew * 1024 < 8 * MIB, f"peak RSS grew {grew} KiB: the value was read"
    assert "over the 16777216 this daemon relays (redis_relay_max_bytes)" in a.log()  # its default
    assert a.log().count("this daemon relays") == 1  # rate-limited


def test_writes_redis_refuses_are_not_served_by_one_host_alone(hosts, redis_server):
    n = scale(300, 3000)
    a, b = hosts("a", "b")
    r = redis_server.client()
    with RawConn(a.socket) as ca, RawConn(b.socket) as cb:
        assert ca.call(SET, b"old", b"\x01", None)[1] == OK
        wait_flushed(a)
        assert cb.call(GET, b"old")[1:3] == [OK, b"\x01"]
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", 1)  # every write refused: OOM
        for i in range(n):
            assert ca.call(SET, b"k%d" % i, b"\x02", None)[1] == OK  # acknowledged locally
        assert ca.call(SET, b"old", b"\x03", None)[1] == OK
        wait_flushed(a)
        st = status(a)
        assert st["redis_queue_failed_total"] == n + 1
        assert st["redis_queue_refused_dropped_total"] == n + 1
        assert "OOM" in st["redis"]["last_write_refusal"] and "SET of 'old'" in st["redis"]["last_write_refusal"]
        assert st["redis"]["last_write_refusal_unix_ms"] > 0
        # Both hosts answer what Redis has: the refused values nowhere, the old value everywhere.
        for i in range(0, n, max(1, n // 50)):
            assert ca.call(GET, b"k%d" % i)[1] == NOT_FOUND
            assert cb.call(GET, b"k%d" % i)[1] == NOT_FOUND
        assert ca.call(GET, b"old")[1:3] == [OK, b"\x01"]
        assert cb.call(GET, b"old")[1:3] == [OK, b"\x01"]
        warnings = [l for l in a.log().splitlines() if "Redis refused" in l]
        assert 1 <= len(warnings) <= 2 and "[warning]" in warnings[0], warnings
        assert "local copies dropped" in warnings[0]
        # The limit lifted: writes reach Redis and the other host again.
        r.config_set("maxmemory", 0)
        assert ca.call(SET, b"k0", b"\x04", None)[1] == OK
        wait_flushed(a)
        deadline = time.monotonic() + 5
        while cb.call(GET, b"k0")[1:3] != [OK, b"\x04"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cb.call(GET, b"k0")[1:3] == [OK, b"\x04"]
