"""The Python client's wheel and sdist, as a project installs them."""
from __future__ import annotations

import tarfile
import zipfile

from pkgtest import SYSTEM_PYTHON, run


def test_wheel_installs_into_a_fresh_venv_and_imports(dist, workdir):
    venv = workdir / "wheelvenv"
    run(SYSTEM_PYTHON, "-m", "venv", venv)
    run(venv / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check", dist["wheel"])
    out = run(venv / "bin/python", "-c",
              "import nearcache, nearcache._native as n; print(n.__file__, n.LAYOUT_VERSION)",
              cwd="/").stdout
    assert str(venv) in out, out  # the installed copy, not a source tree
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    assert any(n.startswith("nearcache/_native.") and n.endswith(".so") for n in names), names


def test_sdist_is_self_contained(dist):
    """It carries the shared-memory reader (client-py/native/shm links to ../../shm in the repository);
    build-package.sh builds the wheel from this sdist, so a missing file fails the build too."""
    names = tarfile.open(dist["sdist"]).getnames()
    root = names[0].split("/")[0]
    for f in ("native/module.cc", "native/shm/reader.cc", "native/shm/reader.h", "native/shm/layout.h",
              "native/shm/compressed_frame.h",
              "CMakeLists.txt", "pyproject.toml", "src/nearcache/django.py"):
        assert f"{root}/{f}" in names, f
    assert not any("/native/shm/writer" in n for n in names), "the writer is the daemon's"
