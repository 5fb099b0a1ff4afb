"""Tiles of a grid (`_core._tiles`): the band-by-band blending that lets superresolve write tiles
to disk as they are sampled, and the memory bound of its passes over genes."""

import numpy as np
import pytest

from diffst_sc._core import (
    BandBlender,
    gene_chunk,
    tile_starts,
    tile_window,
)


def _blend_in_memory(tiles, g, h, w, size, win):
    acc, acc2, wsum = np.zeros((g, h, w)), np.zeros((g, h, w)), np.zeros((h, w))
    for i, j, m, m2 in tiles:
        hi, wj = min(size, h - i), min(size, w - j)
        acc[:, i:i + hi, j:j + wj] += win[:hi, :wj] * m[:, :hi, :wj]
        acc2[:, i:i + hi, j:j + wj] += win[:hi, :wj] * m2[:, :hi, :wj]
        wsum[i:i + hi, j:j + wj] += win[:hi, :wj]
    mean = acc / wsum
    return mean, np.sqrt(np.clip(acc2 / wsum - mean**2, 0, None))


@pytest.mark.parametrize(("h", "w", "size"), [(70, 53, 16), (16, 40, 16), (9, 9, 16)])
def test_band_blending_equals_blending_the_whole_grid(h, w, size):
    rng = np.random.default_rng(0)
    g, overlap = 3, size // 4
    win = tile_window(size)
    tiles = []
    for i in tile_starts(h, size, overlap):
        for j in tile_starts(w, size, overlap):
            samples = rng.gamma(2.0, size=(4, g, size, size))
            tiles.append((i, j, samples.mean(0), (samples**2).mean(0)))
    mean = np.zeros((g, h, w), np.float32)
    std = np.zeros((g, h, w), np.float32)
    held = []

    def sink(top, m, s):
        mean[:, top:top + m.shape[1]] = m
        std[:, top:top + m.shape[1]] = s
        held.append(m.shape[1])

    b = BandBlender(g, h, w, size, sink)
    for i, j, m, m2 in tiles:
        b.flush(i)
        b.add(i, j, m, m2, win)
    b.flush(h)
    want_mean, want_std = _blend_in_memory(tiles, g, h, w, size, win)
    np.testing.assert_allclose(mean[:], want_mean, rtol=1e-5)
    np.testing.assert_allclose(std[:], want_std, rtol=1e-4, atol=1e-4)
    assert sum(held) == h and max(held) <= size  # never more than a band of rows at once


def test_tiles_out_of_order_are_refused():
    b = BandBlender(1, 40, 10, 8, lambda *a: None)
    b.add(0, 0, np.ones((1, 8, 8)), np.ones((1, 8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="order of their top rows"):
        b.add(6, 0, np.ones((1, 8, 8)), np.ones((1, 8, 8)), np.ones((8, 8)))
    b.flush(6)
    with pytest.raises(ValueError, match="outside the band"):
        b.add(0, 0, np.ones((1, 8, 8)), np.ones((1, 8, 8)), np.ones((8, 8)))


def test_gene_chunk_bounds_memory():
    # A Visium-sized grid at a quarter of the spacing and 2,000 genes: a few genes at a time.
    n = gene_chunk(2000, 300 * 300)
    assert 1 <= n < 2000 and n * 300 * 300 * 8 * 8 <= 256 * 2**20
    assert gene_chunk(5, 10) == 5
    assert gene_chunk(5, 10**9) == 1
