"""Helpers of the install tests (tests/packaging); the fixtures are in conftest.py."""
from __future__ import annotations

import glob
import grp
import os
import pwd
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIST = Path(os.environ.get("NEARCACHE_DIST", ROOT / "dist"))
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian 12's Python 3.11, as on the hosts the wheel is for
APP_USER, OUTSIDER, INSTANCE_USER = "nctest-app", "nctest-out", "nctest-inst"


def run(*argv, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def as_user(user: str, argv: list, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Runs argv as `user` with the groups /etc/group gives it (as a login would)."""
    return run("setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--init-groups", "--",
               *argv, env=env, **kw)


def _known(lookup, name: str) -> bool:
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def user_exists(name: str) -> bool:
    return _known(pwd.getpwnam, name)


def ensure_user(name: str, group: str | None = None) -> None:
    """A test user without home or login shell, in `group` besides its own."""
    if not user_exists(name):
        run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *(["--groups", group] if group else []),
            name)
    if group:
        run("usermod", "--append", "--groups", group, name)


def group_exists(name: str) -> bool:
    return _known(grp.getgrnam, name)


def package_status(name: str = "nearcache") -> str:
    """installed, config-files (removed, not purged) or not-installed."""
    r = run("dpkg-query", "-W", "-f=${Status}", name, check=False)
    status = r.stdout.split()[-1] if r.returncode == 0 and r.stdout.strip() else "not-installed"
    return status if status in ("installed", "config-files") else "not-installed"


def one(pattern: str) -> Path:
    found = sorted(glob.glob(str(DIST / pattern)))
    assert len(found) == 1, f"expected one {pattern} in {DIST} (scripts/build-package.sh), found {found}"
    return Path(found[0])


def app_env(workdir: Path, socket: str | None = None) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": str(workdir / "djangoapp"),
           "DJANGO_SETTINGS_MODULE": "ncsite.settings", "PYTHONDONTWRITEBYTECODE": "1"}
    if socket:
        env["NEARCACHE_TEST_SOCKET"] = socket
    return env
