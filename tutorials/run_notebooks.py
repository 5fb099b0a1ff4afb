"""Execute the tutorials in place, saving their outputs, as they are committed.

Run from the repository root with the project's environment (it needs the `doc` extra)::

    python tutorials/run_notebooks.py                      # every notebook
    python tutorials/run_notebooks.py quickstart.ipynb     # some of them

Each notebook runs with tutorials/ as its working directory and the default budgets written in
it, unless DIFFST_TUTORIAL_MAX_STEPS / DIFFST_TUTORIAL_N_SAMPLES are set. Check the figures
before committing. The test suite (tests/test_tutorials.py) runs them on small budgets without
saving.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, timeout_s: int = 3600) -> float:
    """Run ``path`` top to bottom in a fresh kernel and write it back with its outputs."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name="python3", timeout=timeout_s,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(names: list[str]) -> int:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"No such notebook: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
