"""COMPRESSOR (nearcache.compression, native/compression.cc): values above
COMPRESS_MIN_BYTES stored compressed and marked in their flags, read by every
reader whatever its settings, natively on the hit path for zlib, zstd and lz4;
a value whose codec the reader lacks is a counted miss, never misread; across
hosts through the Redis tier too."""
from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from nearcache import _native, packb, unpackb
from nearcache import compression as C
from nearcache.client import HIT, Client
from nearcache.django import MisconfiguredNearCache, NearCache
from support.nearcached import Daemon
from support.redis_server import RedisServer
from support.tier import shm, wait_coherent, wait_flushed

VALUE = {"rows": [{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(400)]}  # ~14 KB, compressible
CODECS = ["zlib", "zstd", "lz4", "lzma"]


def raw(cache, key):
    """(data, flags) of a key as the daemon holds it."""
    e = cache._client.fetch(cache.make_key(key).encode())
    return None if e is None else (e[0], e[1])


@pytest.mark.parametrize("codec", CODECS)
def test_stored_compressed_and_read_by_every_reader(module_daemon, make_cache, codec):
    w = make_cache(module_daemon, COMPRESSOR=codec, SYNC_WRITES=True)
    w.set("big", VALUE)
    data, flags = raw(w, "big")
    plain = packb(VALUE)
    assert C.codec_of(flags) == C.CODECS[codec] and flags & 1 == 0
    assert data[0] == 0xC1 and int.from_bytes(data[1:5], "big") == len(plain) and len(data) < len(plain) / 3
    # every reader: the writer, one with no COMPRESSOR, one with another codec; hits from shared memory
    for r in (w, make_cache(module_daemon, SYNC_WRITES=True),
              make_cache(module_daemon, COMPRESSOR="zstd" if codec != "zstd" else "lz4")):
        assert r.get("big") == VALUE  # the first call maps the segment
        st, v = r._nc_probe(r.make_key("big").encode())
        assert st == HIT and v == VALUE and r.get_many(["big", "nope"]) == {"big": VALUE}
        assert asyncio.run(r.aget("big")) == VALUE


def test_small_and_incompressible_values_stay_plain(module_daemon, make_cache):
    c = make_cache(module_daemon, COMPRESSOR="zlib", COMPRESS_MIN_BYTES=2000, SYNC_WRITES=True)
    c.set("small", "x" * 1500)
    assert raw(c, "small")[1] == 0
    noise = os.urandom(50000)
    c.set("noise", noise)
    assert raw(c, "noise") == (packb(noise), 0) and c.get("noise") == noise
    c.set("n", 10 ** 6)  # integers stay msgpack ints: the daemon adds to them
    assert c.incr("n") == 10 ** 6 + 1


def test_serializer_output_is_what_is_compressed(module_daemon, make_cache):
    c = make_cache(module_daemon, SERIALIZER="pickle", COMPRESSOR="lz4", SYNC_WRITES=True)
    c.set("pk", VALUE)
    data, flags = raw(c, "pk")
    assert flags == 0x01 | 3 << 1
    assert c.get("pk") == VALUE
    assert make_cache(module_daemon, SERIALIZER="pickle").get("pk") == VALUE  # no COMPRESSOR: still read


def test_unknown_codec_is_a_counted_miss(module_daemon, make_cache):
    writer = Client(module_daemon.socket)
    reader = make_cache(module_daemon)
    valid = packb("looks like a value")  # valid msgpack: a reader ignoring the codec would misread it
    for codec in (5, 6, 7):
        key = reader.make_key(f"codec{codec}").encode()
        assert writer.set(key, valid, ttl=60, flags=codec << 1)
        before = reader._client.counters["undecodable"]
        assert reader.get(f"codec{codec}", "miss") == "miss"
        assert reader.get_many([f"codec{codec}"]) == {}
        assert reader._client.counters["undecodable"] > before
    writer.close()


def test_a_reader_that_ignores_the_flags_cannot_misread():
    frame = _native.compress(1, packb(VALUE))
    with pytest.raises(ValueError):
        unpackb(frame)  # 0xC1 is never msgpack: an older nearcache fails to decode, a miss


def test_corrupt_frame_is_a_counted_miss(module_daemon, make_cache):
    writer = Client(module_daemon.socket)
    reader = make_cache(module_daemon, COMPRESSOR="zlib")
    good = _native.compress(2, packb(VALUE))
    cases = {"trunc": (good[:-10], 2 << 1), "wronglen": (good[:1] + b"\0\0\0\1" + good[5:], 2 << 1),
             "nohdr": (packb("x" * 100), 1 << 1), "lzma": (b"\xc1\0\0\0\5garbage", 4 << 1)}
    for name, (data, flags) in cases.items():
        assert writer.set(reader.make_key(name).encode(), data, ttl=60, flags=flags)
        before = reader._client.counters["undecodable"]
        assert reader.get(name, "miss") == "miss", name
        assert reader._client.counters["undecodable"] > before, name
    writer.close()


def test_django_redis_compressors(module_daemon, make_cache):
    dr = "django_redis.compressors."
    # mapped by name to the codec they use, without importing their libraries (pyzstd, lz4 are not installed)
    for cls, codec in [("zlib.ZlibCompressor", 1), ("zstd.ZStdCompressor", 2), ("lz4.Lz4Compressor", 3),
                       ("lzma.LzmaCompressor", 4)]:
        assert C.make_compressor(dr + cls).codec == codec
    assert C.make_compressor(dr + "identity.IdentityCompressor") is None
    # any other class, django-redis's gzip one here (constructed with OPTIONS): codec 5
    g = make_cache(module_daemon, COMPRESSOR=dr + "gzip.GzipCompressor", SYNC_WRITES=True)
    g.set("gz", VALUE)
    data, flags = raw(g, "gz")
    assert C.codec_of(flags) == 5 and data[5:7] == b"\x1f\x8b"  # a gzip member in the frame
    assert g.get("gz") == VALUE
    plain = make_cache(module_daemon, COMPRESSOR="zlib")
    before = plain._client.counters["undecodable"]
    assert plain.get("gz", "miss") == "miss"  # lacks the class: a miss, counted
    assert plain._client.counters["undecodable"] > before


def test_compressor_settings_errors(module_daemon, make_cache):
    c = make_cache(module_daemon, COMPRESSOR="brotli")
    assert isinstance(c, MisconfiguredNearCache)
    with pytest.raises(Exception, match="COMPRESSOR.*'brotli' is not one of zlib, zstd, lz4, lzma"):
        c.get("k")
    assert isinstance(make_cache(module_daemon, COMPRESSOR="no.such.Compressor"), MisconfiguredNearCache)
    assert isinstance(make_cache(module_daemon, COMPRESS_MIN_BYTES=-1), MisconfiguredNearCache)


def test_get_or_set_and_pending_writes_compressed(module_daemon, make_cache):
    c = make_cache(module_daemon, COMPRESSOR="zstd")  # asynchronous writes: read back from the pending table
    c.set("pend", VALUE)
    assert c.get("pend") == VALUE
    assert c.get_or_set("gos", lambda: VALUE) == VALUE
    c._client.flush()
    assert make_cache(module_daemon).get("gos") == VALUE


def test_compressed_values_cross_hosts_through_redis(tmp_path):
    r = RedisServer(tmp_path / "redis")
    a = Daemon(tmp_path / "a", redis_url=r.url, redis_prefix="cmp:")
    b = Daemon(tmp_path / "b", redis_url=r.url, redis_prefix="cmp:")
    try:
        wait_coherent(a, b)
        wa = NearCache(a.socket, {"OPTIONS": {"COMPRESSOR": "lz4", "SYNC_WRITES": True}})
        rb = NearCache(b.socket, {"OPTIONS": {}})
        wa.set("x", VALUE)
        wait_flushed(a)
        assert rb.get("x") == VALUE  # read through Redis: the envelope carries the flags
        k = rb.make_key("x").encode()
        assert shm(rb._client, k) is not None  # installed on host b, compressed
        assert rb.get("x") == VALUE
    finally:
        a.stop()
        b.stop()
        r.kill()
        shutil.rmtree(tmp_path, ignore_errors=True)


class Failing:
    """A COMPRESSOR class whose decompress raises something that is not a ValueError."""
    def compress(self, data):
        return b"x" + data[: len(data) // 4]

    def decompress(self, data):
        raise KeyError("no")


def test_a_class_that_raises_anything_is_a_counted_miss(module_daemon, make_cache):
    c = make_cache(module_daemon, COMPRESSOR=f"{__name__}.Failing", SYNC_WRITES=True)
    c.set("fails", VALUE)
    assert C.codec_of(raw(c, "fails")[1]) == 5
    before = c._client.counters["undecodable"]
    assert c.get("fails", "miss") == "miss" and c.get_many(["fails"]) == {}
    assert c.get("fails", "miss") == "miss"
    assert c._client.counters["undecodable"] > before


@pytest.mark.parametrize("codec", [1, 2, 3])
def test_native_decompress_of_damaged_frames_raises_or_checks_length(codec):
    import random
    rnd = random.Random(codec)
    plain = packb(VALUE)
    frame = _native.compress(codec, plain)
    assert _native.decompress(codec, frame) == plain
    for i in range(3000):
        b = bytearray(frame)
        kind = i % 3
        if kind == 0:
            b = b[:rnd.randrange(len(b))]
        elif kind == 1:
            for _ in range(rnd.randrange(1, 8)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
        else:
            b[1:5] = rnd.randrange(1 << 32).to_bytes(4, "big")  # a lying length header
        try:
            out = _native.decompress(codec, bytes(b))
        except ValueError:
            continue
        assert len(out) == int.from_bytes(b[1:5], "big")  # never more nor less than announced


@pytest.mark.parametrize("codec", [1, 2, 3])
def test_a_length_header_the_data_cannot_hold_is_refused_before_allocating(codec):
    frame = _native.compress(codec, b"x" * 100)
    lying = frame[:1] + (900 << 20).to_bytes(4, "big") + frame[5:]
    with pytest.raises(ValueError, match="length header|corrupt"):
        _native.decompress(codec, lying)
