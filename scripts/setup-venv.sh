#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv for the tests and installs the
# nearcache client into it. Quiet when nothing changed.
# Usage: scripts/setup-venv.sh [venv-dir] [python]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python=${2:-python3}

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    scripts/install-deps.sh build  # python3-dev pulls in what venv needs on Debian
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"
  fi
fi

stamp="$venv/.requirements.stamp"
if [ ! -f "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r requirements-dev.txt
  touch "$stamp"
fi

# Reinstall the client when its sources or the shared-memory reader changed.
cstamp="$venv/.client.stamp"
if [ -d client-py ] && [ -f client-py/pyproject.toml ]; then
  if [ ! -f "$cstamp" ] || [ -n "$(find client-py shm -newer "$cstamp" -type f -not -path '*/build/*' -not -name '*.pyc' | head -1)" ]; then
    "$venv/bin/python" -m pip install -q --no-build-isolation ./client-py
    touch "$cstamp"
  fi
fi
