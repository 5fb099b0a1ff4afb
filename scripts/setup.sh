#!/usr/bin/env bash
# Create .venv and install diffst_sc with the extras given as arguments (e.g. test,doc).
# PyTorch is installed first: the CPU build where there is no NVIDIA GPU, so that pip does not
# pull several GB of CUDA libraries; then the project, whose own requirement is a range.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install --quiet "torch>=2.3,<3"
  else
    # The CPU build; pip finds 2.13.0's CPU wheel locally where it is provided, otherwise use
    # PyTorch's CPU index.
    .venv/bin/pip install --quiet "torch==2.13.0" \
      || .venv/bin/pip install --quiet "torch>=2.3,<3" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
if [ -n "$extras" ]; then
  .venv/bin/pip install --quiet -e ".[$extras]"
else
  .venv/bin/pip install --quiet -e .
fi
