"""Values this process cannot decode are misses (counted, logged once per key and
interval), never exceptions; a client_name that is not UTF-8 does not break
STATUS for anyone. Real daemon, raw bytes written over the socket."""
from __future__ import annotations

import asyncio
import logging

import msgpack
import pytest

from nearcache import Client
from support.rawproto import RawConn, pack


@pytest.fixture
def cache(module_daemon, make_cache):
    c = make_cache(module_daemon, WARN_INTERVAL=60)
    c.clear()
    return c


def undecodable_logged(caplog):
    return [r for r in caplog.records if "cannot be decoded" in r.getMessage()]


@pytest.mark.parametrize("use_shm", [True, False])
def test_undecodable_values_are_misses(module_daemon, make_cache, caplog, use_shm):
    caplog.set_level(logging.WARNING, logger="nearcache")
    c = make_cache(module_daemon, USE_SHM=use_shm, WARN_INTERVAL=60)
    raw = Client(module_daemon.socket, strict=True)
    for name, data in (("reserved", b"\xc1"), ("truncated", b"\x92\x01"), ("text", b"not msgpack")):
        raw.set(c._key(name), data)
    before = c._client.counters["undecodable"]
    for _ in range(3):
        for name in ("reserved", "truncated", "text"):
            assert c.get(name, "dflt") == "dflt"
        assert c.get_many(["reserved", "truncated", "text"]) == {}
        assert asyncio.run(c.aget("reserved", "d")) == "d"
        assert asyncio.run(c.aget_many(["text"])) == {}
    assert c._client.counters["undecodable"] > before
    # Once per key and interval.
    keys = [r.getMessage().split("of ")[1].split(" cannot")[0] for r in undecodable_logged(caplog)]
    assert len(keys) == len(set(keys)) == 3
    # get_or_set computes instead of raising; ADD keeps the stored bytes.
    assert c.get_or_set("text", "computed") == "computed"
    assert asyncio.run(c.aget_or_set("text", "computed")) == "computed"


def test_serializer_flag_without_a_serializer_is_a_miss(cache, module_daemon):
    Client(module_daemon.socket, strict=True).set(cache._key("foreign"), b"\x80\x04K\x01.", flags=1)
    assert cache.get("foreign", "miss") == "miss"


def test_status_with_a_client_name_that_is_not_utf8(module_daemon):
    with RawConn(module_daemon.socket) as raw:
        # HELLO with a str client_name holding bytes that are not UTF-8.
        raw.send_raw(b"\x94\x01\x01\x02\xa2\xff\xfe")
        reply = raw.recv()
        assert reply[1] == 0, reply
        st = Client(module_daemon.socket, strict=True).status()
        assert isinstance(st["connections"], list) and len(st["connections"]) >= 2


def test_own_client_name_that_is_not_utf8(module_daemon):
    name = b"worker-\xff".decode("utf-8", "surrogateescape")
    c = Client(module_daemon.socket, strict=True, client_name=name)
    assert c.set(b"n", b"1") and c.get(b"n") == b"1"
    names = [x.get("name") for x in c.status()["connections"]]
    assert name in names, names
