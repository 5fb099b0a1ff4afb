"""Execute the tutorials in place, saving their outputs, as they are committed.

Run from the repository root with the project's environment (it needs the `doc` extra)::

    python tutorials/run_notebooks.py                      # every notebook
    python tutorials/run_notebooks.py quickstart.ipynb     # some of them

Each notebook runs with tutorials/ as its working directory and the default budgets written in
it, unless DIFFST_TUTORIAL_MAX_STEPS / DIFFST_TUTORIAL_N_SAMPLES are set. Paths of this machine
in the outputs (warnings, reprs) are made portable. Check the figures before committing. The
test suite (tests/test_tutorials.py) runs them on small budgets without saving.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def strip_machine_paths(nb) -> None:
    """Replace this machine's paths in the outputs (warnings, reprs) with portable ones.

    Installed packages become ``.../site-packages/...``, the example data
    ``../../shared/data/...`` (as the notebooks reach it from tutorials/), files of the
    repository are given relative to its root, and the kernel's temporary file of a cell (where
    a warning points at the notebook's own code) ``<cell>``.
    """
    rules = [(re.compile(r"[^\s\"'`]*/site-packages/"), ".../site-packages/"),
             (re.compile(r"[^\s\"'`]*/ipykernel_\d+/\d+\.py"), "<cell>"),
             (re.compile(re.escape(str(ROOT.parent / "shared" / "data"))), "../../shared/data"),
             (re.compile(re.escape(str(ROOT)) + "/"), "")]

    def clean(text: str) -> str:
        for pattern, repl in rules:
            text = pattern.sub(repl, text)
        return text

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = clean(out["text"])
            for key, value in out.get("data", {}).items():
                if key.startswith("text/") and isinstance(value, str):
                    out["data"][key] = clean(value)
            if "traceback" in out:
                out["traceback"] = [clean(t) for t in out["traceback"]]


def execute(path: Path, timeout_s: int = 3600) -> float:
    """Run ``path`` top to bottom in a fresh kernel and write it back with its outputs."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name="python3", timeout=timeout_s,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    strip_machine_paths(nb)
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
