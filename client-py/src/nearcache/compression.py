"""nearcache/compression.py — COMPRESSOR: values above COMPRESS_MIN_BYTES stored compressed.

The codec is marked in the entry flags, bits 1..3 (`(flags & 0x0E) >> 1`):
1 zlib, 2 zstd, 3 lz4, 4 lzma, 5 the configured class's, 6 and 7 reserved.
The value is then a frame: 0xC1 (never a msgpack byte), the uncompressed
length (4 bytes, big-endian) and the codec's output (zlib stream, zstd frame,
lz4 block, xz stream, or the class's bytes). The serializer's output is what
is compressed, so FLAG_SERIALIZED keeps its meaning.

Every reader reads zlib, zstd, lz4 (natively, on the hit path:
client-py/native/compression.cc) and lzma (Python's lzma), whatever its own
COMPRESSOR, so that hosts with other settings read each other's values. Only
a reader configured with a class reads codec 5. A reader that lacks the codec
(codec 5 without the class, 6 or 7, an older nearcache, which sees 0xC1)
fails to decode the value: a miss, counted in counters["undecodable"].

django-redis's compressor classes are recognised by name and mapped to the
codec they use (zlib, zstd, lz4, lzma; the identity compressor is "none");
their own libraries (pyzstd, lz4) are not needed. Its gzip compressor, and
any other class with compress(bytes) -> bytes and decompress(bytes) -> bytes,
is codec 5.
"""
from __future__ import annotations

import lzma

from nearcache import _native

CODECS: dict[str, int] = {"zlib": 1, "zstd": 2, "lz4": 3, "lzma": 4}
CODEC_LZMA = 4
CODEC_CLASS = 5
CODEC_MASK: int = _native.CODEC_MASK
CODEC_SHIFT: int = _native.CODEC_SHIFT
FRAME_HEADER: int = _native.FRAME_HEADER
DEFAULT_MIN_BYTES = 1024
_NATIVE = (1, 2, 3)

_DR = "django_redis.compressors."
DJANGO_REDIS: dict[str, str | None] = {
    _DR + "zlib.ZlibCompressor": "zlib",
    _DR + "zstd.ZStdCompressor": "zstd",
    _DR + "lz4.Lz4Compressor": "lz4",
    _DR + "lzma.LzmaCompressor": "lzma",
    _DR + "identity.IdentityCompressor": None,
}


def codec_of(flags: int) -> int:
    return (flags & CODEC_MASK) >> CODEC_SHIFT


def _frame(body: bytes, n: int) -> bytes:
    return b"\xc1" + n.to_bytes(4, "big") + body


def _payload(frame: bytes) -> tuple[int, bytes]:
    if len(frame) < FRAME_HEADER or frame[0] != 0xC1:
        raise ValueError("nearcache: corrupt compressed value (no frame header)")
    return int.from_bytes(frame[1:5], "big"), frame[5:]


class Compressor:
    """One cache's COMPRESSOR: `apply` to what it writes, `decompress` as the
    hit path's hook for the codecs not done natively."""

    def __init__(self, codec: int, level: int = 0, min_bytes: int = DEFAULT_MIN_BYTES, obj=None):
        self.codec, self.level, self.min_bytes, self.obj = codec, level, min_bytes, obj

    def compress(self, data: bytes) -> bytes:
        """A frame of data."""
        if self.codec in _NATIVE:
            return _native.compress(self.codec, data, self.level)
        if self.codec == CODEC_CLASS:
            body = self.obj.compress(data)
            if not isinstance(body, (bytes, bytearray)):
                raise TypeError(f"nearcache: COMPRESSOR compress() returned {type(body).__name__}, not bytes")
            return _frame(bytes(body), len(data))
        return _frame(lzma.compress(data, preset=self.level or 6), len(data))

    def apply(self, data: bytes, flags: int) -> tuple[bytes, int]:
        """(data, flags) as stored: compressed when that is at least min_bytes and saves space."""
        if len(data) < self.min_bytes or flags & CODEC_MASK:
            return data, flags
        c = self.compress(data)
        if len(c) >= len(data):
            return data, flags
        return c, flags | self.codec << CODEC_SHIFT

    def wrap(self, encode):
        """encode(value) -> (data, flags), compressing its output."""
        apply = self.apply
        return lambda value: apply(*encode(value))

    def decompress(self, codec: int, frame: bytes) -> bytes:
        return decompress(codec, frame, self.obj)


def decompress(codec: int, frame: bytes, obj=None) -> bytes:
    """The payload of a frame (ValueError when this reader lacks the codec or the frame is corrupt)."""
    if codec in _NATIVE:
        return _native.decompress(codec, frame)
    n, body = _payload(frame)
    if codec == CODEC_LZMA:
        try:
            out = lzma.decompress(body, format=lzma.FORMAT_XZ)
        except lzma.LZMAError as e:
            raise ValueError(f"nearcache: corrupt compressed value (lzma: {e})") from None
    elif codec == CODEC_CLASS and obj is not None:
        try:
            out = obj.decompress(body)
        except Exception as e:  # django-redis's CompressorError, zlib.error, ...: a value this reader cannot use
            raise ValueError(f"nearcache: COMPRESSOR class failed to decompress ({type(e).__name__}: {e})") from e
        if not isinstance(out, bytes):
            raise ValueError(f"nearcache: COMPRESSOR decompress() returned {type(out).__name__}, not bytes")
    else:
        raise ValueError(f"nearcache: value compressed with codec {codec}, which this reader lacks"
                         + (" (COMPRESSOR is not a class here)" if codec == CODEC_CLASS else ""))
    if len(out) != n:
        raise ValueError("nearcache: corrupt compressed value (length differs from its header)")
    return out



def make_compressor(name, level=None, min_bytes=None, options: dict | None = None) -> Compressor | None:
    """The Compressor for a COMPRESSOR option value; None for no compression."""
    level = 0 if level is None else int(level)
    min_bytes = DEFAULT_MIN_BYTES if min_bytes is None else int(min_bytes)
    if name in (None, "", "none"):
        return None
    if isinstance(name, str) and name in CODECS:
        return Compressor(CODECS[name], level, min_bytes)
    if isinstance(name, str) and name in DJANGO_REDIS:
        mapped = DJANGO_REDIS[name]
        return None if mapped is None else Compressor(CODECS[mapped], level, min_bytes)
    from nearcache.settings import construct
    obj = construct(name, options, f"one of {', '.join(CODECS)}, 'none'")
    if not (callable(getattr(obj, "compress", None)) and callable(getattr(obj, "decompress", None))):
        raise TypeError(f"{name!r} has no compress(bytes) and decompress(bytes)")
    return Compressor(CODEC_CLASS, level, min_bytes, obj)
