"""Start and stop a service from its installed unit file, doing what systemd does.

The machines that run these tests (CI included) have no systemd as PID 1, so
`systemctl start` is not available. Service reads the unit and does systemd's
part itself, directive by directive:

  emulated   Type=notify (a NOTIFY_SOCKET datagram listener that checks READY=1
             and STOPPING=1 and, with NotifyAccess=main, that they come from the
             main pid), ExecStart=, ExecReload= ($MAINPID), User=, Group= (with
             initgroups, as systemd), RuntimeDirectory= (+Mode, +Preserve),
             UMask=, LimitNOFILE=, NoNewPrivileges=, CapabilityBoundingSet=,
             AmbientCapabilities= (empty), PrivateTmp=, PrivateDevices= (a
             private /dev/shm), ProtectHome=, ProtectSystem=strict, ProtectProc=,
             ProcSubset=, SystemCallFilter= (expanded by systemd-analyze),
             SystemCallErrorNumber=, SystemCallArchitectures=native,
             MemoryDenyWriteExecute=, RestrictAddressFamilies=, TimeoutStopSec=,
             RemoveIPC= (on stop: the user's /dev/shm files and SysV objects),
             JOURNAL_STREAM (the daemon logs to a file, told it is the journal)
  not        Restart=, PrivateMounts= (the namespace is private anyway),
  emulated   ProtectClock=, ProtectHostname=, ProtectKernelTunables=,
             ProtectKernelModules=, ProtectKernelLogs=, ProtectControlGroups=,
             RestrictNamespaces=, RestrictRealtime=, RestrictSUIDSGID=,
             LockPersonality=, DevicePolicy=: they are checked by
             `systemd-analyze verify` and `security` only.

A directive in neither list fails the test: a new one must be thought about.
"""
from __future__ import annotations

import array
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: python3-seccomp is installed for it

EMULATED = {
    "Type", "NotifyAccess", "ExecStart", "ExecReload", "User", "Group", "RuntimeDirectory",
    "RuntimeDirectoryMode", "RuntimeDirectoryPreserve", "UMask", "LimitNOFILE", "NoNewPrivileges",
    "CapabilityBoundingSet", "AmbientCapabilities", "PrivateTmp", "PrivateDevices", "ProtectHome",
    "ProtectSystem", "ProtectProc", "ProcSubset", "SystemCallFilter", "SystemCallErrorNumber",
    "SystemCallArchitectures", "MemoryDenyWriteExecute", "RestrictAddressFamilies", "TimeoutStopSec",
    "RemoveIPC",
}
NOT_EMULATED = {
    "Restart", "PrivateMounts", "ProtectClock", "ProtectHostname", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "RestrictNamespaces",
    "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "DevicePolicy",
}
UNIT_SECTION = {"Description", "Documentation", "After"}
INSTALL_SECTION = {"WantedBy"}


