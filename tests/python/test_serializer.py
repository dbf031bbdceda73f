"""The value format: exact round-trips, msgpack compatibility, pickle switch, corrupt input."""
from __future__ import annotations

import datetime as dt
import decimal
import pickle
import uuid
import zoneinfo
from collections import OrderedDict
from enum import IntEnum

import msgpack
import pytest

from nearcache import packb, unpackb
from nearcache.serializer import EXT_CODES, make_serializer


class Color(IntEnum):
    RED = 1


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


UTC = dt.timezone.utc
NY = zoneinfo.ZoneInfo("America/New_York")
VALUES = [
    None, True, False, 0, 1, -1, 127, 128, -32, -33, 255, 65536, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -2 ** 63,
    2 ** 64, -2 ** 63 - 1, 10 ** 40, -10 ** 40,
    0.0, -0.0, 1.5, 1e300, float("inf"),
    "", "text", "é" * 40, "😀" * 100, "x" * 70000,
    b"", b"\x00\xff", b"b" * 300, b"b" * 70000,
    [], [1, [2, [3]]], list(range(20)), {}, {"a": 1, "b": {"c": [1, 2]}}, {i: str(i) for i in range(20)},
    {1: "int key", (1, 2): "tuple key", None: "none key"},
    (), (1,), (1, (2, 3), [4]), {1, 2, 3}, set(), frozenset({1, "a"}), frozenset(),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6), dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5, microseconds=7))),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
    dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=NY), dt.datetime(2024, 11, 3, 1, 30, fold=0, tzinfo=NY),
    dt.datetime.min, dt.datetime.max,
    dt.date(2020, 2, 29), dt.date.min, dt.time(1, 2, 3, 4), dt.time(23, 59, tzinfo=UTC),
    dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.timedelta(0), dt.timedelta(days=-3, microseconds=5), dt.timedelta.max, dt.timedelta.min,
    decimal.Decimal("1.10"), decimal.Decimal("-0.000"), decimal.Decimal("1E+10"), decimal.Decimal("Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.uuid4(),
    # pickled: no extension type, or a subclass that must come back as itself
    OrderedDict(a=1), Color.RED, Point(1, 2), [Point(3, 4), {"p": Point(5, 6)}], bytearray(b"ba"),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).astimezone(dt.timezone(dt.timedelta(0), "Z")),
]


def same(a, b) -> bool:
    """Equal, of the same type, and for datetimes/times the same tzinfo and fold."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and a != a:
        return b != b
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.fold == b.fold and a.tzinfo == b.tzinfo and (
            a.tzinfo is None or a.tzinfo.tzname(None if isinstance(a, dt.time) else a) ==
            b.tzinfo.tzname(None if isinstance(b, dt.time) else b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}:{repr(v)[:30]}")
def test_round_trip_exact(value):
    data = packb(value, pickle.dumps)
    assert same(unpackb(data), value)


def test_zoneinfo_identity_kept():
    v = unpackb(packb(dt.datetime(2024, 6, 1, 12, tzinfo=NY)))
    assert v.tzinfo is NY and v.utcoffset() == dt.timedelta(hours=-4)


def test_native_types_are_plain_msgpack():
    # Readable by any msgpack reader (and incr-able by the daemon): same bytes as msgpack-python.
    for v in [None, True, 0, -1, 2 ** 64 - 1, -2 ** 63, 1.5, "s", "é" * 40, b"b", [1, "a"], {"k": [1, {"n": None}]},
              "x" * 70000, list(range(70000))]:
        assert packb(v) == msgpack.packb(v, use_bin_type=True)
        assert unpackb(msgpack.packb(v, use_bin_type=True)) == v


def test_extension_codes_documented():
    assert EXT_CODES == {"tuple": 1, "set": 2, "frozenset": 3, "datetime": 4, "date": 5, "time": 6,
                         "timedelta": 7, "decimal": 8, "uuid": 9, "bigint": 10, "pickle": 64}
    ext = msgpack.unpackb(packb((1, 2)), raw=False, strict_map_key=False)
    assert isinstance(ext, msgpack.ExtType) and ext.code == 1
    assert msgpack.unpackb(ext.data) == [1, 2]
    d = msgpack.unpackb(packb(dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)))
    assert d.code == 4 and msgpack.unpackb(d.data) == [2024, 1, 2, 3, 4, 5, 6, 0, 0]
    assert msgpack.unpackb(packb(uuid.UUID(int=1))).data == uuid.UUID(int=1).bytes


def test_pickle_off_raises_naming_the_type():
    s = make_serializer("msgpack", pickle_fallback=False)
    with pytest.raises(TypeError, match="collections.OrderedDict"):
        s.dumps(OrderedDict(a=1))
    with pytest.raises(TypeError, match="Point"):
        s.dumps({"nested": [Point(1, 2)]})
    assert s.decode(*s.dumps((1, dt.date(2020, 1, 1)))) == (1, dt.date(2020, 1, 1))


def test_pickle_errors_propagate():
    class Unpicklable:
        def __getstate__(self):
            raise pickle.PickleError("nope")

    with pytest.raises(pickle.PickleError):
        packb([Unpicklable()], pickle.dumps)


def test_foreign_serializer_flags_and_ints():
    s = make_serializer("pickle")
    data, flags = s.dumps({"a": 1})
    assert flags == 1 and pickle.loads(data) == {"a": 1}
    data, flags = s.dumps(41)
    assert flags == 0 and msgpack.unpackb(data) == 41   # stays incr-able


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\xdb\xff\xff\xff\xff", b"\xc7\x05\x01\x00",
                                  b"\xd4\x63\x00", b"\xd6\x09abcd", b"\x01\x02", b"\xdd\xff\xff\xff\xff" + b"\x00",
                                  b"\xc7\x03\x04\x93\x01\x02"])
def test_corrupt_input_is_a_value_error(data):
    with pytest.raises(ValueError):
        unpackb(data)


def test_deep_nesting_is_refused_not_a_crash():
    v = []
    for _ in range(2000):
        v = [v]
    with pytest.raises(ValueError):
        packb(v)
    with pytest.raises(ValueError):
        unpackb(b"\x91" * 2000 + b"\xc0")
