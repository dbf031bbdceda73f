#!/usr/bin/env bash
# Installs the Debian packages nearcache needs, only those that are missing.
# Idempotent and silent when everything is present. Usage:
#   scripts/install-deps.sh [build] [test] [sanitize] [bench] [package]
# With no argument: build and test.
set -euo pipefail

declare -A groups=(
  [build]="cmake make g++ pkg-config libboost-dev libboost-program-options-dev libmsgpack-cxx-dev libuv1-dev libspdlog-dev libhiredis-dev libssl-dev libsystemd-dev nlohmann-json3-dev catch2 python3-dev zlib1g-dev libzstd-dev liblz4-dev"
  [test]="redis-server redis-sentinel openssl"
  [sanitize]="clang-14 libclang-rt-14-dev"
  [bench]="redis-server memcached wrk"
  [package]="debhelper devscripts lintian fakeroot systemd help2man python3-venv python3-seccomp"
)

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(build test)

missing=()
for g in "${wanted[@]}"; do
  [ -n "${groups[$g]+x}" ] || { echo "install-deps: unknown group '$g' (have: ${!groups[*]})" >&2; exit 2; }
  for p in ${groups[$g]}; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
