#!/usr/bin/env bash
# Create .venv (Python 3.11+), install leadscore with its development tools, and compile the scoring
# core with mypyc (deploy/compile-core.sh: skipped while the build matches the sources). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: leadscore needs Python 3.11 or newer ($python is $("$python" -V 2>&1))" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
echo "== installing leadscore and its development tools into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
bash deploy/compile-core.sh
