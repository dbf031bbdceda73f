"""`nearcache memory` and `nearcache hotkeys`, and STATUS's traffic by key
prefix, against a real daemon and real shared-memory readers (the segment
probe): every line of their output checked against what the test stored and
read."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from helpers import Probe, cli
from support.nearcached import Daemon
from support.probe import unregister
from support.rawproto import GET, SET, RawConn, mp


def item_bytes(key: bytes, value: bytes) -> int:
    """What an entry takes in the data area (shm/layout.h: header, key, value, 8-aligned)."""
    return (16 + len(key) + len(value) + 7) & ~7


def human(n: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    v, u = float(n), 0
    while v >= 1024 and u < 4:
        v, u = v / 1024, u + 1
    return f"{v:.1f} {units[u]}" if u else f"{v:.0f} {units[u]}"


ENTRIES = {  # key -> msgpack value
    b"user:1": mp("a" * 10), b"user:2": mp("b" * 20), b"user:3": mp("c" * 30),
    b"session:x": mp("s" * 700), b"views:page:1": mp("p" * 100), b"views:page:2": mp("q" * 100),
    b"views:frag:1": mp("f" * 50), b"plain": mp(1),
}


def store(daemon) -> RawConn:
    c = RawConn(daemon.socket)
    for k, v in ENTRIES.items():
        assert c.call(SET, k, v, None)[1] == 0
    return c


def expected_rows(depth: int) -> list[tuple[str, int, int]]:
    rows: dict[str, list[int]] = {}
    for k, v in ENTRIES.items():
        ks, cut, seen = k.decode(), 0, 0
        for i, ch in enumerate(ks):
            if ch == ":" and seen < depth:
                cut, seen = i + 1, seen + 1
        p = ks[:cut] or "(none)"
        r = rows.setdefault(p, [0, 0])
        r[0] += 1
        r[1] += item_bytes(k, v)
    return sorted(((p, e, b) for p, (e, b) in rows.items()), key=lambda r: (-r[2], -r[1], r[0]))


def header_lines(segment: str, data_bytes: int) -> list[str]:
    total = sum(item_bytes(k, v) for k, v in ENTRIES.items())
    keys = sum(len(k) for k in ENTRIES)
    values = sum(len(v) for v in ENTRIES.values())
    return [f"segment {segment}",
            f"entries: {len(ENTRIES)} (0 negative)",
            f"bytes: {human(total)} ({total}) in entries, of {human(data_bytes)} in the data area "
            f"({100 * total / data_bytes:.1f}%): keys {keys}, values {values}, headers and padding "
            f"{total - keys - values}"]


def prefix_lines(depth: int, rows, width: int | None = None) -> list[str]:
    total = sum(item_bytes(k, v) for k, v in ENTRIES.items())
    width = width or min(max([6] + [len(r[0]) for r in rows]), 60)
    out = ["", f'by prefix (depth {depth}, separators ":"), most bytes first:',
           f"{'PREFIX':<{width}} {'ENTRIES':>12} {'BYTES':>14} {'SIZE':>10} {'SHARE':>7}"]
    for p, e, b in rows:
        out.append(f"{p:<{width}} {e:>12} {b:>14} {human(b):>10} {100 * b / total:>6.1f}%")
    return out


def test_memory_totals(daemon):
    c = store(daemon)
    data = c.status()["memory_data_bytes"]
    r = cli("--socket", daemon.socket, "memory")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == header_lines(daemon.segment, data)
    c.close()


@pytest.mark.parametrize("depth", [1, 2])
def test_memory_by_prefix(daemon, depth):
    c = store(daemon)
    data = c.status()["memory_data_bytes"]
    args = ["memory", "--by-prefix"] if depth == 1 else ["memory", f"--by-prefix={depth}"]
    r = cli("--socket", daemon.socket, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == header_lines(daemon.segment, data) + prefix_lines(depth, expected_rows(depth))
    c.close()


def test_memory_count_sums_the_rest_as_other(daemon):
    c = store(daemon)
    data = c.status()["memory_data_bytes"]
    r = cli("memory", "--by-prefix", "--count", "2", "--socket=" + daemon.socket)  # flags after the command
    assert r.returncode == 0, r.stderr
    rows = expected_rows(1)
    shown, rest = rows[:2], rows[2:]
    other = ("(other)", sum(e for _, e, _ in rest), sum(b for _, _, b in rest))
    width = min(max([6] + [len(p) for p, _, _ in shown]), 60)
    assert r.stdout.splitlines() == header_lines(daemon.segment, data) + prefix_lines(1, shown + [other], width)
    c.close()


def test_memory_reads_the_segment_without_the_daemon(daemon, tmp_path):
    """--segment: the walk needs no daemon at all (the socket named does not exist)."""
    c = store(daemon)
    data = c.status()["memory_data_bytes"]
    r = cli("--socket", str(tmp_path / "nothing.sock"), "memory", "--segment", daemon.segment)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == header_lines(daemon.segment, data)
    c.close()


def test_memory_skips_expired_and_deleted(daemon):
    c = store(daemon)
    assert c.call(SET, b"gone:1", mp("x"), 1)[1] == 0  # 1 ms
    c.call(SET, b"gone:2", mp("y"), None)
    from support.rawproto import DELETE
    c.call(DELETE, b"gone:2")
    time.sleep(0.05)
    data = c.status()["memory_data_bytes"]
    r = cli("--socket", daemon.socket, "memory", "--by-prefix")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == header_lines(daemon.segment, data) + prefix_lines(1, expected_rows(1))
    c.close()


def test_memory_usage_errors(daemon, tmp_path):
    r = cli("--socket", daemon.socket, "memory", "--by-prefix=0")
    assert r.returncode == 2 and r.stderr == "nearcache: --by-prefix takes a DEPTH of 1 or more\n"
    r = cli("--socket", daemon.socket, "memory", "--segment", str(tmp_path / "none.seg"))
    assert r.returncode == 1 and "cannot open segment" in r.stderr
    r = cli("--socket", str(tmp_path / "none.sock"), "memory")
    assert r.returncode == 3 and r.stdout == ""


def wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


def hotkeys(daemon, *args) -> list[str]:
    r = cli("--socket", daemon.socket, "hotkeys", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_hotkeys_counts_shared_memory_and_daemon_hits(daemon):
    c = store(daemon)
    with Probe() as p:  # a real reader process: its hits reach the daemon only through its hit ring
        p.open(daemon.segment)
        reg = p.register(daemon.socket)
        for _ in range(7):
            assert p.get("views:page:1") == "hit"
        for _ in range(3):
            assert p.get("user:2") == "hit"
        unregister(reg, c)  # its last ring entries are read when its connection closes
    for _ in range(2):  # daemon GETs: counted as hits of their key
        assert c.call(GET, b"user:2")[1] == 0
    c.call(GET, b"views:nope")  # a miss: no hot key, a miss of its prefix
    lines = hotkeys(daemon)
    assert lines[0].startswith("hits by key in the last ") and lines[0].endswith(
        " s (shared-memory hits sampled, daemon GETs all counted):")
    # Fewer ring entries per read than key_stats samples (128): every one is counted, weight 1.
    assert lines[1:] == [f"{'HITS':>12}  KEY", f"{7:>12}  views:page:1", f"{5:>12}  user:2"]
    assert hotkeys(daemon, "--count", "1")[1:] == [f"{'HITS':>12}  KEY", f"{7:>12}  views:page:1"]

    st = c.status()["key_stats"]
    assert st["enabled"] is True and st["prefix_depth"] == 1 and st["separators"] == ":"
    assert [[bytes(k), n] for k, n in st["hot_keys"]] == [[b"views:page:1", 7], [b"user:2", 5]]
    assert [[bytes(p), h, m] for p, h, m in st["prefixes"]] == [[b"views:", 7, 1], [b"user:", 5, 0]]
    c.close()


def test_status_text_shows_traffic_by_prefix(daemon):
    c = store(daemon)
    for k in (b"user:1", b"user:3", b"user:9", b"plain", b"views:page:2"):
        c.call(GET, k)
    r = cli("--socket", daemon.socket, "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  traffic by key prefix"))
    assert lines[at].startswith('  traffic by key prefix (depth 1, separators ":", last ')
    assert lines[at].endswith(" s; shared-memory hits sampled, misses the daemon answered):")
    w = 6
    assert lines[at + 1:at + 5] == [
        f"    {'PREFIX':<{w}} {'HITS':>12} {'MISSES':>12} {'HIT RATIO':>9}",
        f"    {'user:':<{w}} {2:>12} {1:>12} {'66.7%':>9}",
        f"    {'(none)':<{w}} {1:>12} {0:>12} {'100.0%':>9}",
        f"    {'views:':<{w}} {1:>12} {0:>12} {'100.0%':>9}",
    ]
    c.close()


def test_key_stats_depth_and_separators(tmp_path):
    """Django's keys (KEY_PREFIX:VERSION:key, dots in its own): depth 3 with `:.`."""
    d = Daemon(tmp_path, key_stats_prefix_depth=3, key_stats_separators=":.")
    try:
        c = RawConn(d.socket)
        for k in (b":1:views.decorators.cache.cache_page.x", b":1:views.decorators.cache.cache_header.y",
                  b":1:django.contrib.sessions.cacheabc", b":1:throttle_user_1"):
            c.call(SET, k, mp(1), None)
            c.call(GET, k)
        st = c.status()["key_stats"]
        assert st["prefix_depth"] == 3 and st["separators"] == ":."
        assert [[bytes(p), h, m] for p, h, m in st["prefixes"]] == [
            [b":1:views.", 2, 0], [b":1:", 1, 0], [b":1:django.", 1, 0]]
        c.close()
    finally:
        assert d.stop() == 0, d.log()


