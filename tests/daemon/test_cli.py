"""The nearcache CLI against a real daemon: status (text, JSON, Prometheus)
checked against the operations performed, and the operator commands."""
from __future__ import annotations

import json
import re

from helpers import Probe, cli
from support.probe import unregister
from support.rawproto import DELETE, GET, SET, RawConn, mp


def do_operations(daemon):
    c = RawConn(daemon.socket)
    for i in range(3):
        c.call(SET, b"k%d" % i, mp(i), None)
    c.call(GET, b"k0")
    c.call(GET, b"k1")
    c.call(GET, b"nope")
    c.call(DELETE, b"k2")
    with Probe() as p:  # two hits served from shared memory, one miss
        p.open(daemon.segment)
        reg = p.register(daemon.socket)  # reported through its hit region (op HITS)
        assert p.get("k0") == "hit" and p.get("k1") == "hit" and p.get("zzz") == "miss"
        unregister(reg, c)  # its last counts are read when its connection closes
    return c


def test_status_json(daemon):
    c = do_operations(daemon)
    r = cli("--socket=" + daemon.socket, "status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["sets_total"] == 3 and st["deletes_total"] == 1 and st["entries"] == 2
    assert st["daemon_hits_total"] == 2 and st["misses_total"] == 1
    assert st["shm_hits_total"] == 2 and st["shm_misses_total"] == 1
    assert st["hits_total"] == 4
    assert abs(st["hit_ratio"] - 4 / 5) < 1e-9
    assert st["pid"] == daemon.pid and st["config"]["socket"] == daemon.socket
    assert st["connections_open"] == 2  # c and the CLI itself
    assert any(x["pid"] > 0 for x in st["connections"])
    assert st["memory_used_bytes"] > 0 and st["memory_free_bytes"] < st["memory_data_bytes"]
    c.close()


def test_status_prometheus(daemon):
    do_operations(daemon)
    r = cli("--socket=" + daemon.socket, "status", "--prometheus")
    assert r.returncode == 0, r.stderr
    samples, types = {}, {}
    for line in r.stdout.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", line)
            assert m, f"not exposition format: {line!r}"
            samples[m.group(1)] = float(m.group(3))
    assert samples["nearcache_up"] == 1
    assert samples["nearcache_sets_total"] == 3
    assert samples["nearcache_hits_total"] == 4
    assert samples["nearcache_misses_total"] == 1
    assert samples["nearcache_entries"] == 2
    assert samples["nearcache_memory_used_bytes"] > 0
    assert types["nearcache_hits_total"] == "counter" and types["nearcache_entries"] == "gauge"
    assert all(name in types for name in samples)


def test_status_text(daemon):
    do_operations(daemon)
    r = cli("--socket=" + daemon.socket, "status")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith("nearcached ") and f"pid {daemon.pid}" in text
    fields = dict(re.findall(r"^  ([a-z][a-z /-]+):\s+(.+)$", text, re.M))
    assert fields["sets"] == "3"
    assert fields["deletes"] == "1"
    assert fields["entries"] == "2"
    assert fields["hits"] == "4"
    assert fields["hits from shared memory"] == "2"
    assert fields["misses"] == "1"
    assert fields["hit ratio"] == "80.0%"
    assert fields["segment size"] == "16.0 MiB (16777216)"
    assert fields["leases waiting"] == "0"
    assert "evictions" in fields and "expirations" in fields and "memory free" in fields


def test_unreachable_daemon(tmp_path):
    r = cli(f"--socket={tmp_path}/none.sock", "status")
    assert r.returncode == 3
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "not reachable" in r.stderr
    p = cli(f"--socket={tmp_path}/none.sock", "status", "--prometheus")
    assert p.returncode == 3 and "nearcache_up 0" in p.stdout


def test_operator_commands(daemon):
    s = "--socket=" + daemon.socket
    assert cli(s, "ping").stdout.startswith("PONG")
    assert cli(s, "set", "greeting", "hello").returncode == 0
    assert cli(s, "get", "greeting").stdout == '"hello"\n'
    assert RawConn(daemon.socket).call(GET, b"greeting")[2] == mp("hello")  # stored as a msgpack string
    assert cli(s, "set", "n", "41", "--int", "--ttl=60000").returncode == 0
    assert cli(s, "get", "n").stdout == "41\n"
    assert cli(s, "set", "raw", "\x01bytes", "--raw").returncode == 0
    assert cli(s, "get", "raw", "--raw").stdout == "\x01bytes"
    assert cli(s, "delete", "greeting").returncode == 0
    r = cli(s, "get", "greeting")
    assert r.returncode == 1 and "not found" in r.stderr
    assert cli(s, "delete", "greeting").returncode == 1
    assert cli(s, "clear").stdout == "cleared 2 entries\n"
    assert cli(s, "frobnicate").returncode == 2
    assert cli(s, "get").returncode == 2


def test_key_too_long_reported(daemon):
    r = cli("--socket=" + daemon.socket, "get", "k" * 2000)
    assert r.returncode == 1 and "KEY_TOO_LONG" in r.stderr


def test_status_reports_index_evictions(tmp_path):
    """An index planned for large items fills with small ones: status says so (the capacity-planning signal)."""
    from support.nearcached import Daemon

    d = Daemon(tmp_path, segment_size="4M", expected_item_size="16K", value_limit="64K")
    try:
        with RawConn(d.socket) as c:
            ids = [c.send(SET, b"k%d" % i, mp(i), None) for i in range(5000)]
            c.recv_n(len(ids))
        st = json.loads(cli("--socket=" + d.socket, "status", "--json").stdout)
        assert st["index_evictions_total"] > 0
        assert st["entries"] < 5000 and st["memory_used_bytes"] < st["memory_data_bytes"] // 2
        assert st["shm_busy_total"] == 0
    finally:
        assert d.stop() == 0, d.log()


# ---------------------------------------------------------------- the command line

def test_flags_before_or_after_the_command_with_or_without_equals(daemon):
    for args in (["--socket=" + daemon.socket, "ping"], ["--socket", daemon.socket, "ping"],
                 ["ping", "--socket=" + daemon.socket], ["ping", "--socket", daemon.socket],
                 ["--timeout", "2", "ping", "--socket", daemon.socket]):
        r = cli(*args)
        assert r.returncode == 0 and r.stdout.startswith("PONG"), (args, r.stderr)
    assert cli("set", "k", "v", "--socket", daemon.socket, "--ttl", "60000").returncode == 0
    assert cli("get", "--socket", daemon.socket, "k").stdout == '"v"\n'
    # `--` ends the flags: a key that starts with a dash
    assert cli("--socket", daemon.socket, "set", "--", "--odd", "x").returncode == 0
    assert cli("--socket", daemon.socket, "get", "--", "--odd").stdout == '"x"\n'


def test_socket_from_the_environment(daemon):
    r = cli("ping", env={"NEARCACHE_SOCKET": daemon.socket})
    assert r.returncode == 0 and daemon.socket in r.stdout


def test_help_and_version():
    r = cli("--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: nearcache")
    for command in ("status", "ping", "get", "set", "delete", "clear"):
        assert re.search(rf"^  {command}\b", r.stdout, re.M), command
    r = cli("status", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: nearcache status")
    assert "--prometheus" in r.stdout and "--json" in r.stdout and "--socket" in r.stdout
    assert cli("help", "set").stdout == cli("set", "--help").stdout
    assert "--ttl" in cli("set", "-h").stdout
    r = cli("--version")
    assert r.returncode == 0 and re.fullmatch(r"nearcache \d+\.\d+\.\d+\n", r.stdout)
    r = cli()
    assert r.returncode == 2 and r.stderr.startswith("Usage: nearcache")


def test_usage_errors_exit_2_and_name_the_nearest():
    cases = [
        (["statsu"], "unknown command 'statsu' (did you mean 'status'?)"),
        (["frobnicate"], "unknown command 'frobnicate'\n"),
        (["status", "--jsno"], "unknown option --jsno for status (did you mean '--json'?)"),
        (["--sockte=x", "status"], "unknown option --sockte for status (did you mean '--socket'?)"),
        (["get", "k", "--json"], "unknown option --json for get (a flag of 'status')"),
        (["get"], "get takes KEY (got 0 arguments)"),
        (["delete", "a", "b"], "delete takes KEY (got 2 arguments)"),
        (["status", "--json", "--prometheus"], "--json and --prometheus exclude each other"),
        (["set", "k", "x", "--int"], "--int needs an integer VALUE"),
        (["ping", "--timeout", "soon"], "the argument ('soon') for option '--timeout' is invalid"),
    ]
    for args, message in cases:
        r = cli("--socket=/nonexistent.sock", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stdout == ""
        assert message in r.stderr, (args, r.stderr)


# ---------------------------------------------------------------- values the Python client wrote

def test_get_prints_every_value_the_python_client_writes(daemon):
    import base64
    import datetime as dt
    import decimal
    import fractions
    import pickle
    import uuid
    import zoneinfo

    from nearcache.django import NearCache

    cache = NearCache(daemon.socket, {"KEY_PREFIX": "t"})
    when = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)
    ist = dt.datetime(2026, 12, 1, 15, 30, 0, 250, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    est = dt.datetime(2026, 12, 1, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5), "EST"))
    paris = dt.datetime(2026, 12, 1, 11, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    values = {
        "text": ("café €", '"café €"'),
        "int": (42, "42"),
        "neg": (-7, "-7"),
        "float": (1.5, "1.5"),
        "nan": (float("nan"), '{"$float":"nan"}'),
        "none": (None, "null"),
        "bool": (True, "true"),
        "bytes": (b"\x00\xffab", '{"$bytes":"AP9hYg=="}'),
        "list": ([1, "a", [None]], '[1,"a",[null]]'),
        "dict": ({"a": 1, "é": [2]}, '{"a":1,"é":[2]}'),
        "intkeys": ({1: "one"}, '{"$map":[[1,"one"]]}'),
        "decimal": (decimal.Decimal("1.50"), '{"$decimal":"1.50"}'),
        "tuple": ((1, "a", None), '{"$tuple":[1,"a",null]}'),
        "set": ({3}, '{"$set":[3]}'),
        "frozenset": (frozenset(["x"]), '{"$frozenset":["x"]}'),
        "datetime": (when, '{"$datetime":"2026-12-01T10:00:00+00:00"}'),
        "datetime_offset": (ist, '{"$datetime":"%s"}' % ist.isoformat()),
        "datetime_named": (est, '{"$datetime":"2026-12-01T05:00:00-05:00","tz":"EST"}'),
        "datetime_zone": (paris, '{"$datetime":"2026-12-01T11:00:00","tz":"Europe/Paris"}'),
        "naive": (dt.datetime(2026, 1, 2, 3, 4, 5), '{"$datetime":"2026-01-02T03:04:05"}'),
        "date": (dt.date(2026, 12, 1), '{"$date":"2026-12-01"}'),
        "time": (dt.time(9, 5, 7, 12), '{"$time":"09:05:07.000012"}'),
        "timedelta": (dt.timedelta(days=-1, seconds=5), '{"$timedelta":"%s"}' % dt.timedelta(days=-1, seconds=5)),
        "timedelta2": (dt.timedelta(days=2, hours=3, microseconds=4),
                       '{"$timedelta":"%s"}' % dt.timedelta(days=2, hours=3, microseconds=4)),
        "uuid": (u, '{"$uuid":"12345678-1234-5678-1234-567812345678"}'),
        "bigint": (2 ** 70, '{"$bigint":"%d"}' % 2 ** 70),
    }
    for name, (value, _) in values.items():
        assert cache.set(name, value) is not False
    for name, (_, expected) in values.items():
        r = cli("--socket", daemon.socket, "get", f"t:1:{name}")
        assert r.returncode == 0, r.stderr
        assert r.stdout == expected + "\n", name

    # An object msgpack has no type for is pickled inside the value (extension 64).
    cache.set("fraction", fractions.Fraction(1, 3))
    shown = json.loads(cli("--socket", daemon.socket, "get", "t:1:fraction").stdout)
    assert set(shown) == {"$pickle", "bytes"}
    data = base64.b64decode(shown["$pickle"])
    assert len(data) == shown["bytes"] and pickle.loads(data) == fractions.Fraction(1, 3)

    # SERIALIZER="pickle": the whole value is a pickle, marked by flag bit 0x01.
    pickled = NearCache(daemon.socket, {"KEY_PREFIX": "p", "OPTIONS": {"SERIALIZER": "pickle"}})
    pickled.set("s", "café €")
    shown = json.loads(cli("--socket", daemon.socket, "get", "p:1:s").stdout)
    assert pickle.loads(base64.b64decode(shown["$pickle"])) == "café €"
    assert shown["bytes"] == len(base64.b64decode(shown["$pickle"]))


def test_get_shows_bytes_that_are_not_one_msgpack_value(daemon):
    s = "--socket=" + daemon.socket
    assert cli(s, "set", "r", "hello", "--raw").returncode == 0  # 'h' is a msgpack int, then trailing bytes
    assert cli(s, "get", "r").stdout == '{"$raw":"aGVsbG8=","bytes":5}\n'
    RawConn(daemon.socket).call(SET, b"f", b"\x80\x05anything", None, 0x10)  # a reserved flag bit
    assert cli(s, "get", "f").stdout == '{"$serialized":"gAVhbnl0aGluZw==","flags":16,"bytes":10}\n'


def test_get_prints_values_the_python_client_compressed(daemon):
    import base64
    import lzma
    import pickle
    import zlib

    from nearcache.django import NearCache

    s = "--socket=" + daemon.socket
    text = "café € " * 400  # compressible, over COMPRESS_MIN_BYTES
    shown = {name: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
             for name, v in (("text", text), ("list", [text, 1, None]))}
    for codec in ("zlib", "zstd", "lz4"):
        cache = NearCache(daemon.socket, {"KEY_PREFIX": codec, "OPTIONS": {"COMPRESSOR": codec}})
        cache.set("text", text)
        cache.set("list", [text, 1, None])
        cache.set("small", "é")  # under COMPRESS_MIN_BYTES: not compressed
        r = RawConn(daemon.socket).call(GET, f"{codec}:1:text".encode())
        assert r[3] & 0x0E and r[2][0] == 0xC1, (codec, r[3])  # stored compressed
        for name, expected in shown.items():
            out = cli(s, "get", f"{codec}:1:{name}")
            assert out.returncode == 0, out.stderr
            assert out.stdout == expected + "\n", (codec, name)
        assert cli(s, "get", f"{codec}:1:small").stdout == '"é"\n'
    # SERIALIZER="pickle" under zlib: decompressed, then shown as the pickle it is.
    pz = NearCache(daemon.socket, {"KEY_PREFIX": "pz", "OPTIONS": {"COMPRESSOR": "zlib", "SERIALIZER": "pickle"}})
    pz.set("p", text)
    got = json.loads(cli(s, "get", "pz:1:p").stdout)
    assert set(got) == {"$pickle", "bytes"} and pickle.loads(base64.b64decode(got["$pickle"])) == text

    # lzma: not decompressed by the CLI, shown as it is stored.
    lz = NearCache(daemon.socket, {"KEY_PREFIX": "x", "OPTIONS": {"COMPRESSOR": "lzma"}})
    lz.set("text", text)
    stored = RawConn(daemon.socket).call(GET, b"x:1:text")
    got = json.loads(cli(s, "get", "x:1:text").stdout)
    assert list(got) == ["$compressed", "data", "flags", "bytes", "length"]
    assert got["$compressed"] == "lzma" and got["flags"] == stored[3] == 4 << 1
    assert base64.b64decode(got["data"]) == stored[2] and got["bytes"] == len(stored[2])
    assert got["length"] == len(lzma.decompress(stored[2][5:]))  # the frame's header, as announced

    # The COMPRESSOR class's codec (5) and a frame that does not decode.
    frame = b"\xc1" + (5).to_bytes(4, "big") + b"opaque"
    c = RawConn(daemon.socket)
    c.call(SET, b"cls", frame, None, 5 << 1)
    assert cli(s, "get", "cls").stdout == (
        '{"$compressed":"class","data":"%s","flags":10,"bytes":11,"length":5}\n' % base64.b64encode(frame).decode())
    bad = b"\xc1" + (100).to_bytes(4, "big") + zlib.compress(b"x" * 99)  # one byte short of its header
    c.call(SET, b"bad", bad, None, 1 << 1)
    assert cli(s, "get", "bad").stdout == (
        '{"$compressed":"zlib","data":"%s","flags":2,"bytes":%d,"length":100,"error":"corrupt zlib data"}\n'
        % (base64.b64encode(bad).decode(), len(bad)))
    c.call(SET, b"noframe", b"\xa1x", None, 3 << 1)  # lz4 bits without a frame
    assert cli(s, "get", "noframe").stdout == (
        '{"$compressed":"lz4","data":"oXg=","flags":6,"bytes":2,"error":"not a compressed frame (no 0xC1 header)"}\n')


def test_status_json_keeps_text_readable(daemon):
    from nearcache import Client

    c = Client(daemon.socket, client_name="café €")
    assert c.ping()
    st = json.loads(cli("--socket=" + daemon.socket, "status", "--json").stdout)
    assert "café €" in [x["name"] for x in st["connections"]]
    assert "café €" in cli("--socket=" + daemon.socket, "status").stdout
    c.close()


def test_status_recent_hit_ratio(daemon):
    """Within the first minute the recent window starts at the start: the same ratio as since the start."""
    c = do_operations(daemon)
    st = json.loads(cli("--socket=" + daemon.socket, "status", "--json").stdout)
    assert abs(st["hit_ratio_1m"] - 4 / 5) < 1e-9
    assert 0 <= st["hit_ratio_1m_window_seconds"] <= st["uptime_seconds"] + 1 < 60
    c.call(GET, b"nope2")  # one more miss: 4 of 6
    text = cli("--socket=" + daemon.socket, "status").stdout
    assert re.search(r"^  hit ratio, last minute: +66\.7%$", text, re.M), text
    assert re.search(r"^  hit ratio window: +\d+ s$", text, re.M)
    c.close()
