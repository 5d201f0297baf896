#!/usr/bin/env bash
# Compile the scoring core's hot modules (scoring.compiled.COMPILED_MODULES) with mypyc, in place:
# scoring/<module>.<abi>.so next to each source, plus scoring/core__mypyc.<abi>.so, the shared
# library that holds their code. Idempotent: the digest of the sources built from is recorded in
# scoring/.compiled-sources, and nothing is rebuilt while it matches (--force rebuilds anyway).
#
#   bash deploy/compile-core.sh [--force]      # PYTHON=... picks the interpreter (default .venv/bin/python)
#   bash deploy/compile-core.sh --clean        # remove the build: the pure-Python sources run
#
# LEADSCORE_COMPILE_CORE=0 does what --clean does (to run and test the sources themselves).
# Needs a C compiler (gcc or cc) and mypy (the development extras) in the interpreter's environment;
# without a compiler it warns, removes any build, and the pure-Python sources run.
#
# The build happens in build/mypyc-core; the extensions replace those in scoring/ only once all built.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-.venv/bin/python}
case $python in
  /*) ;;
  */*) python=$root/$python ;;
  *) python=$(command -v "$python") ;;
esac
record=scoring/.compiled-sources
work=build/mypyc-core

remove_build() {
  find scoring -maxdepth 1 -name '*.so' -delete
  rm -f "$record"
}

if [ "${LEADSCORE_COMPILE_CORE:-1}" = 0 ]; then
  set -- --clean
fi
case "${1:-}" in
  --clean)
    remove_build
    echo "== scoring core: compiled build removed (the sources run)"
    exit 0
    ;;
  --force | "") ;;
  *)
    echo "usage: bash deploy/compile-core.sh [--force | --clean]" >&2
    exit 2
    ;;
esac

if [ "${1:-}" != "--force" ] && "$python" -m streams.core_build fresh; then
  echo "== scoring core: compiled build up to date"
  exit 0
fi

if ! command -v "${CC:-gcc}" >/dev/null && ! command -v cc >/dev/null; then
  remove_build # never a stale build: the sources run
  echo "warning: no C compiler (gcc): the scoring core runs from its Python sources (its scoring pass" \
    "about 1.6x slower); install gcc and run bash deploy/compile-core.sh to compile it" >&2
  exit 0
fi
echo "== scoring core: compiling with mypyc"
digest=$("$python" -m streams.core_build digest) # of the sources as they are when the build starts
mapfile -t sources < <("$python" -m streams.core_build sources)
rm -rf "$work"
mkdir -p "$work"
# Built from the build directory, where setuptools sees no pyproject.toml (the project's needs a
# newer setuptools than a venv ships); the extensions land in build/mypyc-core/lib/scoring/.
# The group name puts the shared library inside the package (scoring/core__mypyc), where the
# modules find it whatever the working directory; the mypyc command would put it at the top level.
start=$SECONDS
(
  cd "$work"
  "$python" - "${sources[@]}" >build.log 2>&1 <<'PY' || { cat build.log >&2; exit 1; }
import sys

from mypyc.build import mypycify
from setuptools import setup

setup(
    name="leadscore-scoring-core",
    ext_modules=mypycify(sys.argv[1:], opt_level="3", group_name="scoring.core", target_dir="c"),
    script_args=["build_ext", "--build-lib", "lib", "--build-temp", "temp"],
)
PY
)
remove_build
cp "$work"/lib/scoring/*.so scoring/
echo "$digest" >"$record"
echo "== scoring core: compiled $(ls scoring/*.so | wc -l) extension modules in $((SECONDS - start)) s"