def parse_unit(path: str | Path, instance: str = "") -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}}; an empty assignment resets the key, as in systemd."""
    sections: dict[str, dict[str, list[str]]] = {}
    cur = None
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), expand_specifiers(value.strip(), instance)
        if value == "":
            cur[key] = []
        else:
            cur.setdefault(key, []).append(value)
    return sections


def expand_specifiers(value: str, instance: str) -> str:
    table = {"i": instance, "I": instance, "t": "/run", "%": "%"}
    return re.sub(r"%(.)", lambda m: table[m.group(1)], value)


def yes(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("yes", "true", "1", "on")


def syscall_group(name: str, _cache: dict = {}) -> set[str]:
    """A SystemCallFilter= item, expanded as systemd does (groups nest)."""
    if not name.startswith("@"):
        return {name}
    if name not in _cache:
        out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", name], check=True,
                             capture_output=True, text=True).stdout
        calls: set[str] = set()
        for line in out.splitlines()[1:]:
            item = line.strip()
            if item and not item.startswith("#"):
                calls |= syscall_group(item)
        _cache[name] = calls
    return _cache[name]


def syscall_allow_list(lines: list[str]) -> set[str]:
    allowed: set[str] | None = None
    for line in lines:
        deny = line.startswith("~")
        items = set().union(*(syscall_group(i) for i in line.lstrip("~").split()))
        if allowed is None:
            if deny:
                raise AssertionError("the emulation handles allow lists only")
            allowed = items
        elif deny:
            allowed -= items
        else:
            allowed |= items
    return allowed or set()


class NotifyListener:
    """systemd's side of sd_notify: a datagram socket that records who sent what."""

    def __init__(self, directory: Path, owner_uid: int):
        self.path = str(directory / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chown(self.path, owner_uid, -1)
        os.chmod(self.path, 0o600)  # only the service's user may notify
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[int, dict[str, str]]] = []  # (sender pid, fields)
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except OSError:
                return
            pid = -1
            for level, typ, payload in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = array.array("i", payload[:12])[0]
            fields = dict(l.split("=", 1) for l in data.decode().splitlines() if "=" in l)
            with self.cond:
                self.messages.append((pid, fields))
                self.cond.notify_all()

    def wait_for(self, key: str, value: str, timeout: float) -> int:
        """Waits for KEY=VALUE; returns the sender's pid."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for pid, fields in self.messages:
                    if fields.get(key) == value:
                        return pid
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {key}={value} on NOTIFY_SOCKET within {timeout}s; got {self.messages}")
                self.cond.wait(left)

    def close(self) -> None:
        self.sock.close()


class Service:
    """One service started from its unit file (see the module docstring)."""

    def __init__(self, unit_path: str | Path, instance: str = "", workdir: Path | None = None):
        self.unit_path = Path(unit_path)
        self.unit = parse_unit(unit_path, instance)
        svc = self.unit["Service"]
        unknown = set(svc) - EMULATED - NOT_EMULATED
        unknown |= set(self.unit.get("Unit", {})) - UNIT_SECTION
        unknown |= set(self.unit.get("Install", {})) - INSTALL_SECTION
        assert not unknown, f"{unit_path}: directives this emulation does not know: {sorted(unknown)}"
        assert svc["Type"] == ["notify"]
        self.svc = svc
        self.user = svc["User"][-1]
        self.group = svc["Group"][-1]
        self.uid = pwd.getpwnam(self.user).pw_uid
        self.gid = grp.getgrnam(self.group).gr_gid
        self.runtime_dirs = ["/run/" + d for v in svc.get("RuntimeDirectory", []) for d in v.split()]
        self.work = Path(tempfile.mkdtemp(prefix="nctest-", dir="/run"))  # /run: visible inside the sandbox
        os.chmod(self.work, 0o755)
        self.log_path = (workdir or self.work) / f"{self.unit_path.stem}{'-' + instance if instance else ''}.log"
        self.proc: subprocess.Popen | None = None
        self.notify: NotifyListener | None = None
        self.main_pid = 0

    # -- what systemd computes from the unit ----------------------------------
    def argv(self) -> list[str]:
        (line,) = self.svc["ExecStart"]
        return shlex.split(line)

    def _spec(self, env: dict) -> dict:
        svc = self.svc
        nofile = svc.get("LimitNOFILE", [None])[-1]
        families = None
        if svc.get("RestrictAddressFamilies"):
            families = [getattr(socket, f) for v in svc["RestrictAddressFamilies"] for f in v.split()]
        errno_name = svc.get("SystemCallErrorNumber", ["EPERM"])[-1]
        import errno as errno_mod
        return {
            "argv": self.argv(),
            "env": env,
            "user": self.user, "uid": self.uid, "gid": self.gid,
            "umask": int(svc.get("UMask", ["0022"])[-1], 8),
            "nofile": int(nofile) if nofile else None,
            "no_new_privs": yes(svc.get("NoNewPrivileges")),
            "drop_bounding_set": "CapabilityBoundingSet" in svc and svc["CapabilityBoundingSet"] == [],
            "writable": self.runtime_dirs,
            "sandbox": {
                "PrivateTmp": yes(svc.get("PrivateTmp")),
                "PrivateDevices": yes(svc.get("PrivateDevices")),
                "ProtectHome": yes(svc.get("ProtectHome")),
                "ProtectSystem": svc.get("ProtectSystem", [""])[-1],
                "ProtectProc": svc.get("ProtectProc", [""])[-1],
                "ProcSubset": svc.get("ProcSubset", [""])[-1],
            },
            "seccomp": {
                "allow": sorted(syscall_allow_list(svc["SystemCallFilter"])) if svc.get("SystemCallFilter") else None,
                "errno": getattr(errno_mod, errno_name),
                "MemoryDenyWriteExecute": yes(svc.get("MemoryDenyWriteExecute")),
                "address_families": families,
            },
        }

    # -- lifecycle ------------------------------------------------------------
    def prepare_runtime_dirs(self) -> None:
        mode = int(self.svc.get("RuntimeDirectoryMode", ["0755"])[-1], 8)
        for d in self.runtime_dirs:
            os.makedirs(d, exist_ok=True)
            os.chown(d, self.uid, self.gid)
            os.chmod(d, mode)

    def start(self, timeout: float = 15.0) -> "Service":
        assert os.geteuid() == 0
        self.prepare_runtime_dirs()
        self.notify = NotifyListener(self.work, self.uid)
        pw = pwd.getpwnam(self.user)
        log = open(self.log_path, "ab")
        st = os.fstat(log.fileno())
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "USER": self.user, "LOGNAME": self.user, "HOME": pw.pw_dir, "SHELL": pw.pw_shell,
            "INVOCATION_ID": uuid.uuid4().hex,
            "NOTIFY_SOCKET": self.notify.path,
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        }
        if self.runtime_dirs:
            env["RUNTIME_DIRECTORY"] = ":".join(self.runtime_dirs)
        spec_path = self.work / "spec.json"
        spec_path.write_text(json.dumps(self._spec(env)))
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", SYSTEM_PYTHON, str(HERE / "sandbox_exec.py"),
             str(spec_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True)
        log.close()
        self.main_pid = self.proc.pid  # unshare and the launcher exec: one pid throughout
        try:
            sender = self.notify.wait_for("READY", "1", timeout)
        except AssertionError as e:
            log = self.log()
            self.kill()
            raise AssertionError(f"{self.unit_path.name} did not become ready ({e}):\n{log}")
        if self.svc.get("NotifyAccess", ["main"])[-1] == "main":
            assert sender == self.main_pid, f"READY=1 from pid {sender}, main pid is {self.main_pid}"
        return self

    def reload(self) -> None:
        (line,) = self.svc["ExecReload"]
        argv = shlex.split(line.replace("${MAINPID}", str(self.main_pid)).replace("$MAINPID", str(self.main_pid)))
        subprocess.run(argv, check=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, as systemctl stop; returns the exit status. Expects STOPPING=1."""
        timeout = float(self.svc.get("TimeoutStopSec", ["90"])[-1])
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.unit_path.name} did not stop within TimeoutStopSec={timeout}")
        self.notify.wait_for("STOPPING", "1", 1.0)
        self._after_stop()
        return rc

    def restart(self, timeout: float = 15.0) -> int:
        """What `systemctl restart` does: stop (returns its exit status), then start
        again in a fresh work directory; the runtime directories stay as the unit says."""
        rc = self.stop()
        old = self.work
        self.work = Path(tempfile.mkdtemp(prefix="nctest-", dir="/run"))
        os.chmod(self.work, 0o755)
        if self.log_path.parent == old:
            self.log_path = self.work / self.log_path.name
        self.start(timeout)
        return rc

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._after_stop()

    def _after_stop(self) -> None:
        self._final_log = self.log()  # the log may live in self.work, removed below
        if self.notify:
            self.notify.close()
            self.notify = None
        if not yes(self.svc.get("RuntimeDirectoryPreserve")):
            for d in self.runtime_dirs:
                shutil.rmtree(d, ignore_errors=True)
        if yes(self.svc.get("RemoveIPC")):
            self.removed_ipc = remove_ipc(self.uid, self.gid)
        shutil.rmtree(self.work, ignore_errors=True)

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return getattr(self, "_final_log", "")


