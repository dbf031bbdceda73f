"""`nearcache keys PATTERN` and `nearcache ttl KEY` against a real daemon, output checked line by line."""
from __future__ import annotations

from helpers import cli
from support.rawproto import SET, RawConn, mp


def test_keys_lists_the_matching_keys_one_a_line(daemon):
    with RawConn(daemon.socket) as c:
        for k in [b"p:1:user:1", b"p:1:user:2", b"p:1:user:10", b"p:1:item:1", b"p:2:user:1",
                  b"odd\nkey\\", "café".encode()]:
            c.call(SET, k, mp(1), None)
    r = cli("--socket=" + daemon.socket, "keys", "p:1:user:*")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["p:1:user:1", "p:1:user:10", "p:1:user:2"]
    assert r.stdout.endswith("\n") and r.stderr == ""
    # Several round trips (--count 1, the option after the pattern) give the same lines.
    r = cli("keys", "p:?:user:1", "--count", "1", "--socket", daemon.socket)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["p:1:user:1", "p:2:user:1"]
    r = cli("--socket=" + daemon.socket, "keys", "*")
    assert sorted(r.stdout.splitlines()) == sorted(
        ["p:1:user:1", "p:1:user:2", "p:1:user:10", "p:1:item:1", "p:2:user:1", "odd\\x0akey\\x5c", "café"])
    r = cli("--socket=" + daemon.socket, "keys", "nothing*")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_ttl_prints_the_time_left(daemon):
    with RawConn(daemon.socket) as c:
        c.call(SET, b"timed", mp(1), 60_000)
        c.call(SET, b"forever", mp(1), None)
    r = cli("--socket=" + daemon.socket, "ttl", "timed")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    n, unit = lines[0].split(" ")
    assert unit == "ms" and 59_000 < int(n) <= 60_000
    r = cli("--socket=" + daemon.socket, "ttl", "forever")
    assert (r.returncode, r.stdout) == (0, "no expiry\n")
    r = cli("--socket=" + daemon.socket, "ttl", "absent")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "nearcache: absent: not found\n")


def test_usage_and_help(daemon):
    r = cli("--socket=" + daemon.socket, "keys")
    assert r.returncode == 2
    r = cli("keys", "--help")
    assert r.returncode == 0 and "PATTERN" in r.stdout and "--count" in r.stdout
    r = cli("--help")
    assert any(line.split()[:1] == ["keys"] for line in r.stdout.splitlines())
    assert any(line.split()[:1] == ["ttl"] for line in r.stdout.splitlines())
    r = cli("--socket=" + daemon.socket, "keys", "*", "--count", "0")
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "nearcache: --count must be 1 to 10000\n")
