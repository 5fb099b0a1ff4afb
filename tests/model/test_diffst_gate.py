"""A Diff-ST network earns its place on held-out tiles of its training pairs, or steps aside.

Tiles of the pairs' grid are held out of training; on them the network's residual is scaled
(``residual_scale``, in [0, 1]) by what it gains over its histology model.
"""

import copy
from dataclasses import replace

import numpy as np
import pytest

import diffst_sc as ds
from conftest import FIT_BUDGET, SAMPLING
from diffst_sc._core import section_view

GENES = ["ERBB2", "IGKC", "COL1A1", "FASN"]


@pytest.fixture(scope="module")
def pairs():
    view = section_view(ds.datasets.her2st_demo())
    return ds.pp.self_supervised_pairs(view, genes=GENES)


def test_held_out_tiles_are_a_fold_of_whole_square_tiles(pairs):
    inputs, target = pairs
    held = ds.model.HeldOut.of(inputs, target, ds.model.GridSpec())
    assert held.tiles.shape == (held.grid.height, held.grid.width)
    assert 0.15 < held.tiles.mean() < 0.25 and 0.1 < held.spots.mean() < 0.3
    h, w = (n // 16 * 16 for n in held.tiles.shape)
    blocks = held.tiles[:h, :w].reshape(h // 16, 16, w // 16, 16)
    assert (blocks.all((1, 3)) | ~blocks.any((1, 3))).all()  # each tile is in or out whole


def test_held_out_spots_never_reach_the_training_targets(pairs):
    """The training pairs' targets do not change when the held-out spots' counts do; the
    held-out pairs' targets do, and they weigh only the held-out tiles."""
    inputs, target = pairs
    held = ds.model.HeldOut.of(inputs, target, ds.model.GridSpec())
    train, val = held.arrays(GENES)
    adata = target.adata.copy()
    adata.X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X,
                         np.float32)
    adata.X[held.spots] *= 10
    changed = ds.model.HeldOut.of(inputs, replace(target, adata=adata), ds.model.GridSpec())
    train_2, val_2 = changed.arrays(GENES)
    assert len(train) == len(val) == len(inputs)
    for a, b in zip(train, train_2, strict=True):
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.weight, b.weight)
    w = val[0].weight[0]
    assert w.max() > 0.5 and (w[~held.tiles] == 0).all()
    assert not np.allclose(val[0].target[:, w > 0.5], val_2[0].target[:, w > 0.5])


def test_a_fitted_network_records_its_gate_and_keeps_it_through_save_and_load(fitted_c2,
                                                                               tmp_path):
    sdata, model = fitted_c2
    held = model.held_out
    assert 0.0 <= model.residual_scale <= 1.0 and held["scale"] == model.residual_scale
    assert held["n_spots"] > 0 and held["mse_gated"] <= held["mse_base"] + 1e-12
    assert held["best_step"] in [step for step, _ in held["losses"]]
    assert sdata.tables["table"].uns["diffst"]["residual_scale"] == model.residual_scale
    back = ds.model.load(model.save(tmp_path / "deep"))
    assert back.residual_scale == model.residual_scale and back.held_out == held
    assert back.config()["held_out"] == held


def test_a_useless_network_steps_aside(her2st_c2_or_demo):
    """A network trained for a step explains nothing on the held-out tiles: fit says so, its
    scale is 0, and its map is the histology model's."""
    sdata = copy.deepcopy(her2st_c2_or_demo)
    budget = {**FIT_BUDGET, "max_steps": 1}
    with pytest.warns(ds.io.NetworkUninformativeWarning, match="residual_scale is 0"):
        model = ds.tl.fit(sdata, genes=GENES[:2], **budget)
    assert model.residual_scale == 0.0 and model.held_out["gain"] == 0.0
    ds.tl.superresolve(sdata, model, key_added="deep", **SAMPLING)
    ds.tl.superresolve(sdata, model.base, key_added="base", progress=False)
    deep, base = (np.asarray(sdata.images[k]) for k in ("deep", "base"))
    np.testing.assert_allclose(deep, base, rtol=1e-5, atol=1e-5 * base.max())
    assert sdata.tables["table"].uns["deep"]["residual_scale"] == 0.0
