#!/usr/bin/env bash
# Builds what nearcache ships into dist/:
#   nearcache_<version>_<arch>.deb   daemon, CLI, units, default configuration (debhelper)
#   nearcache-<version>.tar.gz       the Python client's sdist
#   nearcache-<version>-*.whl        its wheel, built from that sdist (so the sdist is
#                                    proven self-contained)
# and runs lintian on the .deb (errors fail the build).
#
# Usage: scripts/build-package.sh [--version V] [--out DIR] [--work DIR] [--deb-only] [--worktree]
#   --version V  build the .deb as version V (a changelog entry on top, in the copy;
#                the upgrade test builds N+1 this way)
#   --out DIR    where the results go (default dist/)
#   --work DIR   scratch space, emptied first (default build-pkg/deb)
#   --deb-only   skip the wheel and the sdist
#   --worktree   build the working tree's files (tracked, and untracked but not
#                ignored) instead of the commit HEAD
# The sources are copied into the scratch space, so no build output lands in the
# repository; by default they are HEAD's (git archive), as in a fresh clone.
# Environment: JOBS (default 2), PYTHON (default /usr/bin/python3: Debian's, whose
# ABI the wheel targets).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version="" out=dist work=build-pkg/deb deb_only=0 worktree=0
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --deb-only) deb_only=1; shift ;;
    --worktree) worktree=1; shift ;;
    *) echo "build-package: unknown argument $1" >&2; exit 2 ;;
  esac
done
jobs=${JOBS:-2}
python=${PYTHON:-/usr/bin/python3}
mkdir -p "$out" && out=$(cd "$out" && pwd)
rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)
src=$work/nearcache

mkdir -p "$src"
if [ "$worktree" = 1 ]; then
  echo "== sources: the working tree -> $src"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
    tar -cf - --null --no-recursion -T - | tar -xf - -C "$src"
else
  echo "== sources: HEAD $(git rev-parse --short HEAD) -> $src (uncommitted changes are not included; see --worktree)"
  git archive --format=tar HEAD | tar -xf - -C "$src"
fi
cp -r "$src/packaging/debian" "$src/debian"

# One version everywhere: the changelog's, CMake's project() and the Python package's.
cl_version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
cmake_version=$(sed -n 's/^project(nearcache VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
py_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/client-py/pyproject.toml")
if [ "${cl_version%%[-+~]*}" != "$cmake_version" ] || [ "$py_version" != "$cmake_version" ]; then
  echo "build-package: versions disagree: changelog $cl_version, CMakeLists.txt $cmake_version," \
       "client-py/pyproject.toml $py_version" >&2
  exit 1
fi
if [ -n "$version" ]; then
  { printf 'nearcache (%s) unstable; urgency=medium\n\n  * Rebuild as %s.\n\n -- %s  %s\n\n' \
      "$version" "$version" "$(dpkg-parsechangelog -l "$src/debian/changelog" -S Maintainer)" \
      "$(date -R)"
    cat "$src/packaging/debian/changelog"; } > "$src/debian/changelog"
fi

echo "== .deb (dpkg-buildpackage, -j$jobs)"
(cd "$src" && dpkg-checkbuilddeps && dpkg-buildpackage -b -us -uc -j"$jobs") > "$work/dpkg-buildpackage.log" 2>&1 || {
  tail -50 "$work/dpkg-buildpackage.log" >&2
  echo "build-package: dpkg-buildpackage failed; log: $work/dpkg-buildpackage.log" >&2
  exit 1
}
changes=$(ls "$work"/nearcache_*.changes)

echo "== lintian"
# Errors fail the build; warnings and info are printed for review.
lintian --fail-on error --display-info "$changes" ||
  { echo "build-package: lintian reported errors" >&2; exit 1; }

rm -f "$out"/nearcache_*.deb
cp "$work"/nearcache_*.deb "$out"/
ls -l "$out"/nearcache_*.deb

[ "$deb_only" = 1 ] && exit 0

echo "== wheel and sdist (python -m build: the sdist, then the wheel from it)"
venv=$root/build-pkg/pyvenv
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip build
fi
rm -f "$out"/nearcache-*.whl "$out"/nearcache-*.tar.gz
CMAKE_BUILD_PARALLEL_LEVEL=$jobs "$venv/bin/python" -m build --outdir "$out" "$src/client-py" \
  > "$work/python-build.log" 2>&1 || {
  tail -50 "$work/python-build.log" >&2
  echo "build-package: python -m build failed; log: $work/python-build.log" >&2
  exit 1
}
ls -l "$out"/nearcache-*.whl "$out"/nearcache-*.tar.gz
