"""A client trusts a daemon only after checking who it is (nearcache.trust):
daemons run as another user (nobody) through setpriv, clients as root and as a
forked non-root child, the socket's directory owned by the wrong user or
writable by others."""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile

import pytest

from nearcache import CacheUnavailable, Client
from nearcache.django import NearCache
from support.nearcached import Daemon

NOBODY = pwd.getpwnam("nobody")
OTHER_UID = 54321   # a client user that exists only as a number


class NobodyDaemon(Daemon):
    """nearcached run as uid/gid nobody."""

    def args(self):
        return ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
                *super().args()]


@pytest.fixture
def shared():
    d = tempfile.mkdtemp(prefix="nearcache-trust-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _dir(parent, owner: int, mode: int) -> str:
    d = os.path.join(parent, f"run-{owner}-{mode:o}")
    os.mkdir(d)
    os.chown(d, owner, NOBODY.pw_gid)
    os.chmod(d, mode)
    return d


def test_daemon_of_another_user_is_refused(shared):
    d = NobodyDaemon(_dir(shared, NOBODY.pw_uid, 0o755), socket_group=NOBODY.pw_gid, segment_mode="0644")
    try:
        with pytest.raises(CacheUnavailable, match="nobody|owned by"):
            Client(d.socket, strict=True).get(b"k")
        # Fail-open: a miss, never the daemon's value.
        assert Client(d.socket).get(b"k") is None
        # Naming that user, by name or number, trusts it.
        for user in ("nobody", str(NOBODY.pw_uid), NOBODY.pw_uid):
            c = Client(d.socket, strict=True, daemon_user=user)
            assert c.set(b"k", b"v") and c.get(b"k") == b"v"
        # Or switching the check off.
        assert Client(d.socket, strict=True, verify_daemon=False).get(b"k") == b"v"
        cache = NearCache(d.socket, {"OPTIONS": {"STRICT": True, "DAEMON_USER": "nobody"}})
        cache.set("x", 1)
        assert cache.get("x") == 1
    finally:
        d.stop()


def test_directory_writable_by_others_is_refused(shared):
    d = Daemon(_dir(shared, 0, 0o777))
    try:
        with pytest.raises(CacheUnavailable, match="writable by others"):
            Client(d.socket, strict=True).ping()
        assert Client(d.socket, strict=True, verify_daemon=False).ping()
    finally:
        d.stop()


def test_root_daemon_is_trusted(daemon):
    c = Client(daemon.socket, strict=True)
    assert c.set(b"k", b"v") and c.get(b"k") == b"v"


def _as_user(uid: int, fn) -> tuple:
    """Runs fn() in a forked child as uid (gid nobody); returns (exit status, what it wrote)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(uid)
            os.write(w, repr(fn()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    out = os.read(r, 65536).decode()
    os.close(r)
    return os.waitpid(pid, 0)[1], out


def test_pickle_from_another_users_daemon_is_never_unpickled(shared, tmp_path):
    """The attack: another user creates the worker's socket directory first and serves a pickle."""
    d = NobodyDaemon(_dir(shared, NOBODY.pw_uid, 0o755), socket_group=NOBODY.pw_gid, segment_mode="0644")
    marker = os.path.join(shared, "pwned")
    try:
        # The attacker stores a pickle that creates a file when loaded.
        evil = NearCache(d.socket, {"OPTIONS": {"STRICT": True, "DAEMON_USER": "nobody"}})
        evil.set("victim", Evil(marker))
        os.unlink(marker) if os.path.exists(marker) else None

        def victim():
            cache = NearCache(d.socket, {"OPTIONS": {}})
            return cache.get("victim", "refused"), os.path.exists(marker)

        status, out = _as_user(OTHER_UID, victim)
        assert status == 0, out
        assert out == repr(("refused", False))
        # The same worker trusts its own daemon.
        own = _dir(shared, OTHER_UID, 0o755)
        mine = Daemon(own, socket_group=NOBODY.pw_gid, segment_mode="0644")
        try:
            status, out = _as_user(OTHER_UID, lambda: Client(mine.socket, strict=True).ping())
            assert status == 0 and out == "True", out   # the daemon runs as root: trusted too
        finally:
            mine.stop()
    finally:
        d.stop()


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_default_path_finds_the_packaged_daemon(monkeypatch, shared):
    from nearcache import protocol
    monkeypatch.delenv("NEARCACHE_SOCKET", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    from pathlib import Path
    packaged = Path(shared) / "run" / "nearcached.sock"
    monkeypatch.setattr(protocol, "PACKAGED_SOCKET", str(packaged))
    status, out = _as_user(OTHER_UID, protocol.default_socket_path)
    assert out == repr(f"/tmp/nearcache-{OTHER_UID}/nearcached.sock")
    packaged.parent.mkdir()
    packaged.touch()
    status, out = _as_user(OTHER_UID, protocol.default_socket_path)
    assert out == repr(str(packaged))