def ipc_objects(uid: int, gid: int) -> list[str]:
    """POSIX shm (/dev/shm) and SysV objects owned by uid or gid: what RemoveIPC= removes."""
    found = []
    for e in os.scandir("/dev/shm"):
        st = e.stat(follow_symlinks=False)
        if st.st_uid == uid or st.st_gid == gid:
            found.append(e.path)
    for kind in ("m", "q", "s"):
        out = subprocess.run(["ipcs", "-" + kind, "-c"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            f = line.split()
            if f and f[0].isdigit():
                owner_uid = _id(f[4], pwd.getpwnam, "pw_uid")
                owner_gid = _id(f[5], grp.getgrnam, "gr_gid")
                if owner_uid == uid or owner_gid == gid:
                    found.append(f"sysv-{kind}:{f[0]}")
    return found


def _id(name: str, lookup, attr: str) -> int:
    try:
        return int(name)
    except ValueError:
        try:
            return getattr(lookup(name), attr)
        except KeyError:
            return -1


def remove_ipc(uid: int, gid: int) -> list[str]:
    found = ipc_objects(uid, gid)
    for obj in found:
        if obj.startswith("sysv-"):
            kind, ident = obj[5], obj.split(":")[1]
            subprocess.run(["ipcrm", "-" + kind, ident], check=False)
        else:
            os.unlink(obj)
    return found


def mode_of(path: str) -> tuple[int, str, str]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
