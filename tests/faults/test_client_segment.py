"""Issue 12 item 8, client side: hits only from the segment HELLO announced, on
this process's clock. A copy or a symlink renamed over the segment path, and a
client in another time namespace (`unshare --time`), each with a real daemon
and a real client process; VERIFY_SEGMENT=False shows what the checks prevent."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from nearcache import Client
from support.nearcached import Daemon
from support.process import JsonLinesChild

# A client process: one JSON line per command read from stdin ("get KEY" / "state").
CHILD = textwrap.dedent("""
    import json, sys
    from nearcache import Client, _native
    c = Client(sys.argv[1], verify_segment=sys.argv[2] == "1", timeout=0.5)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "get":
            before = _native.Segment.totals()["hits"]
            v = c.get(arg.encode())
            out = {"value": None if v is None else v.decode(), "shm_hit": _native.Segment.totals()["hits"] > before}
        else:
            out = {}
        out.update(state=c.segment_state, reason=c.shm_disabled_reason)
        print(json.dumps(out), flush=True)
""")


class Child(JsonLinesChild):
    def __init__(self, socket: str, verify: bool = True, prefix: tuple = ()):
        super().__init__([*prefix, sys.executable, "-c", CHILD, socket, "1" if verify else "0"])

    def get(self, key: str) -> dict:
        """The second of two gets: the first maps the segment (from its connection's HELLO)."""
        self.ask(f"get {key}")
        return self.ask(f"get {key}")


@pytest.fixture
def daemon(tmp_path, request):
    # A copy's heartbeat stops at the copy: the default grace (2 s) leaves time to show it served.
    d = Daemon(tmp_path, **getattr(request, "param", {}))
    yield d
    d.kill()


def _swap_in_copy(d: Daemon, symlink: bool) -> None:
    """Puts a copy of the segment (or a symlink to a copy) over its path, as another process could."""
    copy = d.segment + ".copy"
    shutil.copyfile(d.segment, copy)
    if symlink:
        os.symlink(copy, d.segment + ".link")
        os.rename(d.segment + ".link", d.segment)
    else:
        os.rename(copy, d.segment)


@pytest.mark.parametrize("symlink", [False, True], ids=["copy", "symlink"])
def test_a_file_put_over_the_segment_path_is_never_served(daemon, symlink):
    w = Client(daemon.socket)
    w.set(b"k", b"before")
    assert w.segment_state == "mapped"
    _swap_in_copy(daemon, symlink)
    w.set(b"k", b"after")            # the daemon writes the object it mapped, not the copy
    w.flush()

    checked, unchecked = Child(daemon.socket), Child(daemon.socket, verify=False)
    try:
        out = checked.get("k")
        assert out["value"] == "after" and not out["shm_hit"], out
        assert out["state"] == "socket", out
        assert ("symbolic link" if symlink else "not the segment the daemon writes") in out["reason"], out
        # Without the check the copy is mapped and its stale value served: what the check prevents.
        out = unchecked.get("k")
        assert out["state"] == "unverified" and out["value"] == "before" and out["shm_hit"], out
    finally:
        checked.close()
        unchecked.close()
    # The writer mapped the real object before the swap: it still agrees with HELLO and keeps its hits.
    assert w.get(b"k") == b"after" and w.segment_state == "mapped"


def test_a_later_hello_and_mapping_that_agree_serve_hits_again(daemon):
    _swap_in_copy(daemon, symlink=False)
    c = Client(daemon.socket, remap_interval=0.05)
    c.set(b"k", b"v")
    assert c.get(b"k") == b"v" and c.segment_state == "socket"
    daemon.restart()                 # a new segment at the path: HELLO and the path agree again
    deadline = time.monotonic() + 5
    while c.segment_state != "mapped" and time.monotonic() < deadline:
        c.get(b"absent")             # a miss carries the rate-limited HELLO
        time.sleep(0.06)
    assert c.segment_state == "mapped" and c.shm_disabled_reason is None


def _unshare_time_prefix(offset_s: int) -> tuple:
    if os.geteuid() != 0:
        pytest.skip("unshare --time needs root")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    prefix = ("unshare", "--time", f"--monotonic={offset_s}")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --time is unavailable here: {probe.stderr.strip()}")
    return prefix


@pytest.mark.parametrize("daemon", [{"heartbeat_grace_ms": 300}], indirect=True)
def test_a_client_in_another_time_namespace_uses_the_socket_alone(daemon):
    # The client's monotonic clock runs behind the daemon's: the dead daemon's
    # heartbeat would look fresh to it for as long as the offset.
    offset = -min(300, int(time.monotonic()) - 5)
    assert offset < -30, "the host booted too recently for a useful offset"
    prefix = _unshare_time_prefix(offset)
    Client(daemon.socket).set(b"k", b"v1")
    checked = Child(daemon.socket, prefix=prefix)
    unchecked = Child(daemon.socket, verify=False, prefix=prefix)
    try:
        out = checked.get("k")
        assert out["value"] == "v1" and not out["shm_hit"] and out["state"] == "socket", out
        assert "time namespace" in out["reason"], out
        Client(daemon.socket).set(b"k", b"v2")
        assert checked.get("k")["value"] == "v2"
        out = unchecked.get("k")
        assert out["value"] == "v2" and out["shm_hit"], out

        daemon.kill()                # dead: its segment stays, its heartbeat stops
        time.sleep(0.8)              # well past heartbeat_grace_ms on the daemon's clock
        out = checked.get("k")
        assert out["value"] is None and not out["shm_hit"], out
        # Without the check the dead daemon's segment is still served (the fault this prevents).
        out = unchecked.get("k")
        assert out["value"] == "v2" and out["shm_hit"], out
    finally:
        checked.close()
        unchecked.close()
