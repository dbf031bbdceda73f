#!/usr/bin/env bash
# Runs every benchmark and writes its output to bench/results/<name>.txt.
# Benchmarks compare alternatives side by side within one run; run this on
# an otherwise idle machine. Usage: bench/run-all.sh [name ...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
venv=${VENV:-.venv}
mkdir -p bench/results

run() {  # run <name> <command...>
  local name=$1; shift
  if [ "${#selected[@]}" -gt 0 ] && [[ ! " ${selected[*]} " =~ " $name " ]]; then return; fi
  echo "== $name"
  { echo "# $(date -u +%Y-%m-%d) $(uname -m), $(nproc) cores; command: $*"; "$@"; } 2>&1 | tee "bench/results/$name.txt"
}
selected=("$@")

run shm_reader "$build/bench/bench_shm_reader" --rounds 5
# The same on a tmpfs with transparent huge pages, when this machine lets us mount one.
hp=$build/hugepages-tmpfs  # inside the build tree
mkdir -p "$hp"
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=1G,huge=always tmpfs "$hp" 2>/dev/null; then
  run shm_reader_hugepages "$build/bench/bench_shm_reader" --rounds 5 --dir "$hp"
  umount "$hp"
fi
rmdir "$hp"
run shm_hit_ratio "$build/bench/bench_shm_hit_ratio"

# Every benchmark script of the daemon and the Python client (servers.py is
# their shared harness; compare_builds.py needs two builds: see its usage).
for script in bench/*.py; do
  case $(basename "$script") in servers.py|compare_builds.py) continue ;; esac
  run "$(basename "$script" .py)" env NEARCACHE_BUILD="$build" "$venv/bin/python" "$script"
done
