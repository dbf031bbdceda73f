"""Squatted names (issue 12, item 2, the daemon's side): in a directory every
user can write (/dev/shm, /tmp) another user can create the daemon's
segment name, its lock, or its runtime directory first, or hold the lock.
The daemon never maps, locks through or uses such an object: a squatted
segment name or lock makes it take a fresh unguessable name (announced in
HELLO, a warning naming the squatter's uid, the same name again on the next
start); a squatted runtime directory makes it refuse with the owner and the
fix, since clients look for the socket there. Runs as root: the squatter is
uid 65534, made with os.fchown or setpriv."""
from __future__ import annotations

import fcntl
import os
import re
import secrets
import subprocess
import sys
import time

import pytest

from nearcache import Client
from support.nearcached import NEARCACHE_CLI, Daemon

SQUATTER = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create objects as another user")


@pytest.fixture
def shm_name():
    """A POSIX shm name of this test alone; every object under it is removed afterwards."""
    name = "nc-squat-" + secrets.token_hex(4)
    yield name
    for n in os.listdir("/dev/shm"):
        if n.startswith(name):
            os.unlink("/dev/shm/" + n)


def squat(path: str, mode: int = 0o666, size: int = 4096) -> os.stat_result:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
    os.ftruncate(fd, size)
    os.pwrite(fd, b"squatter's bytes", 0)
    os.fchmod(fd, mode)
    os.fchown(fd, SQUATTER, SQUATTER)
    os.close(fd)
    return os.stat(path)


def served_name(d: Daemon) -> str:
    """The segment HELLO announces, after checking that a client serves hits from it."""
    c = Client(d.socket)
    try:
        assert c.set(b"k", b"v")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert c.get(b"k") == b"v"
            if c.segment.is_open:
                break
            time.sleep(0.05)
        assert c.segment.is_open, c.shm_disabled_reason
        return c.info["segment"]
    finally:
        c.close()


def assert_untouched(path: str, before: os.stat_result) -> None:
    st = os.stat(path)
    assert (st.st_uid, st.st_size, st.st_mode, st.st_ino) == (before.st_uid, before.st_size, before.st_mode,
                                                              before.st_ino)
    with open(path, "rb") as f:
        assert f.read(16) == b"squatter's bytes"


def test_a_squatted_segment_name_gets_a_fresh_one_announced_in_hello(tmp_path, shm_name):
    before = squat("/dev/shm/" + shm_name)
    d = Daemon(tmp_path, posix_shm="true", segment="/" + shm_name)
    try:
        name = served_name(d)
        assert re.fullmatch(re.escape("/" + shm_name) + r"\.[0-9a-f]{16}", name), name
        st = os.stat("/dev/shm" + name)
        assert st.st_uid == 0 and not st.st_mode & 0o002
        assert re.search(rf"\[warn(ing)?\].*belongs to uid {SQUATTER}.*using {re.escape(name)}", d.log()), d.log()
        assert_untouched("/dev/shm/" + shm_name, before)
        # STATUS names the segment in use: the CLI reads that one, not the squatter's.
        out = subprocess.run([str(NEARCACHE_CLI), "--socket", d.socket, "memory"], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and "entries: 1 " in out.stdout, out
        # The next start finds its own fresh name again (and adopts the table): nothing is left behind.
        d.restart()
        assert served_name(d) == name
        assert sorted(n for n in os.listdir("/dev/shm") if n.startswith(shm_name)) == \
            sorted([shm_name, name[1:], name[1:] + ".lock"])
    finally:
        d.stop()
    assert_untouched("/dev/shm/" + shm_name, before)


@pytest.mark.parametrize("mode", [0o666, 0o600])
def test_a_squatted_lock_held_by_another_user_does_not_keep_the_daemon_down(tmp_path, shm_name, mode):
    lock = f"/dev/shm/{shm_name}.lock"
    before = squat(lock, mode, size=0)
    os.truncate(lock, 16)
    # The squatter holds its lock (as itself: setpriv), as a daemon of its own would.
    holder = subprocess.Popen(
        ["setpriv", f"--reuid={SQUATTER}", f"--regid={SQUATTER}", "--clear-groups", sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\n"
         "time.sleep(120)\n", lock], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BlockingIOError):  # it really is held
            fd = os.open(lock, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        with Daemon(tmp_path, posix_shm="true", segment="/" + shm_name) as d:
            name = served_name(d)
            assert name.startswith(f"/{shm_name}.") and name != "/" + shm_name, name
            assert re.search(rf"lock /{shm_name}\.lock belongs to uid {SQUATTER}", d.log()), d.log()
        st = os.stat(lock)
        assert (st.st_uid, st.st_mode, st.st_ino) == (before.st_uid, before.st_mode, before.st_ino)
        assert not os.path.exists("/dev/shm/" + shm_name)  # the usual name was never created
    finally:
        holder.kill()
        holder.wait()


def start_refused(d: Daemon, env: dict) -> str:
    out = subprocess.run(d.args(), env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0, out
    return out.stdout + out.stderr


def test_a_squatted_runtime_directory_is_refused_with_its_owner_and_the_fix(tmp_path):
    xdg = tmp_path / "xdg"
    rundir = xdg / "nearcache"  # the daemon's default runtime directory with XDG_RUNTIME_DIR set
    rundir.mkdir(parents=True)
    os.chown(rundir, SQUATTER, SQUATTER)
    os.chmod(rundir, 0o755)
    d = Daemon(tmp_path, start=False, socket=f"{rundir}/nearcached.sock", segment=f"{rundir}/nearcached.seg")
    log = start_refused(d, {"XDG_RUNTIME_DIR": str(xdg)})
    assert f"runtime directory {rundir} belongs to uid {SQUATTER}" in log, log
    assert "Remove it" in log and "XDG_RUNTIME_DIR" in log, log
    assert os.listdir(rundir) == []  # nothing was put there
    # Ours, but writable by its group: refused too (others could replace the socket).
    os.chown(rundir, 0, 0)
    os.chmod(rundir, 0o770)
    log = start_refused(d, {"XDG_RUNTIME_DIR": str(xdg)})
    assert "is writable by its group" in log and "chmod go-w" in log, log
    assert os.listdir(rundir) == []
    # Fixed: it starts there.
    os.chmod(rundir, 0o750)
    d.start(env={"XDG_RUNTIME_DIR": str(xdg)})
    try:
        assert served_name(d) == f"{rundir}/nearcached.seg"
    finally:
        d.stop()
