"""The value format: exact round-trips, msgpack compatibility, pickle switch, corrupt input."""
from __future__ import annotations

import datetime as dt
import pickle
import uuid
from collections import OrderedDict

import msgpack
import pytest

from nearcache import packb, unpackb
from nc_values import NY, UTC, VALUES, Point, same
from nearcache.serializer import EXT_CODES, make_serializer


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
