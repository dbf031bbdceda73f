"""Fetches Django's own cache tests for the installed Django version.

`pip download` brings the sdist of exactly the installed version (PyPI is
reachable in development and CI); `tests/cache/` is extracted into a cache
directory inside the virtualenv, so the download happens once per venv and
nothing of Django's is committed here. The extracted directory goes on
sys.path so that the suite imports as the package `cache`, as in Django's
own runner.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django


def suite_dir() -> Path:
    """A directory containing Django's `cache` test package (downloaded on first use)."""
    version = django.__version__
    root = Path(sys.prefix) / "nearcache-test-cache" / f"django-{version}"
    if (root / "cache" / "tests.py").is_file():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"django=={version}", "-d", tmp], check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise RuntimeError(f"pip download of django=={version} produced no sdist")
        staging = root.with_name(root.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if "/tests/cache/" in m.name and m.isfile()]
            if not members:
                raise RuntimeError(f"{sdists[0].name} has no tests/cache/")
            for m in members:
                rel = m.name.split("/tests/", 1)[1]  # cache/...
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
        if not root.exists():
            staging.replace(root)
    return root
