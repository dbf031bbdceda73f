"""nearcache/settings.py — a NearCache CACHES entry parsed and checked, once.

`parse(location, params)` turns LOCATION and OPTIONS into the values the
backend uses (`Settings`), and lists what is wrong with them: an unknown
option (with the nearest known name), a LOCATION that is a Redis URL or a
list, a django-redis option that cannot apply here (with the reason), a
value of the wrong type. The backend raises `ImproperlyConfigured` with those
errors at first use; `check_caches`, a Django system check (tag `caches`),
reports them at start. django-redis names that mean the same thing are
mapped (`ALIASES`); Django's own OPTIONS that cannot apply are warnings.

Option names are matched case-insensitively (upper-cased), as before.
"""
from __future__ import annotations

import difflib
import inspect
import pickle
from dataclasses import dataclass, field

BACKEND = "nearcache.django.NearCache"
#: django-redis's default client: accepted (with a warning), it means "the cache's own client"
DJANGO_REDIS_DEFAULT_CLIENTS = ("django_redis.client.DefaultClient", "django_redis.client.default.DefaultClient")
#: the keys of a CACHES entry Django reads (a typo there switches an option off silently too)
ENTRY_KEYS = ("BACKEND", "LOCATION", "TIMEOUT", "OPTIONS", "KEY_PREFIX", "VERSION", "KEY_FUNCTION")


def _bool(v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return v.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError(f"{v!r} is not a boolean")


def _seconds(v) -> float:
    if isinstance(v, bool) or v is None:
        raise ValueError(f"{v!r} is not a number of seconds (nearcache's calls always have a deadline)")
    f = float(v)
    if not f > 0 or f == float("inf"):
        raise ValueError(f"{v!r} is not a positive number of seconds")
    return f


def _nonneg(v) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    f = float(v)
    if not f >= 0:
        raise ValueError(f"{v!r} is negative")
    return f


def _count(v) -> int:
    if isinstance(v, bool) or int(v) != float(v) or int(v) < 0:
        raise ValueError(f"{v!r} is not a whole number >= 0")
    return int(v)


def _pickle_protocol(v) -> int:
    p = int(v)
    if p == -1:
        return pickle.HIGHEST_PROTOCOL
    if not 0 <= p <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"{v!r} is not a pickle protocol (0..{pickle.HIGHEST_PROTOCOL}, or -1 for the highest)")
    return p


def _text(v) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not a string")
    return v


def _user(v):
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError(f"{v!r} is not a user name or number")
    return v


def _any(v):
    return v


#: NearCache's own OPTIONS: name -> (parser, default). client-py/README.md documents them.
OPTIONS: dict[str, tuple] = {
    "SOCKET_TIMEOUT": (_seconds, 1.0),
    "SOCKET_CONNECT_TIMEOUT": (_seconds, None),     # default: SOCKET_TIMEOUT
    "STRICT": (_bool, None),                        # default: not IGNORE_EXCEPTIONS, else False
    "SYNC_WRITES": (_bool, False),
    "MAX_CONNECTIONS": (_count, None),
    "DAEMON_USER": (_user, "nearcache"),
    "VERIFY_DAEMON": (_bool, True),
    "VERIFY_SEGMENT": (_bool, True),
    "WARN_INTERVAL": (_nonneg, 60.0),
    "SERIALIZER": (_any, None),
    "PICKLE": (_bool, True),
    "PICKLE_PROTOCOL": (_pickle_protocol, pickle.HIGHEST_PROTOCOL),
    "CLEAR_PREFIX_ONLY": (_bool, False),
    "LEASE_TIMEOUT": (_seconds, 30.0),
    "LEASE_WAIT": (_nonneg, 30.0),
    "USE_SHM": (_bool, True),
    "CLIENT_NAME": (_text, "django"),
    "BUSY_POLL_US": (_nonneg, 50),
    "LOCAL_MISSES": (_bool, True),
    "COMPRESSOR": (_any, None),
    "COMPRESS_MIN_BYTES": (_count, 1024),
    "COMPRESS_LEVEL": (_count, 0),                  # 0: the codec's default
    "REVERSE_KEY_FUNCTION": (_any, None),           # keys()/iter_keys(): stored key -> key (django-redis's)
}

