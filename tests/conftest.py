"""Shared fixtures: the real datasets in ../shared/data (see its README.md), skipped if absent.

Tests that her2st section C2 can serve take ``her2st_c2_or_demo``: the full section from
../shared/data when it is there, else the copy shipped inside the package
(``ds.datasets.her2st_demo()``: the same 187 spots, 500 genes, the H&E at half size), so that
they run in a clone that has no ../shared. Tests that need the full section's numbers, or the
other datasets, take the fixtures that skip.
"""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

#: ../shared/data relative to the repository root.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: The files of ``ds.datasets.her2st_demo()``, inside the installed package.
DEMO_C2 = Path(str(files("diffst_sc.datasets") / "data" / "her2st_c2"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the project's shared/data folder, next to "
                    "the repository); these tests need it")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real datasets, ``../shared/data`` from the repository root."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def her2st_dir(shared_data) -> Path:
    """Folder with the her2st sections B4, C2, C3 (legacy ST) and genes_bench.txt."""
    return _require(shared_data / "her2st")


@pytest.fixture(scope="session")
def bench_genes(her2st_dir) -> list[str]:
    """The benchmark's 100 genes (BENCHMARK.md, step 2)."""
    path = _require(her2st_dir / "genes_bench.txt")
    return [g.strip() for g in path.read_text().splitlines() if g.strip()]


@pytest.fixture(scope="session")
def her2st_c2(her2st_dir):
    """her2st section C2 read by ``ds.io.read_legacy_st`` (shared: copy before changing it)."""
    import diffst_sc as ds

    return ds.io.read_legacy_st(_require(her2st_dir / "C2"))


@pytest.fixture(scope="session")
def her2st_c2_or_demo_dir() -> Path:
    """Folder of her2st C2: ``../shared/data/her2st/C2`` if present, else the embedded demo's."""
    full = SHARED_DATA / "her2st" / "C2"
    return full if full.exists() else DEMO_C2


@pytest.fixture(scope="session")
def her2st_c2_or_demo(her2st_c2_or_demo_dir, request):
    """her2st C2: the ``her2st_c2`` fixture, or ``ds.datasets.her2st_demo()`` without ../shared.

    Shared by the tests: copy it before changing it. Its coordinate system is named after the
    section, ``"C2"`` or ``"her2st_c2"``, so tests take it from the data, not from a literal.
    """
    import diffst_sc as ds

    if her2st_c2_or_demo_dir == DEMO_C2:
        return ds.datasets.her2st_demo()
    return request.getfixturevalue("her2st_c2")


@pytest.fixture(scope="session")
def visium_tiny_dir(shared_data) -> Path:
    """A tiny Space Ranger output folder (100 spots x 100 genes, human heart)."""
    return _require(shared_data / "visium_tiny")


@pytest.fixture(scope="session")
def mouse_brain_dir(shared_data) -> Path:
    """Visium mouse brain crop in scanpy format (normalised values) and its H&E."""
    return _require(shared_data / "visium_mouse_brain_crop")


@pytest.fixture(scope="session")
def xenium_zarr(shared_data) -> Path:
    """The Xenium breast cancer crop, a SpatialData zarr store."""
    return _require(shared_data / "xenium_breast_crop" / "xenium_sp_subset.zarr")


@pytest.fixture(scope="session")
def xenium_sdata(xenium_zarr):
    """The Xenium crop read by ``spatialdata.read_zarr`` (shared: do not change it)."""
    import spatialdata as sd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the store is zarr v2: spatialdata says so, harmlessly
        return sd.read_zarr(xenium_zarr)


#: A tiny training and sampling budget: enough to exercise every code path on real data.
FIT_GENES = ["ERBB2", "IGKC", "COL1A1", "FASN", "KRT19", "MGP", "CD74", "SCGB2A2"]
FIT_BUDGET = {"deep": True, "max_steps": 12, "batch_size": 2, "progress": False,
              "held_out_samples": 1, "held_out_steps": 2}
SAMPLING = {"n_samples": 2, "steps": 3, "progress": False}


@pytest.fixture(scope="session")
def fitted_c2(her2st_c2_or_demo):
    """A copy of her2st C2 (or its demo) with a DiffST fitted on a tiny budget and ``"diffst"``."""
    import copy

    import diffst_sc as ds

    sdata = copy.deepcopy(her2st_c2_or_demo)
    model = ds.tl.fit(sdata, genes=FIT_GENES, **FIT_BUDGET)
    ds.tl.superresolve(sdata, model, **SAMPLING)
    return sdata, model


def unfitted_model(genes: list[str]):
    """A histology model over ``genes`` whose ridge predicts no departures (nothing fitted)."""
    from diffst_sc.model import HistologyModel, HistologyPath, Ridge

    g = len(genes)
    ridge = Ridge(np.zeros(3), np.ones(3), np.zeros((3, g)), np.zeros(g))
    return HistologyModel(genes, HistologyPath(ridge, 0.5, 0.9, [0.1] * g, 1.0))


def jittered_section(jitter: float = 0.15, seed: int = 0):
    """The embedded section as a table built from spot centres alone: no array positions, each
    centre moved by a normal offset of ``jitter`` spot spacings (off any regular lattice)."""
    import geopandas as gpd
    from scipy.spatial import cKDTree
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    import diffst_sc as ds

    sdata = ds.datasets.her2st_demo()
    table = sdata.tables["table"]
    table.obs = table.obs.drop(columns=["array_row", "array_col"])
    shapes = sdata.shapes["spots"]
    xy = np.c_[shapes.geometry.x, shapes.geometry.y]
    spacing = np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])
    xy = xy + np.random.default_rng(seed).normal(0, jitter * spacing, xy.shape)
    gdf = gpd.GeoDataFrame({"radius": shapes["radius"].to_numpy()},
                           geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), index=shapes.index)
    sdata.shapes["spots"] = ShapesModel.parse(
        gdf, transformations=get_transformation(shapes, get_all=True))
    return sdata
