"""Sphinx configuration of the diffst_sc documentation.

Build (offline, warnings are errors): ``bash docs/build.sh`` from the repository root.
The tutorials are rendered from ``../tutorials/*.ipynb`` with their committed outputs; they are
never executed here (the test suite executes them).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))

import diffst_sc  # noqa: E402

project = "diffst_sc"
author = "diffst_sc developers"
copyright = "the diffst_sc developers"
release = diffst_sc.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# --- sources -------------------------------------------------------------------------------------
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
# Files made by this conf.py and pulled into pages with {include}; not pages themselves.
exclude_patterns = ["_build", "jupyter_execute", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "benchmark_tables.md", "api/_cli_help.md"]
templates_path = ["_templates"]

# --- notebooks: rendered with their saved outputs, never executed during the build ---------------
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3

# --- API reference -------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_mock_imports: list[str] = []
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_custom_sections = [("Attributes", "params_style")]

# No intersphinx: the build must work without network access.
nitpicky = False

# --- HTML ----------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "diffst_sc"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": "https://github.com/diffst-sc/diffst_sc",
    "use_repository_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}

# Tutorials with outputs can carry large figures; their text must not trip the build.
suppress_warnings = ["mystnb.unknown_mime_type"]


def _copy_tutorials() -> None:
    """Mirror ``../tutorials/*.ipynb`` into ``docs/tutorials/`` (Sphinx reads only its source dir)."""
    src, dst = ROOT / "tutorials", DOCS / "tutorials"
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise RuntimeError(f"No notebook in {src}: the tutorials page lists tutorials/*.ipynb.")
    dst.mkdir(exist_ok=True)
    for old in dst.glob("*.ipynb"):
        if not (src / old.name).exists():
            old.unlink()
    for nb in notebooks:
        target = dst / nb.name
        if not target.exists() or target.read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, target)


def _benchmark_tables() -> None:
    """Write ``benchmark_tables.md``: every committed table of ``benchmarks/results/`` included."""
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    lines = []
    for table in results:
        lines += [f"```{{include}} ../benchmarks/results/{table.name}",
                  ":heading-offset: 2", "```", ""]
    text = "\n".join(lines)
    out = DOCS / "benchmark_tables.md"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def _check_changelog() -> None:
    if not (ROOT / "CHANGELOG.md").exists():
        raise RuntimeError(f"{ROOT / 'CHANGELOG.md'} is missing: docs/changelog.md includes it. "
                           "Write the changelog at the repository root.")


_copy_tutorials()
_benchmark_tables()
_check_changelog()


def _cli_help() -> None:
    """Write ``api/_cli_help.md``: the ``--help`` of the ``diffst`` command and its subcommands."""
    import subprocess

    def help_of(*args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "diffst_sc.cli", *args, "--help"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        return run.stdout.rstrip()

    parts = ["## `diffst --help`", "", "```text", help_of(), "```", ""]
    for command in ("demo", "fit", "superresolve"):
        parts += [f"## `diffst {command} --help`", "", "```text", help_of(command), "```", ""]
    text = "\n".join(parts)
    out = DOCS / "api" / "_cli_help.md"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


_cli_help()


def _constant_docstring(app, what, name, obj, options, lines) -> None:
    """Document a constant a room re-exports (``ds.pp.DEFAULT_EXCLUDE``) by its ``#:`` comment.

    The comment is where the constant is defined; autodoc, which looks in the room's
    ``__init__``, would fall back to the docstring of its type (``tuple``).
    """
    if what != "data" or type(obj).__module__ != "builtins":
        return
    from sphinx.pycode import ModuleAnalyzer

    room, attr = name.rsplit(".", 1)
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith(room + ".") or getattr(module, attr, None) is not obj:
            continue
        comment = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", attr))
        if comment:
            lines[:] = list(comment)
            return


def setup(app) -> None:
    """Connect the hooks above."""
    app.connect("autodoc-process-docstring", _constant_docstring)
