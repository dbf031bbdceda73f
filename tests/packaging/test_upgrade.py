"""Upgrade: install version N, write values from a running Django process, install
N+1 over it, restart the daemon, and check that the process goes on with the new
table (new generation, re-mapped) without crashing.

Where systemd runs, the postinst restarts nearcached.service (debhelper's
restart-after-upgrade) and `try-restart`s the nearcached@ instances. Without
systemd as PID 1 (CI) the maintainer scripts skip that, so the test checks that
the upgrade left the old daemon running, then does what `systemctl restart`
does: stop the old process (SIGTERM, STOPPING=1) and start the unit again
(READY=1), with the new binary.

The Django process runs as in a container that bind-mounts only the runtime
directory (a private /run holding just /run/nearcache), so this also checks
that such a mount survives the restart (RuntimeDirectoryPreserve=yes).
"""
from __future__ import annotations

import os
from pathlib import Path

from pkgtest import APP_USER, ROOT, app_env, ensure_user, package_status, run
from support.process import JsonLinesChild
from unitrun import Service

UNIT = "/lib/systemd/system/nearcached.service"
NEXT = "0.1.0+upgradetest1"


class ContainerClient(JsonLinesChild):
    """app.py serve, as APP_USER, in a mount namespace whose /run has only /run/nearcache."""

    def __init__(self, venv: Path, workdir: Path):
        mnt = workdir / "container-runtime-dir"
        mnt.mkdir(exist_ok=True)
        uid = APP_USER
        script = (
            f"mount --bind /run/nearcache {mnt} && mount -t tmpfs -o mode=0755 tmpfs /run && "
            f"mkdir /run/nearcache && mount --move {mnt} /run/nearcache && "
            f"exec setpriv --reuid={uid} --regid={uid} --init-groups -- "
            f"{venv}/bin/python {workdir}/djangoapp/app.py serve")
        super().__init__(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=app_env(workdir))

    __call__ = JsonLinesChild.ask


def test_upgrade_restarts_and_clients_remap(dist, system_state, app_venv, workdir):
    # N+1: the same sources, a newer changelog entry.
    next_dist = workdir / "dist-next"
    run(ROOT / "scripts/build-package.sh", "--deb-only", "--version", NEXT, "--out", next_dist,
        "--work", ROOT / "build-pkg/deb-next")
    (next_deb,) = next_dist.glob("nearcache_*.deb")

    run("dpkg", "-i", dist["deb"])
    ensure_user(APP_USER, "nearcache")
    old = Service(UNIT).start()
    client = ContainerClient(app_venv, workdir)
    try:
        first = client("set before-upgrade 1")
        assert first.get("segment_open"), first
        assert client("get before-upgrade")["value"] == "1"
        gen_n = first["generation"]

        run("dpkg", "-i", next_deb)
        assert run("dpkg-query", "-W", "-f=${Version}", "nearcache").stdout == NEXT
        assert package_status() == "installed"
        # No systemd: the postinst did not restart it; the old binary still runs, replaced on disk.
        assert old.running() and os.readlink(f"/proc/{old.main_pid}/exe").endswith("(deleted)")
        assert "uninitialized or deleted" not in client("get before-upgrade").get("error", "")

        # What `systemctl restart nearcached` does (preserving /run/nearcache).
        assert old.stop() == 0, old.log()
        new = Service(UNIT).start()
        try:
            assert os.readlink(f"/proc/{new.main_pid}/exe") == "/usr/sbin/nearcached"
            # The same segment layout: the new daemon adopted the table (warm_restart),
            # the value written before the upgrade is still served, from the same mapping.
            assert "warm start: adopted the table" in new.log(), new.log()
            after = client("get before-upgrade")
            assert "error" not in after and after["value"] == "1", after
            assert client("set after-upgrade 2")["ok"] is not False
            got = client("get after-upgrade")
            assert got["value"] == "2" and got["segment_open"], got
            assert got["generation"] == gen_n, "the adopted table keeps its generation"
            hits = got["shm_hits"]
            assert client("get after-upgrade")["shm_hits"] == hits + 1, "hits come from the segment"
            client.close()
            assert new.stop() == 0, new.log()
        finally:
            if new.running():
                new.kill()
    finally:
        if client.proc.poll() is None:
            client.proc.kill()
        if old.running():
            old.kill()
        run("dpkg", "--purge", "nearcache")
