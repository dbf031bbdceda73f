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
