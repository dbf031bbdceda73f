"""Mapping the segment HELLO announced, and only that one (doc/protocol.md, HELLO).

Two checks stand between a HELLO and serving hits from shared memory:

- Identity: the object mapped must be the one the daemon writes (HELLO's
  `segment_dev`/`segment_ino`). A copy or a symlink renamed over the path
  would otherwise be served. The file is opened here with O_NOFOLLOW, its
  fstat compared, and the native reader maps that very open file through
  `/proc/self/fd/N` (a reopen of the same inode, not a path lookup), so no
  swap can slip in between the check and the map. Without /proc the path is
  mapped and stat'ed again after the map: a narrow race remains (the native
  Segment would need an `open(fd=...)` to close it).
- Clock: HELLO's `clock_ms` (the daemon's CLOCK_MONOTONIC, the clock of the
  heartbeat and the expiries) must lie within CLOCK_SLACK_MS of this
  process's own clock read around the HELLO; else the process is in another
  time namespace and could neither see the heartbeat stop nor expire entries.
"""
from __future__ import annotations

import errno
import os

CLOCK_SLACK_MS = 1000


class Refused(Exception):
    """The segment must not be served from; str() says why."""


def clock_refusal(info: dict, t0: float, t1: float) -> str | None:
    """Why HELLO's clock is not this process's (t0..t1: time.monotonic() around the HELLO), or None."""
    c = info.get("clock_ms")
    if not isinstance(c, int) or isinstance(c, bool):
        return "the daemon does not report its clock (clock_ms) in HELLO"
    if t0 * 1000 - CLOCK_SLACK_MS <= c <= t1 * 1000 + CLOCK_SLACK_MS:
        return None
    return (f"the daemon's monotonic clock is {c / 1000 - (t0 + t1) / 2:+.1f} s from this process's "
            "(another time namespace?): its heartbeat and expiries cannot be read here")


def identity(info: dict) -> tuple[int, int] | None:
    dev, ino = info.get("segment_dev"), info.get("segment_ino")
    if isinstance(dev, int) and isinstance(ino, int):
        return dev, ino
    return None


def fs_path(info: dict) -> str:
    """The segment's path in the file system (a POSIX shm name lives in /dev/shm)."""
    path = info["segment"]
    return "/dev/shm/" + path.lstrip("/") if info.get("posix_shm") else path


def map_checked(seg, info: dict) -> tuple[int, int]:
    """Maps HELLO's segment into `seg` if it is the object HELLO names; returns its (dev, ino).
    Raises Refused (a different object, or no identity to compare), or OSError (cannot open)."""
    want = identity(info)
    if want is None:
        raise Refused("the daemon does not report the segment's identity (segment_dev, segment_ino) in HELLO")
    path = fs_path(info)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW: the last component is a symlink
            raise Refused(f"the segment path {path} is a symbolic link, not the daemon's segment") from e
        raise
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != want:
            raise Refused(_other(path, st, want))
        proc = f"/proc/self/fd/{fd}"
        if os.path.exists(proc):
            seg.open(proc)
            return want
    finally:
        os.close(fd)
    # No /proc: map the path, then check that it still names the object checked above.
    seg.open(path)
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != want:
        seg.close()
        raise Refused(f"the segment path {path} changed while it was being mapped")
    return want


def _other(path: str, st, want) -> str:
    return (f"{path} is not the segment the daemon writes (dev/inode {st.st_dev}/{st.st_ino}, "
            f"HELLO announced {want[0]}/{want[1]}): a file was put over the path")
