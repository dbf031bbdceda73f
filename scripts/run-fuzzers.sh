#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD_DIR/tests/fuzz for SECONDS each,
# from the committed seeds in tests/fuzz/corpus/<target>/ plus a working
# corpus kept in BUILD_DIR. Fails on the first crash, leak or timeout.
# Usage: scripts/run-fuzzers.sh BUILD_DIR SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1 secs=$2
shopt -s nullglob
targets=("$build"/tests/fuzz/fuzz_*)
[ ${#targets[@]} -gt 0 ] || { echo "run-fuzzers: no fuzz targets in $build/tests/fuzz" >&2; exit 1; }
for bin in "${targets[@]}"; do
  name=$(basename "$bin")
  seeds=tests/fuzz/corpus/$name
  work=$build/fuzz-corpus/$name
  mkdir -p "$seeds" "$work"
  if [ "$name" = fuzz_segment ]; then
    "$build"/tests/fuzz/make_segment_seeds "$work"
  fi
  log=$build/$name.log
  echo "== $name: ${secs}s (log: $log)"
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=20000 \
      -print_final_stats=1 -artifact_prefix="$build/$name-" "$work" "$seeds" >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || tail -n 3 "$log"
  else
    tail -n 60 "$log"
    echo "run-fuzzers: $name failed; the crashing input is named in the log" >&2
    exit 1
  fi
done
