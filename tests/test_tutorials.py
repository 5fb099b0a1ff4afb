"""The tutorials in tutorials/: committed with their outputs, and still running with the package.

The slow test executes each notebook from tutorials/ (as a reader would) on a small training
budget, failing on any cell error. The fast tests check what was committed: outputs present,
figures included, no errors, cells run in order.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
SHARED_DATA = ROOT.parent / "shared" / "data"

#: Each tutorial and the datasets (under ../shared/data) it reads; the quick start reads the
#: section shipped with the package, so it runs in any clone.
NOTEBOOKS = {
    "quickstart.ipynb": [],
    "own_visium_data.ipynb": ["visium_tiny", "visium_mouse_brain_crop"],
    "xenium_benchmark.ipynb": ["xenium_breast_crop/xenium_sp_subset.zarr"],
    "visium_cytassist.ipynb": ["visium_cytassist_mouse_embryo/filtered_feature_bc_matrix.h5"],
}
#: Python packages a tutorial needs beyond the package's dependencies (the `doc` extra).
EXTRA_IMPORTS = {"quickstart.ipynb": ["igraph", "leidenalg"],
                 "visium_cytassist.ipynb": ["igraph", "leidenalg"]}
#: The small budget of the executed run; override with the same variables prefixed TEST_.
SMALL_BUDGET = {"DIFFST_TUTORIAL_MAX_STEPS": "30", "DIFFST_TUTORIAL_N_SAMPLES": "1"}
CELL_TIMEOUT_S = 1200


def _read(name: str):
    return nbformat.read(TUTORIALS / name, as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_every_tutorial_is_listed():
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_with_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    counts = [c.execution_count for c in cells]
    assert all(isinstance(n, int) for n in counts), f"{name}: some cells were not executed"
    assert counts == list(range(1, len(cells) + 1)), f"{name}: cells not run once, in order"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: committed with an error output: {errors[0].get('evalue')}"
    images = [o for c in cells for o in c.outputs
              if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    assert len(images) >= 3, f"{name}: only {len(images)} figures in the committed outputs"


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_budget_read_from_environment(name):
    source = "\n".join(c.source for c in _code_cells(_read(name)))
    for var in SMALL_BUDGET:
        assert f'os.environ.get("{var}"' in source, f"{name} does not read {var}"
    # data are reached relative to the notebook, never by an absolute path of some machine
    assert not re.search(r"[\"']/[A-Za-z_.-]+/", source), f"{name} has an absolute path"


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_outputs_hold_no_paths_of_this_machine(name):
    # tutorials/run_notebooks.py makes them portable; a notebook saved otherwise may leak them
    texts = []
    for cell in _code_cells(_read(name)):
        for out in cell.outputs:
            texts.append(out.get("text", ""))
            texts += [v for k, v in out.get("data", {}).items()
                      if k.startswith("text/") and isinstance(v, str)]
    output = "\n".join(texts)
    machine = {ROOT, ROOT.parent, Path(sys.prefix), Path.home()}
    for path in sorted(str(p) + "/" for p in machine if p.parent != p):  # not the root "/"
        assert path not in output, f"{name}: the outputs hold {path}"


def test_quickstart_needs_no_data_beside_the_package():
    # a fresh clone has no ../shared: the quick start reads the section shipped in the package
    source = "\n".join(c.source for c in _code_cells(_read("quickstart.ipynb")))
    assert "ds.datasets.her2st_demo()" in source
    assert "shared" not in source


@pytest.mark.parametrize("name", sorted(n for n, data in NOTEBOOKS.items() if data))
def test_missing_data_is_said_in_the_first_cell(name, tmp_path, monkeypatch):
    """Without its data, a tutorial stops in its first code cell and says where to get them."""
    setup = _code_cells(_read(name))[0].source
    for dataset in NOTEBOOKS[name]:
        assert dataset.split("/")[0] in setup, f"{name} does not say where to get {dataset}"
    tutorials = tmp_path / "clone" / "tutorials"  # with no shared/data two folders up
    tutorials.mkdir(parents=True)
    monkeypatch.chdir(tutorials)
    with pytest.raises(FileNotFoundError, match="see the comment above DATA"):
        exec(compile(setup, name, "exec"), {})


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_tutorial_executes(name, monkeypatch):
    from nbclient import NotebookClient

    for dataset in NOTEBOOKS[name]:
        if not (SHARED_DATA / dataset).exists():
            pytest.skip(f"{name} reads {SHARED_DATA / dataset}, which is absent (the project's "
                        "shared/data folder next to the repository)")
    for module in EXTRA_IMPORTS.get(name, []):
        pytest.importorskip(module, reason=f"{name} needs {module}: pip install -e '.[doc]'")
    for var, value in SMALL_BUDGET.items():
        monkeypatch.setenv(var, os.environ.get(f"TEST_{var}", value))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    nb = _read(name)
    # The kernel spec "python3" runs `python`, which jupyter_client replaces by sys.executable,
    # so the notebook runs in this environment; the cell added at the end checks it.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    outputs = [o for c in _code_cells(nb)[:-1] for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"
    kernel_prefix = nb.cells[-1].outputs[0].text.strip()
    assert Path(kernel_prefix).resolve() == Path(sys.prefix).resolve(), (
        f"the notebook ran in {kernel_prefix}, not in this environment ({sys.prefix})")
