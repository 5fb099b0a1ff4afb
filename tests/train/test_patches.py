"""Training patches: crops, the 8 flips/rotations applied consistently, determinism."""

import numpy as np
import pytest
import torch

from diffst_sc.train import PatchSampler, SectionArrays, dihedral, dihedral_xy


def _section(h=20, w=24, g=3, k=2):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(g, h, w)).astype(np.float32)
    return SectionArrays(
        lr=target.copy(), lr_mask=np.ones((1, h, w), np.float32),
        he=rng.random((3, h * k, w * k)).astype(np.float32),
        cells_image=rng.integers(0, 255, (3, h * 4, w * 4), dtype=np.uint8),
        tissue=np.ones((h, w), bool), target=target,
        weight=np.ones((1, h, w), np.float32))


def test_dihedral_group_has_eight_distinct_elements_and_points_follow():
    img = np.arange(16.0).reshape(4, 4)
    outs = {dihedral(img, c).tobytes() for c in range(8)}
    assert len(outs) == 8
    # a marked pixel moves where its (x, y) point moves
    for code in range(8):
        m = np.zeros((4, 4))
        m[0, 3] = 1  # row 0, column 3: centre (x, y) = (3.5, 0.5) / 4
        xy = dihedral_xy(np.array([[3.5 / 4, 0.5 / 4]]), code)[0] * 4
        i, j = np.argwhere(dihedral(m, code))[0]
        assert (int(xy[1]), int(xy[0])) == (i, j)


def test_batches_are_deterministic_and_aligned():
    sec = _section()
    ps = PatchSampler([sec], patch_size=8, n_cells=4, cell_size=6, batch_size=5)
    a = ps(0, torch.Generator().manual_seed(3))
    b = ps(0, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["x0"].shape == (5, 3, 8, 8) and a["he"].shape == (5, 3, 16, 16)
    assert a["cells"].shape == (5, 4, 3, 6, 6) and a["cell_xy"].shape == (5, 4, 2)
    # lr was made equal to the target, so any misaligned flip or crop would show
    inside = a["weight"] > 0
    assert torch.equal(a["lr"][inside.expand_as(a["lr"])], a["x0"][inside.expand_as(a["x0"])])
    assert ((a["cell_xy"] >= 0) & (a["cell_xy"] <= 1)).all()


def test_excluded_pixels_are_inputs_but_never_targets():
    """Held-out pixels (``exclude``): no patch is centred on them and no patch takes them as
    targets (each pixel's target is its own id, so any that leaked would show), while the
    patches' inputs still show them, as they would at inference."""
    sec = _section(h=40, w=48, g=1)
    ids = np.arange(1, 40 * 48 + 1, dtype=np.float32).reshape(1, 40, 48)
    sec.target, sec.lr = ids, ids.copy()
    held = np.zeros((40, 48), bool)
    held[8:24, 16:32] = True
    ps = PatchSampler([sec], patch_size=16, n_cells=2, cell_size=6, batch_size=32,
                      exclude=[held])
    out = ids[0][held]
    seen_as_input = 0
    for step in range(8):
        b = ps(step, torch.Generator().manual_seed(step))
        x0, weight, lr = b["x0"].numpy(), b["weight"].numpy(), b["lr"].numpy()
        assert not np.isin(x0, out).any()
        assert (weight[np.isin(lr, out)] == 0).all()
        seen_as_input += int(np.isin(lr, out).any())
    assert seen_as_input > 0
    with pytest.raises(ValueError, match="does not match"):
        PatchSampler([sec], patch_size=16, n_cells=2, cell_size=6, batch_size=2,
                     exclude=[held[:10]])
