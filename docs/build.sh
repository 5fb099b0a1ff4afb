#!/usr/bin/env bash
# Build the HTML documentation offline with warnings as errors. Run from anywhere:
#   bash docs/build.sh            (uses `python` on PATH; set PYTHON=... to choose another)
# Output: docs/_build/html/index.html
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
rm -rf docs/api/generated
"$PYTHON" -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