#: django-redis's names with a meaning here: name -> (nearcache option, how the value maps, why)
ALIASES: dict[str, tuple] = {
    "IGNORE_EXCEPTIONS": ("STRICT", lambda v: not _bool(v), "IGNORE_EXCEPTIONS=True is STRICT=False"),
    "PICKLE_VERSION": ("PICKLE_PROTOCOL", _pickle_protocol, "the pickle protocol"),
}

#: Accepted for compatibility, with no effect: name -> (is the value harmless?, the warning otherwise)
IGNORED: dict[str, tuple] = {
    "LOG_IGNORED_EXCEPTIONS": (lambda v: _bool(v),
                               "nearcache always logs the failures it ignores, once per kind and WARN_INTERVAL "
                               "(logger nearcache.client); LOG_IGNORED_EXCEPTIONS=False cannot switch that off"),
    "MAX_ENTRIES": (lambda v: False, "ignored: the daemon's table has a fixed size and evicts on its own"),
    "CULL_FREQUENCY": (lambda v: False, "ignored: the daemon's table has a fixed size and evicts on its own"),
}

_REDIS_TIER = "the Redis tier is the daemon's: configure it in nearcached.conf (redis_url and the redis_* options)"
#: django-redis options that cannot apply: name -> the reason given
REJECTED: dict[str, str] = {
    "CONNECTION_POOL_KWARGS": "connections go to the local daemon over a Unix socket, one pool per process "
                              "(MAX_CONNECTIONS bounds it under gevent); " + _REDIS_TIER,
    "CONNECTION_POOL_CLASS": "nearcache has no Redis connection pool in the application; " + _REDIS_TIER,
    "CONNECTION_POOL_CLASS_KWARGS": "nearcache has no Redis connection pool in the application; " + _REDIS_TIER,
    "CONNECTION_FACTORY": "nearcache has no Redis connection in the application; " + _REDIS_TIER,
    "REDIS_CLIENT_CLASS": "nearcache has no Redis client in the application; " + _REDIS_TIER,
    "REDIS_CLIENT_KWARGS": "nearcache has no Redis client in the application; " + _REDIS_TIER,
    "PARSER_CLASS": "nearcache speaks its own protocol to the daemon, not RESP",
    "PASSWORD": _REDIS_TIER + " (redis_url's user:password, or redis_password_file)",
    "USERNAME": _REDIS_TIER + " (redis_url's user:password)",
    "DB": _REDIS_TIER + " (the database is part of redis_url)",
    "SENTINELS": _REDIS_TIER + " (redis_sentinels, redis_sentinel_master)",
    "SENTINEL_KWARGS": _REDIS_TIER + " (redis_sentinels, redis_sentinel_password_file, redis_sentinel_timeout_ms)",
    "REPLICA_READ_ONLY": "reads are served from this host's shared memory; " + _REDIS_TIER,
    "CLOSE_CONNECTION": "connections to the daemon are kept for the process's life (close() is a no-op)",
    "CACHE_HERD_TIMEOUT": "HerdClient's herd protection is built in: get_or_set computes a key once per host "
                          "(LEASE_TIMEOUT, LEASE_WAIT)",
}


