"""A section's conditioning arrays on its grid, and the crop of them a patch of the map reads.

Numpy only: the histology model, the network's sampler and its training patches all read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SectionArrays:
    """Everything the model needs from one section, on its HR grid (no AnnData here).

    Attributes
    ----------
    lr, lr_mask
        ``(G, H, W)`` low-resolution expression spread onto the grid (model units) and
        ``(1, H, W)`` the LR footprints' coverage.
    he
        ``(3, k*H, k*W)`` tissue-scale H&E in [0, 1].
    cells_image
        ``(3, Hc, Wc)`` uint8 H&E at cell scale covering the same extent (``None`` where no
        network reads it).
    tissue
        ``(H, W)`` bool: where sub-patches may be centred.
    target, weight
        ``(G, H, W)`` HR target (model units) and ``(1, H, W)`` its confidence; ``None`` at
        inference.

    Examples
    --------
    >>> arrays = SectionArrays(lr, lr_mask, he, cells_image, tissue)  # doctest: +SKIP
    >>> arrays.shape, arrays.he_factor  # doctest: +SKIP
    """

    lr: np.ndarray
    lr_mask: np.ndarray
    he: np.ndarray
    cells_image: np.ndarray | None
    tissue: np.ndarray
    target: np.ndarray | None = None
    weight: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Grid size (H, W)."""
        return self.lr.shape[1:]

    @property
    def he_factor(self) -> int:
        """Tissue-scale H&E pixels per grid pixel."""
        return self.he.shape[1] // self.lr.shape[1]

    @property
    def cell_factor(self) -> float:
        """Cell-scale H&E pixels per grid pixel."""
        return self.cells_image.shape[1] / self.lr.shape[1]


def pad_to(a: np.ndarray, i: int, j: int, h: int, w: int, fill: float = 0.0) -> np.ndarray:
    """Crop ``a[..., i:i+h, j:j+w]``, padding with ``fill`` outside."""
    out = np.full(a.shape[:-2] + (h, w), fill, dtype=a.dtype)
    H, W = a.shape[-2:]
    i0, j0, i1, j1 = max(i, 0), max(j, 0), min(i + h, H), min(j + w, W)
    if i1 > i0 and j1 > j0:
        out[..., i0 - i:i1 - i, j0 - j:j1 - j] = a[..., i0:i1, j0:j1]
    return out


def patch_condition(sec: SectionArrays, i: int, j: int, size: int, n_cells: int, cell_size: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The conditioning arrays of the patch whose top-left grid pixel is ``(i, j)``."""
    k = sec.he_factor
    cond = {
        "lr": pad_to(sec.lr, i, j, size, size),
        "lr_mask": pad_to(sec.lr_mask, i, j, size, size),
        "he": pad_to(sec.he, i * k, j * k, size * k, size * k, fill=1.0),
    }
    cond.update(_cells(sec, i, j, size, n_cells, cell_size, rng))
    return cond


def _cells(sec, i, j, size, n_cells, cell_size, rng):
    """``n_cells`` full-resolution sub-patches centred on tissue inside the patch."""
    tissue = pad_to(sec.tissue, i, j, size, size, fill=False)
    ii, jj = np.nonzero(tissue)
    if len(ii) == 0:
        ii, jj = np.nonzero(np.ones_like(tissue))
    pick = rng.choice(len(ii), size=n_cells, replace=len(ii) < n_cells)
    yx = np.c_[ii[pick], jj[pick]] + rng.random((n_cells, 2))  # continuous grid coords
    f = sec.cell_factor
    half = cell_size // 2
    cells = np.empty((n_cells, 3, cell_size, cell_size), np.float32)
    for n, (y, x) in enumerate(yx):
        cy, cx = int((y + i) * f), int((x + j) * f)
        cells[n] = pad_to(sec.cells_image, cy - half, cx - half, cell_size, cell_size,
                           fill=255).astype(np.float32) / 255.0
    grey = cells.mean(1).reshape(n_cells, -1)
    return {"cells": cells, "cell_xy": (yx[:, ::-1] / size).astype(np.float32),
            "cell_entropy": _entropy(grey)}


def _entropy(grey: np.ndarray, bins: int = 16) -> np.ndarray:
    """Shannon entropy of each row's grey-level histogram (texture, for the cell curriculum)."""
    idx = np.clip((grey * bins).astype(int), 0, bins - 1)
    counts = np.stack([np.bincount(r, minlength=bins) for r in idx]).astype(np.float32)
    p = counts / counts.sum(1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1))).sum(1).astype(np.float32)
