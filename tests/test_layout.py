"""The rooms of the package import only the rooms below them (docs/layout.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "diffst_sc"
#: Each room and the rooms it may import.
ALLOWED = {
    "_core": set(),
    "metrics": set(),
    "io": {"_core"},
    "datasets": {"_core", "io"},
    "pp": {"_core", "metrics"},
    "module": set(),
    "schedulers": {"module"},
    "train": {"module", "schedulers"},
    "model": {"_core", "metrics", "pp", "module", "schedulers", "train"},
    "tl": {"_core", "metrics", "io", "pp", "module", "schedulers", "train", "model"},
    "pl": {"_core", "io", "metrics", "model"},
}
#: Rooms of tensors only; of ``_core`` they may use what is numpy or torch alike: the model's
#: units, the footprint correction and a section's conditioning arrays.
TORCH_ROOMS = ("module", "schedulers", "train")
TORCH_ROOMS_MAY_USE = {"diffst_sc._core._units", "diffst_sc._core._correction",
                       "diffst_sc._core._conditions", "diffst_sc._core._presets"}


def _imports(path: Path) -> set[str]:
    """Top-level packages and diffst_sc rooms imported by one file (``diffst_sc.<room>``)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG).parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.add(node.module or "")
                continue
            base = list(rel[:-1])[: len(rel) - node.level]
            mod = ".".join(["diffst_sc", *base, *(node.module.split(".") if node.module else [])])
            out.add(mod)
            if not node.module:  # from .. import pp
                out |= {f"diffst_sc.{a.name}" for a in node.names}
    return out


def _room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "diffst_sc" and len(parts) > 1 else None


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_the_rooms_below_it(room):
    wrong = {}
    for path in (PKG / room).rglob("*.py"):
        imported = _imports(path)
        if room in TORCH_ROOMS:
            imported -= TORCH_ROOMS_MAY_USE
        rooms = {_room_of(m) for m in imported} - {None, room}
        bad = rooms - ALLOWED[room]
        if bad:
            wrong[str(path.relative_to(PKG))] = sorted(bad)
    assert not wrong, f"imports that point up or sideways: {wrong} (see docs/layout.md)"


@pytest.mark.parametrize("room", TORCH_ROOMS)
def test_torch_rooms_know_nothing_of_anndata(room):
    for path in (PKG / room).rglob("*.py"):
        top = {m.split(".")[0] for m in _imports(path)}
        assert not top & {"anndata", "spatialdata", "scanpy"}, path


TESTS = Path(__file__).resolve().parent


def _is_module(dotted: str) -> bool:
    """Whether ``diffst_sc.a.b`` is a module or package of the source tree."""
    path = PKG.joinpath(*dotted.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private_module_imports(path: Path) -> set[str]:
    """``diffst_sc`` module paths with a private part, other than ``diffst_sc._core``, that a file
    imports (``import diffst_sc.pp._degrade``, ``from diffst_sc.pp import _degrade``, ...)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + [m for a in node.names
                                       if _is_module(m := f"{node.module}.{a.name}")]
        else:
            continue
        for m in modules:
            parts = m.split(".")
            if parts[0] != "diffst_sc" or parts[1:] == ["_core"]:
                continue
            if any(p.startswith("_") for p in parts[1:]):
                out.add(m)
    return out


def test_tests_import_public_names_or_core():
    """Tests use what a room exports (``ds.pp.degrade``) or ``diffst_sc._core``, never a
    room's private modules, so that moving code inside a room breaks no test (docs/layout.md)."""
    wrong = {str(p.relative_to(TESTS.parent)): sorted(bad) for p in sorted(TESTS.rglob("*.py"))
             if (bad := _private_module_imports(p))}
    assert not wrong, (f"tests import private modules: {wrong}; import the name from its room "
                       "(export it there) or from diffst_sc._core (see docs/layout.md)")


def test_no_room_imports_another_rooms_private_modules():
    """A room reaches another through what that room exports (``from ..pp import degrade``),
    never its private modules (``from ..pp._degrade import ...``); ``_core`` is everyone's."""
    wrong = []
    for path in PKG.rglob("*.py"):
        room = path.relative_to(PKG).parts[0]
        for m in _imports(path):
            parts = m.split(".")
            other = _room_of(m)
            if other in (None, room, "_core") or len(parts) < 3:
                continue
            if any(p.startswith("_") for p in parts[2:]) and _is_module(m):
                wrong.append(f"{path.relative_to(PKG)}: {m}")
    assert not wrong, f"imports of other rooms' private modules: {wrong}"


def test_no_source_file_is_over_500_lines():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these files by idea: {long}"


_TORCH_FREE = """
import sys
import diffst_sc as ds
assert "torch" not in sys.modules and "anndata" not in sys.modules, "import diffst_sc"
sdata = ds.datasets.her2st_demo()
ds.tl.fit(sdata, n_genes=10, progress=False)
ds.tl.superresolve(sdata, progress=False)
assert "diffst" in sdata.images
assert "torch" not in sys.modules, "the default fit and superresolve imported torch"
"""


def test_import_and_the_default_model_do_not_import_torch():
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", _TORCH_FREE], check=True, capture_output=True,
                   text=True)