@dataclass
class Settings:
    """What a CACHES entry asks of NearCache, parsed; `errors` and `warnings` say what is wrong."""
    location: str = ""
    options: dict = field(default_factory=dict)   # every OPTIONS name -> its parsed value (defaults filled in)
    raw: dict = field(default_factory=dict)       # OPTIONS as given (upper-cased): serializer classes get it
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def client_kwargs(self) -> dict:
        """nearcache.Client's keyword arguments."""
        o = self.options
        timeout = o["SOCKET_TIMEOUT"]
        connect = o["SOCKET_CONNECT_TIMEOUT"]
        return dict(timeout=timeout, connect_timeout=timeout if connect is None else connect,
                    strict=bool(o["STRICT"]), warn_interval=o["WARN_INTERVAL"], use_shm=o["USE_SHM"],
                    client_name=o["CLIENT_NAME"], busy_poll=o["BUSY_POLL_US"] / 1e6,
                    max_connections=o["MAX_CONNECTIONS"], verify_daemon=o["VERIFY_DAEMON"],
                    daemon_user=o["DAEMON_USER"], sync_writes=o["SYNC_WRITES"], verify_segment=o["VERIFY_SEGMENT"],
                    local_misses=o["LOCAL_MISSES"])

    def message(self) -> str:
        return "nearcache: this cache is misconfigured: " + "; ".join(self.errors)


def known_names() -> list[str]:
    return [*OPTIONS, *ALIASES, "CLIENT_CLASS", *IGNORED, *REJECTED]


def _location(location, s: Settings) -> None:
    if isinstance(location, (list, tuple, set)):
        s.errors.append(f"LOCATION is a {type(location).__name__}: nearcache's LOCATION is one daemon socket path "
                        f"(\"\" for the default); the daemon is this host's, and {_REDIS_TIER}")
        return
    if location is None:
        location = ""
    if not isinstance(location, str):
        s.errors.append(f"LOCATION {location!r} is not a socket path")
        return
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme and scheme != "unix":
        s.errors.append(f"LOCATION {location!r} is a URL: nearcache's LOCATION is the daemon's socket path "
                        f"(\"\" for the default); {_REDIS_TIER}")
        return
    s.location = location


def _client_class(value, s: Settings) -> None:
    path = value if isinstance(value, str) else f"{getattr(value, '__module__', '')}.{getattr(value, '__name__', '')}"
    if path in DJANGO_REDIS_DEFAULT_CLIENTS:
        s.warnings.append(f"OPTIONS['CLIENT_CLASS'] = {path!r} is ignored: NearCache is its own client "
                          f"(remove the option)")
    else:
        s.errors.append(f"OPTIONS['CLIENT_CLASS'] = {path!r} cannot apply: NearCache is its own client; only "
                        f"django-redis's DefaultClient is accepted (and ignored)")


