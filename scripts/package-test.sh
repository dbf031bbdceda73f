#!/usr/bin/env bash
# The install tests: builds dist/ (the .deb, the wheel, the sdist), then runs
# tests/packaging as root: dpkg install, the daemon started from its installed
# unit, a Django app as a user in group nearcache, a template instance, an
# upgrade from N to N+1, remove and purge. About 3 minutes on 2 cores.
# It installs and purges the package on this machine and creates (and deletes)
# the users nctest-app, nctest-out, nctest-inst and the group nearcache-nctest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "package-test: run as root (it installs the package)" >&2; exit 2; }
scripts/install-deps.sh build test package
scripts/build-package.sh
# The test driver needs pytest only; the client under test is the built wheel.
venv=build-pkg/testvenv
[ -x "$venv/bin/pytest" ] || { /usr/bin/python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q "pytest>=8"; }
NEARCACHE_PACKAGING_TEST=1 "$venv/bin/python" -m pytest -q tests/packaging "$@"
