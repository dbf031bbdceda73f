"""Who is the daemon? The check a client makes before it believes a reply.

A value may be a pickle, so a client must not talk to a daemon another local
user started (any user can create /tmp/nearcache-<uid>/ first). Before the
first request on a connection the client checks:

- the socket's directory is owned by an accepted user and not writable by
  others (nobody else can swap the socket file);
- the daemon's peer credentials (SO_PEERCRED) are root, the client's own uid,
  or the configured daemon user (default: the packaged `nearcache` user,
  when it exists; a name or a number, as SO_PEERCRED reports ids mapped
  into the client's user namespace).
"""
from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import struct

DEFAULT_DAEMON_USER = "nearcache"
_UCRED = struct.Struct("3i")  # pid, uid, gid


class UntrustedDaemon(PermissionError):
    """The socket or the daemon behind it belongs to a user this client does not trust."""


def resolve_uid(user) -> int | None:
    """A user name or number as a uid; None for a name this host does not know."""
    if user is None or user == "":
        return None
    if isinstance(user, int) or (isinstance(user, str) and user.isdigit()):
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


class Trust:
    """A callable check(sock, path) for protocol.Connection / AsyncConnection."""

    def __init__(self, daemon_user=DEFAULT_DAEMON_USER):
        self.daemon_user = daemon_user
        uids = {0, os.getuid()}
        uid = resolve_uid(daemon_user)
        if uid is not None:
            uids.add(uid)
        self.uids = frozenset(uids)

    def _who(self, uid: int) -> str:
        try:
            return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
        except KeyError:
            return f"uid {uid}"

    def _accepted(self) -> str:
        return ", ".join(self._who(u) for u in sorted(self.uids))

    def __call__(self, sock, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path)) or "/"
        st = os.stat(directory)
        if st.st_uid not in self.uids:
            raise UntrustedDaemon(errno.EPERM, f"the socket's directory {directory} is owned by "
                                  f"{self._who(st.st_uid)}, not one of {self._accepted()}; "
                                  f"set DAEMON_USER if that user runs the daemon")
        if st.st_mode & stat.S_IWOTH:
            raise UntrustedDaemon(errno.EPERM, f"the socket's directory {directory} is writable by others "
                                  f"(mode {stat.S_IMODE(st.st_mode):o}): any user could replace the socket")
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if uid not in self.uids:
            raise UntrustedDaemon(errno.EPERM, f"the daemon at {path} (pid {pid}) runs as {self._who(uid)}, "
                                  f"not one of {self._accepted()}; set DAEMON_USER if that user runs it")
