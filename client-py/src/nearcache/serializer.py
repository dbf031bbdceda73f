"""How NearCache turns Python values into stored bytes and back.

The default is nearcache msgpack (`nearcache._native.packb`): msgpack for what
msgpack holds, extension types for tuples, sets, datetimes, Decimals, UUIDs
and big ints, and pickle inside an extension type as the last resort
(`PICKLE=False` turns that off). The codes are in EXT_CODES and documented in
client-py/README.md.

`SERIALIZER` may name another serializer ("json", "pickle", or a dotted path to
a class with `dumps(value) -> bytes` and `loads(data) -> value`, such as
django-redis's serializers, constructed with the cache's OPTIONS when their
constructor takes `options`). Its output is stored
with flag bit FLAG_SERIALIZED so that any reader knows how to decode it;
integers stay plain msgpack so that the daemon can incr/decr them.
"""
from __future__ import annotations

import functools
import json
import pickle

from nearcache import _native

EXT_CODES: dict[str, int] = dict(_native.EXT_CODES)
FLAG_SERIALIZED: int = _native.FLAG_SERIALIZED
#: set by the daemon on a value read from Redis that nearcache did not write (doc/protocol.md)
FLAG_FOREIGN: int = 0x80
_INT64 = range(-(2 ** 63), 2 ** 64)


class Serializer:
    """nearcache msgpack, with an optional pickle fallback."""

    #: decoder for values stored with FLAG_SERIALIZED (None: this serializer never writes them)
    loads = None

    def __init__(self, pickle_fallback: bool = True, pickle_protocol: int = pickle.HIGHEST_PROTOCOL):
        self.fallback = functools.partial(pickle.dumps, protocol=pickle_protocol) if pickle_fallback else None

    def dumps(self, value) -> tuple[bytes, int]:
        """(data, flags)."""
        return _native.packb(value, self.fallback), 0

    def decode(self, data: bytes, flags: int):
        if flags & FLAG_SERIALIZED:
            if self.loads is None:
                raise ValueError("nearcache: value was written by another SERIALIZER (flag 0x01); "
                                 "configure the same SERIALIZER to read it")
            return self.loads(data)
        return _native.unpackb(data)


class ForeignSerializer(Serializer):
    """Wraps a dumps/loads pair (pickle or a user class); ints stay msgpack."""

    def __init__(self, dumps, loads):
        super().__init__(pickle_fallback=False)
        self._dumps = dumps
        self.loads = loads

    def dumps(self, value) -> tuple[bytes, int]:
        if type(value) is int and value in _INT64:
            return _native.packb(value), 0
        data = self._dumps(value)
        if not isinstance(data, bytes):
            raise TypeError(f"nearcache: SERIALIZER dumps() returned {type(data).__name__}, not bytes")
        return data, FLAG_SERIALIZED


def _json_dumps(value) -> bytes:
    from django.core.serializers.json import DjangoJSONEncoder  # what django-redis's JSONSerializer uses
    return json.dumps(value, cls=DjangoJSONEncoder).encode()


def _json_loads(data: bytes):
    return json.loads(data.decode())


def make_serializer(name: str | None = None, pickle_fallback: bool = True,
                    pickle_protocol: int = pickle.HIGHEST_PROTOCOL, options: dict | None = None) -> Serializer:
    """The serializer for a SERIALIZER option value (`options`: the cache's OPTIONS,
    for classes whose constructor takes them)."""
    if name in (None, "", "msgpack", "nearcache.serializer.Serializer"):
        return Serializer(pickle_fallback, pickle_protocol)
    if name == "pickle":
        return ForeignSerializer(functools.partial(pickle.dumps, protocol=pickle_protocol), pickle.loads)
    if name == "json":
        return ForeignSerializer(_json_dumps, _json_loads)
    from nearcache.settings import construct
    obj = construct(name, options, "'msgpack', 'json', 'pickle'")
    if isinstance(obj, Serializer):
        return obj
    if not (callable(getattr(obj, "dumps", None)) and callable(getattr(obj, "loads", None))):
        raise TypeError(f"{name!r} has no dumps(value) and loads(data)")
    return ForeignSerializer(obj.dumps, obj.loads)