def test_key_stats_separators_are_1_to_8_characters(tmp_path):
    conf = tmp_path / "empty.conf"
    conf.write_text("key_stats_separators =\n")
    for options, got in (({"config": str(conf)}, 0), ({"key_stats_separators": ":.-_/|#@!"}, 9)):
        d = Daemon(tmp_path, start=False, **options)
        r = subprocess.run(d.args(), capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and f"option key_stats_separators: 1 to 8 characters (got {got})" in r.stderr, r


def test_key_stats_off(tmp_path):
    d = Daemon(tmp_path, key_stats="false")
    try:
        c = RawConn(d.socket)
        c.call(SET, b"a:1", mp(1), None)
        c.call(GET, b"a:1")
        st = c.status()
        assert st["key_stats"]["enabled"] is False and st["key_stats"]["hot_keys"] == []
        assert st["key_stats"]["prefixes"] == [] and st["config"]["key_stats"] is False
        r = cli("--socket", d.socket, "hotkeys")
        assert r.returncode == 1 and r.stderr == "nearcache: key_stats is off (nearcached option key_stats = false)\n"
        c.close()
    finally:
        assert d.stop() == 0, d.log()


def test_status_json_carries_key_stats(daemon):
    c = store(daemon)
    c.call(GET, b"user:1")
    r = cli("--socket", daemon.socket, "status", "--json")
    st = json.loads(r.stdout)["key_stats"]
    # Keys are bytes (bin), as `get --json` prints bytes.
    assert st["hot_keys"] == [[{"$bytes": "dXNlcjox"}, 1]] and st["prefixes"] == [[{"$bytes": "dXNlcjo="}, 1, 0]]
    c.close()
