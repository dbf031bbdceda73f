"""The install tests of the Debian package and the wheel (scripts/package-test.sh).

They install the package system-wide, create users and groups, and start
nearcached from the installed unit, so they run only as root and only when
asked: NEARCACHE_PACKAGING_TEST=1 (scripts/package-test.sh sets it after
building dist/). Everything they create is removed at the end, on failure too.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pkgtest import (APP_USER, INSTANCE_USER, OUTSIDER, SYSTEM_PYTHON, group_exists, one, package_status, run,
                     user_exists)

ENABLED = os.environ.get("NEARCACHE_PACKAGING_TEST") == "1"


def pytest_collection_modifyitems(config, items):
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="install tests: run scripts/package-test.sh (root; installs the package)")
    for item in items:
        if Path(item.fspath).parent == Path(__file__).parent:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def dist() -> dict[str, Path]:
    assert os.geteuid() == 0, "the install tests run as root"
    return {"deb": one("nearcache_*.deb"), "wheel": one("nearcache-*.whl"), "sdist": one("nearcache-*.tar.gz")}


@pytest.fixture(scope="session")
def system_state():
    """Refuses to run over an installed nearcache; afterwards purges it and removes
    the users and groups that the package and the tests created."""
    assert package_status() == "not-installed", \
        f"nearcache is installed ({package_status()}); these tests install and purge it themselves"
    assert not os.path.exists("/run/nearcache"), "/run/nearcache exists: is a nearcached running?"
    had_user = user_exists("nearcache")
    yield
    if package_status() != "not-installed":
        run("dpkg", "--purge", "nearcache", check=False)
    for u in (APP_USER, OUTSIDER, INSTANCE_USER):
        if user_exists(u):
            run("userdel", u, check=False)
    for g in ("nearcache-nctest",):
        if group_exists(g):
            run("groupdel", g, check=False)
    if not had_user:
        if user_exists("nearcache"):
            run("userdel", "nearcache", check=False)
        if group_exists("nearcache"):
            run("groupdel", "nearcache", check=False)
    for d in glob.glob("/run/nearcache*"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="nctest-pkg-"))
    os.chmod(d, 0o755)  # the app users read the venv and the project from here
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def app_venv(dist, workdir) -> Path:
    """A project's virtualenv: the built wheel and Django 5.2, with Debian's Python."""
    venv = workdir / "appvenv"
    run(SYSTEM_PYTHON, "-m", "venv", venv)
    run(venv / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check", dist["wheel"],
        "Django>=5.2,<5.3")
    project = workdir / "djangoapp"
    shutil.copytree(Path(__file__).parent / "djangoapp", project)
    return venv


