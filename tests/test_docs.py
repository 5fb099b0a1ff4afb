"""The documentation in docs/: covers the whole public API, and builds offline without warnings."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Public namespaces and the API page documenting each.
API_PAGES = {
    "diffst_sc.io": "io.rst",
    "diffst_sc.pp": "pp.rst",
    "diffst_sc.tl": "tl.rst",
    "diffst_sc.pl": "pl.rst",
    "diffst_sc.datasets": "datasets.rst",
    "diffst_sc.model": "diffst.rst",
    "diffst_sc.module": "module.rst",
    "diffst_sc.schedulers": "schedulers.rst",
    "diffst_sc.train": "train.rst",
    "diffst_sc.metrics": "metrics.rst",
}


def _autosummary_entries(page: Path) -> set[str]:
    """Names listed under the ``autosummary`` directives of an API page."""
    names, inside = set(), False
    for line in page.read_text().splitlines():
        if line.startswith(".. autosummary::"):
            inside = True
        elif inside and line.strip() and not line.startswith(" "):
            inside = False
        elif inside and re.fullmatch(r"   [A-Za-z_][\w.]*", line):
            names.add(line.strip())
    return names


@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_api_reference_lists_every_public_name(module):
    mod = importlib.import_module(module)
    documented = _autosummary_entries(DOCS / "api" / API_PAGES[module])
    # DiffST is re-exported by ds.tl and documented once, as ds.DiffST (api/diffst.rst).
    public = set(mod.__all__) - {"DiffST"}
    missing = sorted(public - documented)
    assert not missing, f"{module}: {missing} are public but not in docs/api/{API_PAGES[module]}"
    unknown = sorted(documented - set(dir(mod)))
    assert not unknown, f"docs/api/{API_PAGES[module]} lists {unknown}, absent from {module}"


def test_model_class_documented():
    assert "DiffST" in _autosummary_entries(DOCS / "api" / "diffst.rst")


def _svg_text(path: Path) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())


def test_diagrams_are_committed_and_current(tmp_path):
    """docs/make_figures.py redraws the committed SVGs with the same text."""
    names = ["diffst_data_flow.svg", "diffst_network.svg"]
    code = (f"import sys; sys.path.insert(0, {str(DOCS)!r}); import make_figures as m; "
            f"m.STATIC = __import__('pathlib').Path({str(tmp_path)!r}); m.main()")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    for name in names:
        committed = _svg_text(DOCS / "_static" / name)
        assert len(committed) > 20, f"docs/_static/{name} has almost no text"
        assert _svg_text(tmp_path / name) == committed, (
            f"docs/_static/{name} is out of date: run `python docs/make_figures.py`")


def test_notebooks_are_not_executed_by_the_build():
    conf = (DOCS / "conf.py").read_text()
    assert re.search(r'^nb_execution_mode = "off"$', conf, re.M)
    assert "intersphinx" not in conf.split("extensions = [", 1)[1].split("]", 1)[0]


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the doc build needs the `doc` extra")
    pytest.importorskip("myst_nb", reason="the doc build needs the `doc` extra")
    if not (ROOT / "CHANGELOG.md").exists():
        pytest.fail("CHANGELOG.md is missing at the repository root; docs/changelog.md includes it")
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-5000:]
    html = tmp_path / "html"
    for page in ["index", "getting_started", "method", "benchmarks", "changelog",
                 "tutorials/quickstart", "api/generated/diffst_sc.tl.fit"]:
        assert (html / f"{page}.html").exists(), f"{page}.html was not built"
    quickstart = (html / "tutorials" / "quickstart.html").read_text()
    assert "<img" in quickstart, "the quick start page shows no figure"


# --- the code examples of the documentation ----------------------------------------------------

SHARED_DATA = ROOT.parent / "shared" / "data"
#: Every Markdown page whose ```python blocks the suite runs, and the files those blocks read from
#: their working folder, each a link to its dataset under ../shared/data (a page whose data are
#: absent is skipped). Blocks of one page run in order, in one namespace, like a reader's session.
EXAMPLE_DATA = {
    "README.md": {"her2st": "her2st"},
    "docs/index.md": {"her2st": "her2st"},
    "docs/getting_started.md": {
        "her2st": "her2st",
        "outs": "visium_cytassist_mouse_embryo",
        "adata.h5ad": "visium_mouse_brain_crop/test_data.h5ad",
        "he.jpg": "visium_mouse_brain_crop/test_img.jpg",
    },
    "docs/cells.md": {},
    "docs/api/index.md": {},
}
#: Pages the build makes (or includes) rather than a person writes.
GENERATED = ("docs/_build/", "docs/api/generated/", "docs/tutorials/", "docs/benchmark_tables.md",
             "docs/api/_cli_help.md")
#: Python packages a page's examples need beyond the package's dependencies (the `doc` extra).
EXAMPLE_IMPORTS = {"docs/cells.md": ["igraph"]}
EXAMPLE_TIMEOUT_S = 1800

#: Runs the blocks given as JSON ``[[line, code], ...]`` of the page ``argv[1]`` in one namespace;
#: each is compiled at its line of the page, so a traceback names the page and the line.
_RUN_BLOCKS = """
import json, sys
page, blocks = sys.argv[1], json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
for line, code in blocks:
    exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
"""


def _pages_with_python() -> list[str]:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    names = [str(p.relative_to(ROOT)) for p in pages]
    return [n for n in names if not n.startswith(GENERATED) and _python_blocks(ROOT / n)]


def _python_blocks(page: Path) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown page: ``(line of the first code line, code)``."""
    blocks, lines, start = [], page.read_text().splitlines(), None
    for i, line in enumerate(lines, start=1):
        if start is None and line.strip() == "```python":
            start, code = i + 1, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            start = None
        elif start is not None:
            code.append(line)
    assert start is None, f"{page}: a ```python block is not closed"
    return blocks


def test_every_page_with_python_is_run():
    # a new page with python examples must say which data its examples read
    assert sorted(_pages_with_python()) == sorted(EXAMPLE_DATA)


@pytest.mark.parametrize("page", sorted(EXAMPLE_DATA))
def test_python_blocks_compile(page):
    for line, code in _python_blocks(ROOT / page):
        compile("\n" * (line - 1) + code, page, "exec")  # raises SyntaxError with the line


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(EXAMPLE_DATA))
def test_python_blocks_run(page, tmp_path):
    """A page's examples run as written, in order, in a fresh Python started in an empty folder.

    The names the examples read from their working folder (``"her2st/C2"``, ``"outs"``) are
    links there to the real datasets of ../shared/data.
    """
    for name, dataset in EXAMPLE_DATA[page].items():
        source = SHARED_DATA / dataset
        if not source.exists():
            pytest.skip(f"{page} reads {name!r}, from {source}, which is absent (the project's "
                        "shared/data folder next to the repository)")
        (tmp_path / name).symlink_to(source, target_is_directory=source.is_dir())
    for module in EXAMPLE_IMPORTS.get(page, []):
        pytest.importorskip(module, reason=f"{page} needs {module}: pip install -e '.[doc]'")
    blocks = _python_blocks(ROOT / page)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, "-c", _RUN_BLOCKS, page], input=json.dumps(blocks),
                         capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=EXAMPLE_TIMEOUT_S)
    assert run.returncode == 0, f"an example of {page} fails:\n{run.stderr[-5000:]}"