def parse(location, params: dict) -> Settings:
    """LOCATION and a CACHES entry (`params`, as Django passes it) -> Settings."""
    s = Settings()
    _location(location, s)
    for key in params:
        if str(key).upper() not in ENTRY_KEYS:
            near = difflib.get_close_matches(str(key).upper(), ENTRY_KEYS, n=1)
            s.errors.append(f"unknown CACHES key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    given = params.get("OPTIONS") or {}
    if not isinstance(given, dict):
        s.errors.append(f"OPTIONS is a {type(given).__name__}, not a dict")
        given = {}
    s.raw = raw = {str(k).upper(): v for k, v in given.items()}
    s.options = opts = {name: default for name, (_, default) in OPTIONS.items()}
    mapped: dict[str, str] = {}  # nearcache option -> the django-redis name that set it
    # nearcache's own names first: a django-redis alias then agrees with them or is an error
    for name, value in sorted(raw.items(), key=lambda kv: kv[0] not in OPTIONS):
        try:
            if name in OPTIONS:
                opts[name] = OPTIONS[name][0](value)
                mapped[name] = name
            elif name in ALIASES:
                target, convert, _ = ALIASES[name]
                v = convert(value)
                if target in mapped and opts[target] != v:
                    raise ValueError(f"contradicts {mapped[target]}={raw[mapped[target]]!r}")
                if target not in mapped:
                    opts[target] = v
                    mapped[target] = name
            elif name == "CLIENT_CLASS":
                _client_class(value, s)
            elif name in IGNORED:
                harmless, why = IGNORED[name]
                if not harmless(value):
                    s.warnings.append(f"OPTIONS[{name!r}] = {value!r}: {why}")
            elif name in REJECTED:
                s.errors.append(f"OPTIONS[{name!r}] cannot apply: {REJECTED[name]}")
            else:
                near = difflib.get_close_matches(name, known_names(), n=1)
                s.errors.append(f"unknown option OPTIONS[{name!r}]" + (f" (did you mean {near[0]!r}?)" if near else ""))
        except (TypeError, ValueError, OverflowError) as e:
            s.errors.append(f"OPTIONS[{name!r}] = {value!r}: {e}")
    opts["STRICT"] = bool(opts["STRICT"])
    _reverse_key(s)
    _serializer(s)
    _compressor(s)
    return s


def construct(name, options: dict | None, choices: str):
    """The object a SERIALIZER or COMPRESSOR names: a dotted path to a class, a class
    or an instance. A class is constructed with `options` when its constructor
    takes them (django-redis's serializers and compressors), else with no argument."""
    cls = name
    if isinstance(name, str):
        module, _, attr = name.rpartition(".")
        if not module:
            raise ValueError(f"{name!r} is not {choices} or a dotted path")
        from importlib import import_module
        cls = getattr(import_module(module), attr)
    if not isinstance(cls, type):
        return cls  # an instance already
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    return cls(options=dict(options or {})) if "options" in params else cls()


def _reverse_key(s: Settings) -> None:
    """REVERSE_KEY_FUNCTION: a callable or its dotted path (django-redis's), or None
    for the reverse of Django's default key function."""
    v = s.options["REVERSE_KEY_FUNCTION"]
    try:
        if isinstance(v, str):
            from django.utils.module_loading import import_string
            v = import_string(v)
        if v is not None and not callable(v):
            raise ValueError("not a callable nor its dotted path")
        s.options["REVERSE_KEY_FUNCTION"] = v
    except Exception as e:
        s.errors.append(f"OPTIONS['REVERSE_KEY_FUNCTION'] = {s.raw.get('REVERSE_KEY_FUNCTION')!r}: "
                        f"{type(e).__name__}: {e}")


def _serializer(s: Settings) -> None:
    from nearcache.serializer import make_serializer
    try:
        s.options["SERIALIZER"] = make_serializer(s.options["SERIALIZER"], s.options["PICKLE"],
                                                  s.options["PICKLE_PROTOCOL"], options=s.raw)
    except Exception as e:  # an import error, a class that does not fit: said with the option's name
        s.errors.append(f"OPTIONS['SERIALIZER'] = {s.raw.get('SERIALIZER')!r}: {type(e).__name__}: {e}")


def _compressor(s: Settings) -> None:
    from nearcache.compression import make_compressor
    try:
        s.options["COMPRESSOR"] = make_compressor(s.options["COMPRESSOR"], s.options["COMPRESS_LEVEL"],
                                                  s.options["COMPRESS_MIN_BYTES"], options=s.raw)
    except Exception as e:
        s.errors.append(f"OPTIONS['COMPRESSOR'] = {s.raw.get('COMPRESSOR')!r}: {type(e).__name__}: {e}")


def check_caches(app_configs=None, **kwargs) -> list:
    """Django system check (tag `caches`): every NearCache entry of CACHES, parsed."""
    from django.conf import settings as dj
    from django.core import checks
    from django.utils.module_loading import import_string

    from nearcache.django import NearCache
    out = []
    for alias, entry in getattr(dj, "CACHES", {}).items():
        backend = entry.get("BACKEND")
        try:
            cls = import_string(backend) if isinstance(backend, str) else backend
        except ImportError:
            continue  # Django reports a backend it cannot import
        if not (isinstance(cls, type) and issubclass(cls, NearCache)):
            continue
        s = parse(entry.get("LOCATION", ""), entry)
        out += [checks.Error(f"CACHES[{alias!r}]: {e}", hint="see client-py/README.md, Django settings",
                             id="nearcache.E001") for e in s.errors]
        out += [checks.Warning(f"CACHES[{alias!r}]: {w}", id="nearcache.W001") for w in s.warnings]
    return out
