"""The sans-I/O request core: each operation's request frames and how its replies read.

An `Op` is what a transport runs: the request frames, `result(replies)` that
turns the replies into the call's result (raising ProtocolError for an error
status), `fallback`, the result when the daemon cannot serve the call and
STRICT is off, and the waits the API allows beyond SOCKET_TIMEOUT (a lease
waiting for another worker, a clear). The sync and async clients build the
same Ops and differ only in how they carry frames; the fail-open policy is
`Policy`, written once for both.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from nearcache import protocol as P
from nearcache.protocol import CacheUnavailable, ProtocolError

log = logging.getLogger("nearcache.client")

MANY_COUNT = 1000          # keys per GET_MANY / SET_MANY / DELETE_MANY frame at most
FRAME_OVERHEAD = 64        # op, id, ttl and array headers of one frame
ITEM_OVERHEAD = 16         # per key or [key, value, flags] item: msgpack headers
DEFAULT_LIMITS = {"key_limit": 1024, "value_limit": 1 << 20, "max_frame_bytes": 4 << 20}
_MAX_TTL_MS = (1 << 63) - 1

RAISE = object()           # an Op's fallback when the call raises even fail-open (STATUS)

# Replies that mean "the daemon cannot serve this now": the same policy as an unreachable daemon.
UNREACHABLE = frozenset({P.SHUTTING_DOWN, P.UNAVAILABLE, P.TOO_MANY_REQUESTS, P.NOT_ALLOWED})


def ttl_ms(ttl) -> int | None:
    """Seconds (None = never expires, <= 0 = expires at once) as protocol milliseconds.

    As in LocMemCache, a timeout too large to mean anything (10**20, inf) or
    nan never expires.
    """
    if ttl is None:
        return None
    if type(ttl) is int and 0 < ttl < 9_000_000_000_000:  # the common case: whole seconds
        return ttl * 1000
    if ttl != ttl:  # nan: LocMem's expiry comparison with nan is never true
        return None
    if ttl <= 0:
        return 0
    ms = ttl * 1000
    if ms >= _MAX_TTL_MS:
        return None
    return max(1, math.ceil(ms))


def key_bytes(key) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        # surrogatepass: a str with a lone surrogate is a valid Django key (LocMem takes it).
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"nearcache keys are str or bytes, not {type(key).__name__}")


def error(reply: list) -> ProtocolError:
    return P.error_for(reply[0], reply[1] if len(reply) > 1 else "")


def check(reply: list, *ok: int) -> list:
    if reply[0] in ok:
        return reply
    raise error(reply)


@dataclass
class Lease:
    """Outcome of LEASE: a value (`hit`), the lease (`token`), or neither (wait timed out)."""
    hit: bool
    value: bytes | None = None
    flags: int = 0
    token: int | None = None


class Op:
    __slots__ = ("requests", "result", "fallback", "extra", "retry", "passthrough")

    def __init__(self, requests, result, fallback=None, extra: float = 0.0, retry: bool = True,
                 passthrough: frozenset = frozenset()):
        self.requests = requests      # [(op, *args)], pipelined in one round trip
        self.result = result          # replies -> the call's result
        self.fallback = fallback      # the result when fail-open
        self.extra = extra            # seconds allowed beyond SOCKET_TIMEOUT
        self.retry = retry            # safe to resend on a fresh connection
        self.passthrough = passthrough  # error statuses the API raises even when fail-open


def chunks(items: list, size, limits: dict) -> list[list]:
    """Splits items so that each frame holds at most MANY_COUNT of them and fits max_frame_bytes."""
    budget = max(256, limits.get("max_frame_bytes", DEFAULT_LIMITS["max_frame_bytes"]) - FRAME_OVERHEAD)
    out, cur, used = [], [], 0
    for it in items:
        n = size(it) + ITEM_OVERHEAD
        if cur and (len(cur) >= MANY_COUNT or used + n > budget):
            out.append(cur)
            cur, used = [], 0
        cur.append(it)
        used += n
    if cur:
        out.append(cur)
    return out


# -- reads -------------------------------------------------------------------
def _get_result(replies):
    r = replies[0]
    if r[0] == P.OK:
        return r[1], (r[2] if len(r) > 2 else 0)
    if r[0] in (P.NOT_FOUND, P.KEY_TOO_LONG):
        return None
    raise error(r)


def get(k: bytes) -> Op:
    return Op([(P.GET, k)], _get_result)


def get_many(ks: list[bytes], limits: dict) -> Op:
    parts = chunks(ks, len, limits)

    def result(replies):
        out = []
        for r in replies:
            check(r, P.OK)
            out.extend(tuple(e) if e is not None else None for e in r[1])
        return out

    return Op([(P.GET_MANY, part) for part in parts], result, [None] * len(ks))


def _found(replies) -> bool:
    r = replies[0]
    if r[0] == P.KEY_TOO_LONG:
        return False
    return check(r, P.OK, P.NOT_FOUND)[0] == P.OK


def _pttl_result(replies) -> int:
    r = replies[0]
    if r[0] in (P.NOT_FOUND, P.KEY_TOO_LONG):
        return -2
    check(r, P.OK)
    return -1 if r[1] is None else r[1]


def pttl(k: bytes) -> Op:
    """Redis's PTTL: milliseconds left, -1 for no expiry, -2 for a missing key
    (and, fail-open, for an unreachable daemon: an empty cache)."""
    return Op([(P.TTL, k)], _pttl_result, -2)


def entry_ttl(k: bytes) -> Op:
    """(value, flags, pttl) or None: GET and TTL in one round trip (TTL is
    Redis's with a Redis tier, where GET's is bounded by redis_local_ttl_max_ms)."""
    def result(replies):
        e = _get_result(replies[:1])
        return None if e is None else (e[0], e[1], _pttl_result(replies[1:]))
    return Op([(P.GET, k), (P.TTL, k)], result)


def has_key(k: bytes) -> Op:
    return Op([(P.HAS_KEY, k)], _found, False)


# -- writes ------------------------------------------------------------------
def set_value_limit(limits: dict):
    """The largest value SET and SET_MANY may carry: HELLO's set_value_limit (with a Redis
    tier, values above value_limit are stored in Redis only), else value_limit (an older daemon)."""
    vl = limits.get("value_limit")
    svl = limits.get("set_value_limit")
    return vl if svl is None or (vl is not None and svl < vl) else svl


def _too_large(k: bytes, value: bytes, limits: dict, set_op: bool = False) -> ProtocolError | None:
    """set_op: the bound of SET and SET_MANY (set_value_limit); else value_limit (ADD)."""
    kl = limits.get("key_limit")
    vl = set_value_limit(limits) if set_op else limits.get("value_limit")
    if kl is not None and len(k) > kl:
        return P.error_for(P.KEY_TOO_LONG, f"KEY_TOO_LONG: key {k[:100]!r}... is {len(k)} bytes, limit {kl}; "
                                           f"not stored")
    if vl is not None and len(value) > vl:
        # The key is named: the operator's only way to find the caller.
        name = "value_limit" if vl == limits.get("value_limit") else "set_value_limit (redis_relay_max_bytes)"
        return P.error_for(P.VALUE_TOO_LARGE, f"VALUE_TOO_LARGE: the value of {k[:200]!r} is {len(value)} bytes, "
                                              f"over the daemon's {name} of {vl}; not stored")
    return None


def _refuse(e: ProtocolError, fallback) -> Op:
    def result(_):
        raise e
    return Op([], result, fallback)


def _stored(replies) -> bool:
    check(replies[0], P.OK)
    return True


def _store(op: int, k: bytes, value: bytes, ttl, flags: int, limits: dict, result, retry: bool = True) -> Op:
    """SET, ADD or REPLACE: refused here when over a limit (a SET by set_value_limit); fail-open False."""
    e = _too_large(k, value, limits, set_op=op == P.SET)
    if e is not None:
        return _refuse(e, False)
    return Op([(op, k, value, ttl_ms(ttl), flags)], result, False, retry=retry)


def set(k: bytes, value: bytes, ttl, flags: int, limits: dict) -> Op:
    return _store(P.SET, k, value, ttl, flags, limits, _stored)


def _added(replies) -> bool:
    return check(replies[0], P.OK, P.EXISTS)[0] == P.OK


def add(k: bytes, value: bytes, ttl, flags: int, limits: dict) -> Op:
    return _store(P.ADD, k, value, ttl, flags, limits, _added, retry=False)


def _replaced(replies) -> bool:
    return check(replies[0], P.OK, P.NOT_FOUND)[0] == P.OK


def replace(k: bytes, value: bytes, ttl, flags: int, limits: dict) -> Op:
    """REPLACE (Redis's SET XX): stores only if the key is present; True when stored."""
    return _store(P.REPLACE, k, value, ttl, flags, limits, _replaced, retry=False)


def set_many(items: list, ttl, limits: dict) -> Op:
    """items: [(key, value, flags)] (keys as bytes); the result lists the keys not stored,
    those the client can tell are over a limit first."""
    refused = [it[0] for it in items if _too_large(it[0], it[1], limits, set_op=True) is not None]
    if refused:
        bad = frozenset(refused)
        items = [it for it in items if it[0] not in bad]
    parts = chunks(items, lambda it: len(it[0]) + len(it[1]), limits)
    t = ttl_ms(ttl)

    def result(replies):
        failed = list(refused)
        for r in replies:
            check(r, P.OK)
            failed.extend(bytes(x) for x in r[1])
        return failed

    return Op([(P.SET_MANY, [list(it) for it in part], t) for part in parts], result,
              [it[0] for it in items] + refused)


def delete(k: bytes) -> Op:
    return Op([(P.DELETE, k)], _found, False)


def delete_many(ks: list[bytes], limits: dict) -> Op:
    def result(replies):
        return sum(check(r, P.OK)[1] for r in replies)
    return Op([(P.DELETE_MANY, part) for part in chunks(ks, len, limits)], result, 0)


def touch(k: bytes, ttl) -> Op:
    return Op([(P.TOUCH, k, ttl_ms(ttl))], _found, False)


def touch_ms(k: bytes, ms: int | None) -> Op:
    """TOUCH with the TTL in milliseconds (None: no expiry, PERSIST; <= 0: delete)."""
    return Op([(P.TOUCH, k, ms)], _found, False)


def _incr_result(replies):
    r = replies[0]
    if r[0] in (P.NOT_FOUND, P.KEY_TOO_LONG):
        return None
    return check(r, P.OK)[1]


def incr(k: bytes, delta: int) -> Op:
    """The new value, or None when the key is absent. Fail-open, an unreachable
    daemon is an empty cache: None too (Django's backend raises ValueError for it)."""
    op = P.INCR if delta >= 0 else P.DECR
    return Op([(op, k, abs(delta))], _incr_result, None, retry=False,
              passthrough=frozenset({P.NOT_INTEGER, P.OUT_OF_RANGE}))


CLEAR_WAIT = 30.0


def clear(prefix: bytes | None) -> Op:
    args = () if prefix is None else (prefix,)
    return Op([(P.CLEAR, *args)], lambda replies: check(replies[0], P.OK)[1], 0, extra=CLEAR_WAIT)


SCAN_COUNT = 1000


def scan(cursor: int, pattern: bytes, count: int) -> Op:
    """SCAN: (next_cursor, [key, ...]); next_cursor 0 = complete. Fail-open: (0, [])."""
    def result(replies):
        r = check(replies[0], P.OK)
        return r[1], [bytes(k) for k in r[2]]
    return Op([(P.SCAN, cursor, pattern, count)], result, (0, []), extra=CLEAR_WAIT, retry=False)


def delete_pattern(pattern: bytes) -> Op:
    return Op([(P.DELETE_PATTERN, pattern)], lambda replies: check(replies[0], P.OK)[1], 0, extra=CLEAR_WAIT)


# -- locks (nearcache.lock): never fail-open: a lock granted by mistake is worse than an error
def _lock_result(ok: int):
    return lambda replies: check(replies[0], P.OK, ok)[0] == P.OK


def lock(k: bytes, token: bytes, ttl) -> Op:
    """LOCK: True when acquired, False when held by another token."""
    return Op([(P.LOCK, k, token, ttl_ms(ttl))], _lock_result(P.EXISTS), RAISE, retry=False)


def unlock(k: bytes, token: bytes) -> Op:
    """UNLOCK: True when released, False when `token` does not hold the lock."""
    return Op([(P.UNLOCK, k, token)], _lock_result(P.NOT_FOUND), RAISE, retry=False)


def lock_extend(k: bytes, token: bytes, ms: int, replace: bool) -> Op:
    return Op([(P.LOCK_EXTEND, k, token, ms, replace)], _lock_result(P.NOT_FOUND), RAISE, retry=False)


def lock_query(k: bytes) -> Op:
    """(token, ttl_ms) of the holder, or None."""
    def result(replies):
        r = check(replies[0], P.OK, P.NOT_FOUND)
        return (bytes(r[1]), r[2]) if r[0] == P.OK else None
    return Op([(P.LOCK_QUERY, k)], result, RAISE)


# -- leases ------------------------------------------------------------------
def _lease_result(replies) -> Lease:
    r = replies[0]
    if r[0] == P.OK:
        return Lease(hit=True, value=r[1], flags=r[2] if len(r) > 2 else 0)
    if r[0] == P.LEASED:
        return Lease(hit=False, token=r[1])
    if r[0] in (P.TIMEOUT, P.KEY_TOO_LONG):
        return Lease(hit=False)
    raise error(r)


def lease(k: bytes, lease_ttl: float, wait: float) -> Op:
    return Op([(P.LEASE, k, ttl_ms(lease_ttl), ttl_ms(wait) or 0)], _lease_result, Lease(hit=False),
              extra=max(0.0, wait), retry=False)


def release(k: bytes, token: int) -> Op:
    return Op([(P.RELEASE, k, token)], lambda replies: check(replies[0], P.OK, P.NOT_FOUND)[0] == P.OK, False)


# -- administration ----------------------------------------------------------
def ping() -> Op:
    return Op([(P.PING,)], lambda replies: check(replies[0], P.OK)[0] == P.OK, False)


def status() -> Op:
    """STATUS; no fallback: raises CacheUnavailable whatever STRICT says."""
    return Op([(P.STATUS,)], lambda replies: check(replies[0], P.OK)[1], RAISE)


def hello(client_name) -> tuple:
    # Sent as bytes: a name that is not valid UTF-8 (surrogate-escaped) must not
    # make HELLO unencodable; the daemon takes bin or str.
    if isinstance(client_name, str):
        client_name = client_name.encode("utf-8", "surrogateescape")
    return (P.HELLO, P.PROTOCOL_VERSION, client_name)


def hello_info(reply: list) -> dict:
    """The info map of a HELLO reply; raises for a refusal."""
    if reply[0] != P.OK:
        message = reply[1] if len(reply) > 1 and isinstance(reply[1], str) else P.STATUS_NAMES.get(reply[0], "")
        if reply[0] in UNREACHABLE:
            raise P.Refused(reply[0], message)
        raise P.error_for(reply[0], message)
    return reply[1] if len(reply) > 1 and isinstance(reply[1], dict) else {}


# -- the fail-open policy, written once ----------------------------------------
class Policy:
    """Decides what a failed call does: raise (STRICT, or an error the API
    defines), or log (rate-limited) and return the op's fallback.

    After a call times out, calls fail at once for `backoff` seconds (so a
    stalled daemon costs one timeout per second, not one per call); calls in
    that window never extend it, so the first call after it tries again and a
    client resumes within `backoff` of the daemon answering.
    """

    def __init__(self, path: str, strict: bool, warn_interval: float, timeout: float):
        self.path = path
        self.strict = strict
        self.warn_interval = warn_interval
        self.backoff = min(1.0, timeout)
        self.down_until = 0.0
        self.down_reason: BaseException | None = None
        self._last_warning: dict[str, float] = {}

    def warn(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(kind, -math.inf) >= self.warn_interval:
            self._last_warning[kind] = now
            log.warning(message, *args)

    def window_open(self) -> bool:
        return time.monotonic() < self.down_until

    def timed_out(self, exc: BaseException) -> None:
        self.down_until = time.monotonic() + self.backoff
        self.down_reason = exc

    def unreachable(self, op: Op, exc: BaseException):
        """The daemon cannot serve the call (down, hung, refusing, a tier it needs is down)."""
        what = ("answers but cannot serve this" if isinstance(exc, ProtocolError) and exc.status == P.UNAVAILABLE
                else "unreachable")
        self.warn("unreachable", "nearcache: daemon at %s %s (%s: %s); %s", self.path, what, type(exc).__name__,
                  exc, "raising (STRICT)" if self.strict else "reads are misses and writes are skipped")
        if self.strict or op.fallback is RAISE:
            raise CacheUnavailable(f"nearcached at {self.path} {what}: {exc}") from exc
        return op.fallback

    def failed(self, op: Op, exc: BaseException):
        """Called from an except block: the policy's answer to any exception of a call."""
        if isinstance(exc, ProtocolError):
            if exc.status in UNREACHABLE:
                return self.unreachable(op, exc)
            if self.strict or exc.status in op.passthrough or op.fallback is RAISE:
                raise exc
            self.warn(f"status:{exc.status}", "nearcache: %s (not raised: STRICT is off)", exc)
            return op.fallback
        if isinstance(exc, TimeoutError):
            self.timed_out(exc)
        return self.unreachable(op, exc)
