"""Tiles of a grid and how they are blended: overlapping tiles, their window, a band of rows.

A grid too large for one pass is cut into overlapping square tiles (:func:`tile_starts`), each
weighted by a window that falls to nearly 0 at its edges (:func:`tile_window`). Tiles of every
gene are blended (window-weighted mean and second moment) in a band of rows only one tile tall
(:class:`BandBlender`); as soon as no later tile can reach a row, the row is final and is handed
to the caller. Later passes work a few genes at a time (:func:`gene_chunk`), so that their
float64 copies stay within a budget on any slide.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def tile_starts(n: int, size: int, overlap: int) -> list[int]:
    """First rows (or columns) of tiles of ``size`` covering ``n``, neighbours sharing ``overlap``.

    The last tile ends at ``n``; a side no longer than ``size`` is one tile at 0.

    Examples
    --------
    >>> tile_starts(40, 16, 4)
    [0, 12, 24]
    >>> tile_starts(9, 16, 4)
    [0]
    """
    if n <= size:
        return [0]
    step = size - overlap
    starts = list(range(0, n - size, step)) + [n - size]
    return sorted(set(starts))


def tile_window(size: int) -> np.ndarray:
    """``(size, size)`` float32 blending weight of a tile: a squared sine, 1e-3 at the least.

    Highest in the middle and close to 0 at the edges, so that overlapping tiles fade into one
    another; never 0, so that a pixel reached by one tile only keeps its value.
    """
    w = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    return np.maximum(np.outer(w, w), 1e-3).astype(np.float32)


def gene_chunk(n_genes: int, n_pixels: int, budget_bytes: int = 256 * 2**20,
               copies: int = 8) -> int:
    """Genes handled at once so that ``copies`` float64 maps of them fit in ``budget_bytes``."""
    return int(np.clip(budget_bytes // max(1, copies * 8 * n_pixels), 1, max(1, n_genes)))


class BandBlender:
    """Blend overlapping ``(G, size, size)`` tiles, keeping only one band of rows in memory.

    Tiles must arrive with non-decreasing top rows. :meth:`flush` hands every row above a given
    one (rows that no later tile reaches) to ``sink(top, mean, std)`` as the weighted mean and
    standard deviation of what was added there, and forgets them.

    Parameters
    ----------
    n_genes, height, width
        Shape of the whole grid.
    size
        Tile side, in grid pixels.
    sink
        Called with the first row of a finished band and its ``(G, rows, width)`` mean and
        standard deviation (float64; ``None`` without ``spread``).
    spread
        Keep the mean square too, for the standard deviation over samples (set it off for
        one map, whose tiles' disagreement is no spread of the map).

    Examples
    --------
    >>> rows = []
    >>> b = BandBlender(1, 3, 2, 2, lambda top, m, s: rows.extend(m[0, :, 0]))
    >>> w = np.ones((2, 2))
    >>> b.add(0, 0, np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 1.0), w)
    >>> b.flush(1)  # the next tile starts at row 1: row 0 is final
    >>> b.add(1, 0, np.full((1, 2, 2), 3.0), np.full((1, 2, 2), 9.0), w)
    >>> b.flush(3)
    >>> [float(r) for r in rows]
    [1.0, 2.0, 3.0]
    """

    def __init__(self, n_genes: int, height: int, width: int, size: int,
                 sink: Callable[[int, np.ndarray, np.ndarray | None], None],
                 spread: bool = True):
        self.height, self.width, self.size, self.sink = height, width, size, sink
        self.top = 0
        self._acc = np.zeros((n_genes, size, width))
        self._acc2 = np.zeros((n_genes, size, width)) if spread else None
        self._wsum = np.zeros((size, width))

    def add(self, i: int, j: int, mean: np.ndarray, mean_sq: np.ndarray,
            weight: np.ndarray) -> None:
        """Add the tile whose corner is at row ``i``, column ``j``.

        ``mean`` and ``mean_sq`` are its mean and mean square over samples ``(G, size, size)``,
        ``weight`` its blending window ``(size, size)``; parts outside the grid are ignored.
        """
        if i < self.top or i + min(self.size, self.height - i) > self.top + self.size:
            raise ValueError(f"A tile at row {i} is outside the band held (rows {self.top} to "
                             f"{self.top + self.size}); add tiles in order of their top rows "
                             "and flush only rows above the next tile.")
        hi, wj = min(self.size, self.height - i), min(self.size, self.width - j)
        r = i - self.top
        w = weight[:hi, :wj]
        self._acc[:, r:r + hi, j:j + wj] += w * mean[:, :hi, :wj]
        if self._acc2 is not None:
            self._acc2[:, r:r + hi, j:j + wj] += w * mean_sq[:, :hi, :wj]
        self._wsum[r:r + hi, j:j + wj] += w

    def flush(self, below: int) -> None:
        """Finish rows ``top`` to ``below`` (exclusive): blend, hand to the sink, drop them."""
        below = min(below, self.height)
        while self.top < below:
            n = min(below - self.top, self.size)
            wsum = np.where(self._wsum[:n] > 0, self._wsum[:n], 1.0)
            mean = self._acc[:, :n] / wsum
            std = (None if self._acc2 is None
                   else np.sqrt(np.clip(self._acc2[:, :n] / wsum - mean**2, 0, None)))
            self.sink(self.top, mean, std)
            for a in (a for a in (self._acc, self._acc2, self._wsum) if a is not None):
                a[..., : self.size - n, :] = a[..., n:, :].copy()
                a[..., self.size - n:, :] = 0
            self.top += n
