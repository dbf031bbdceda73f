"""Runs a service's ExecStart the way systemd would, as far as a machine without
systemd as PID 1 allows. Started by unitrun.Service as root, inside
`unshare --mount --propagation private` (so the mounts below are this process's
alone), with Debian's python3 (for python3-seccomp); it ends by exec'ing the
daemon, so its pid is the service's main pid.

    sandbox_exec.py SPEC.json      SPEC: see unitrun.Service._spec()

Order as in systemd's exec_child(): mounts, limits, umask, bounding set,
groups/gid/uid, no_new_privs, seccomp filters, execve.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import subprocess
import sys

import seccomp  # Debian's python3-seccomp

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
libc = ctypes.CDLL(None, use_errno=True)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def mount_points() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            out.append(mp.encode().decode("unicode_escape"))  # "\040" etc.
    return out


def sandbox_mounts(spec: dict) -> None:
    s = spec["sandbox"]
    if s.get("PrivateTmp"):
        for d in ("/tmp", "/var/tmp"):
            mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", d)
    if s.get("PrivateDevices"):
        # Only the part that matters to nearcache: a private, empty /dev/shm.
        mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev,noexec", "tmpfs", "/dev/shm")
    if s.get("ProtectHome"):
        for d in ("/home", "/root", "/run/user"):
            if os.path.isdir(d):
                mount("-t", "tmpfs", "-o", "ro,mode=000,nosuid,nodev,noexec", "tmpfs", d)
    proc_opts = []
    if s.get("ProtectProc"):
        proc_opts.append("hidepid=" + s["ProtectProc"])
    if s.get("ProcSubset"):
        proc_opts.append("subset=" + s["ProcSubset"])
    if proc_opts:
        mount("-t", "proc", "-o", ",".join(["nosuid", "nodev", "noexec"] + proc_opts), "proc", "/proc")
    if s.get("ProtectSystem") == "strict":
        writable = list(spec["writable"])
        for p in writable:
            mount("--bind", p, p)
        keep = writable + (["/tmp", "/var/tmp"] if s.get("PrivateTmp") else [])
        api = ("/proc", "/sys", "/dev")  # systemd's own rules (ProtectKernel*, PrivateDevices) apply there
        for mp in sorted(set(mount_points())):
            if mp in keep or any(mp == a or mp.startswith(a + "/") for a in api):
                continue
            mount("-o", "remount,bind,ro", mp)


def seccomp_filters(spec: dict) -> list[seccomp.SyscallFilter]:
    s = spec["seccomp"]
    filters = []
    if s.get("MemoryDenyWriteExecute"):
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        w, x = 0x2, 0x4  # PROT_WRITE, PROT_EXEC
        f.add_rule(seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, w | x, w | x))
        f.add_rule(seccomp.ERRNO(errno.EPERM), "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, x, x))
        f.add_rule(seccomp.ERRNO(errno.EPERM), "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, x, x))
        f.add_rule(seccomp.ERRNO(errno.EPERM), "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0o100000))
        filters.append(f)
    if s.get("address_families") is not None:
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        allowed = set(s["address_families"])
        for af in range(0, 46):  # AF_MAX on Linux 6.x is 46
            if af not in allowed:
                f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, af))
        f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GE, 46))
        filters.append(f)
    # Last: once loaded, it may deny seccomp() itself.
    if s.get("allow") is not None:
        # SystemCallFilter= allow list; everything else fails with SystemCallErrorNumber=.
        f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(s["errno"]))
        for name in s["allow"]:
            try:
                f.add_rule(seccomp.ALLOW, name)
            except (RuntimeError, ValueError):
                pass  # not a system call of this architecture (e.g. the *32 variants)
        filters.append(f)
    return filters


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())  # before ProcSubset hides /proc/sys
    sandbox_mounts(spec)
    if spec.get("nofile"):
        # Capped at the current hard limit where this machine denies raising it (no CAP_SYS_RESOURCE).
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        n = spec["nofile"] if hard == resource.RLIM_INFINITY else min(spec["nofile"], hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    os.umask(spec["umask"])
    if spec.get("drop_bounding_set"):
        for cap in range(last_cap + 1):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")
    # As systemd: initgroups(User, Group's gid), then the gid, then the uid.
    os.initgroups(spec["user"], spec["gid"])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    if spec.get("no_new_privs") and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    for f in seccomp_filters(spec):
        f.load()
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


if __name__ == "__main__":
    main()
