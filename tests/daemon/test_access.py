"""Credentials: SO_PEERCRED and the allow-list, with a client that really runs as another user."""
from __future__ import annotations

import os
import pwd
import tempfile

import msgpack
import pytest

from support.nearcached import Daemon
from support.rawproto import NOT_ALLOWED, OK, PING, STATUS, RawConn, pack

NOBODY = pwd.getpwnam("nobody")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")


def as_nobody(path: str) -> list:
    """Connects as uid/gid nobody in a forked child; returns what the daemon answered to a PING."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            c = RawConn(path)
            try:
                c.send(PING)
            except BrokenPipeError:
                pass  # refused and closed already; its reply is still readable
            try:
                reply = c.recv()
            except Exception as e:  # noqa: BLE001 - reported to the parent
                reply = ["error", repr(e)]
            closed = reply[1] == NOT_ALLOWED and c.closed_by_peer(2)
            os.write(w, msgpack.packb([reply, closed]))
        except Exception as e:  # noqa: BLE001
            os.write(w, msgpack.packb([["error", repr(e)], False]))
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return msgpack.unpackb(data)


@pytest.fixture
def shared_dir():
    """A directory `nobody` can traverse (pytest's tmp_path is private)."""
    d = tempfile.mkdtemp(prefix="nearcache-access-")
    os.chmod(d, 0o755)
    yield d
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


def start(shared_dir, tmp_path, **opts):
    # The socket's group lets nobody through the file mode; the allow-list decides.
    return Daemon(tmp_path, socket=os.path.join(shared_dir, "nc.sock"), socket_group=NOBODY.pw_gid, **opts)


def test_refused_by_allow_list(shared_dir, tmp_path):
    with start(shared_dir, tmp_path, allow_users="daemon") as d:
        (reply, closed) = as_nobody(d.socket)
        assert reply[0] is None and reply[1] == NOT_ALLOWED, reply
        assert f"uid {NOBODY.pw_uid}" in reply[2]
        assert closed
        assert f"refused connection from uid {NOBODY.pw_uid} gid {NOBODY.pw_gid}" in d.log()
        # The daemon's own user is always allowed, and others never noticed.
        with RawConn(d.socket) as me:
            assert me.call(PING)[1] == OK
            assert me.status()["connections_refused_total"] == 1


def test_allowed_by_user_or_group(shared_dir, tmp_path):
    with start(shared_dir, tmp_path, allow_users=str(NOBODY.pw_uid)) as d:
        reply, _ = as_nobody(d.socket)
        assert reply[1] == OK
    with start(shared_dir, tmp_path, allow_users="daemon", allow_groups=str(NOBODY.pw_gid)) as d:
        reply, _ = as_nobody(d.socket)
        assert reply[1] == OK


def test_no_list_lets_the_file_mode_decide(shared_dir, tmp_path):
    with start(shared_dir, tmp_path) as d:
        reply, _ = as_nobody(d.socket)
        assert reply[1] == OK
    # Without the group, the socket's mode (0660 root:root) keeps nobody out.
    with Daemon(tmp_path, socket=os.path.join(shared_dir, "nc.sock")) as d:
        reply, _ = as_nobody(d.socket)
        assert reply[0] == "error" and "Permission" in reply[1]


def test_peer_credentials_in_status(daemon):
    with RawConn(daemon.socket) as c:
        [me] = c.status()["connections"]
        assert me["uid"] == os.getuid() and me["gid"] == os.getgid() and me["pid"] == os.getpid()
