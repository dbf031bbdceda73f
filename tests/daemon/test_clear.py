"""CLEAR on a full table, with and without a prefix, while other clients are served."""
from __future__ import annotations

import threading
import time

import msgpack
import pytest

from support.nearcached import Daemon
from support.rawproto import CLEAR, GET, OK, PING, SET, SET_MANY, RawConn
from support.wait import wait_for


def fill(sock, n, value=b"v" * 150):
    c = RawConn(sock)
    batch = 1000
    for start in range(0, n, batch):
        items = [[(b"a:%d" if i % 2 else b"b:%d") % i, value, 0] for i in range(start, min(n, start + batch))]
        c.send(SET_MANY, items, None)
    for r in c.recv_n((n + batch - 1) // batch):
        assert r[1] == OK
    return c


@pytest.mark.parametrize("prefix", [None, b"a:"])
def test_clear_full_table_while_serving(tmp_path, prefix):
    with Daemon(tmp_path, segment_size="32M") as d:
        c = fill(d.socket, 300000)
        st = c.status()
        entries = st["entries"]
        assert entries > 150000 and st["evictions_total"] > 0  # really full
        lat = []
        stop = threading.Event()

        def other_client():
            o = RawConn(d.socket)
            while not stop.is_set():
                t0 = time.monotonic()
                assert o.call(PING)[1] == OK
                lat.append(time.monotonic() - t0)

        t = threading.Thread(target=other_client)
        t.start()
        wait_for(lambda: lat, what="the other client to be served")
        t0 = time.monotonic()
        c.send(CLEAR, *([prefix] if prefix else []), id=1)
        c.send(SET, b"a:new", b"after", None, id=2)  # received after the CLEAR: survives it
        replies = {r[0]: r for r in c.recv_n(2)}
        clear_time = time.monotonic() - t0
        served = len(lat)
        wait_for(lambda: len(lat) >= served + 3, what="the other client to be served after the CLEAR too")
        stop.set()
        t.join()
        removed = replies[1][2]
        after = c.status()
        evicted = after["evictions_total"] - st["evictions_total"]  # the SET after may evict in a full table
        if prefix is None:
            assert removed + evicted == entries
            assert after["entries"] == 1
        else:
            assert 0 < removed < entries
            assert after["entries"] == entries - removed + 1 - evicted
            assert c.call(GET, b"a:1")[1] != OK
            # keys not under the prefix are still there (those not evicted before)
            assert after["entries"] > 1
        assert c.call(GET, b"a:new")[2] == b"after"
        assert after["cleared_total"] == removed
        assert len(lat) > 10
        # Other clients were served throughout: no stall anywhere near the clear's duration.
        print(f"clear of {entries} entries took {clear_time * 1000:.1f} ms; max PING {max(lat) * 1000:.1f} ms")
        assert max(lat) < max(0.05, clear_time / 2)
        assert after["loop_lag_max_ms"] < 100


def test_clear_reached_in_a_resumed_turn_completes(tmp_path):
    """A CLEAR still pipelined when its connection has used up its turn (256 frames)
    runs when the loop resumes the connection, and goes on over later turns until it
    answers (the loop once went idle with it pending, and it never answered)."""
    with Daemon(tmp_path, segment_size="32M") as d:
        c = fill(d.socket, 100000)
        c.sock.settimeout(10)
        for round_ in range(5):
            frames = [[PING, c.next_id + 1 + i] for i in range(2000)]
            frames.append([CLEAR, c.next_id + 2001, b"a:%d" % round_])
            c.next_id += 2001
            c.send_raw(b"".join(msgpack.packb(f, use_bin_type=True) for f in frames))
            replies = c.recv_n(len(frames))
            assert replies[-1][:2] == [frames[-1][1], OK], replies[-1]
        assert c.status()["clears_pending"] == 0
