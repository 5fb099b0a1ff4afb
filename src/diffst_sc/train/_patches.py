"""Training patches: random crops of a section's arrays with the 8 flips/rotations."""

from __future__ import annotations

import numpy as np
import torch

from .._core._conditions import SectionArrays, pad_to, patch_condition


def dihedral(a: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips and rotations of an image, on its last two axes (rows, columns).

    :class:`PatchSampler` applies a random one to every array of a patch, the same to each.

    Parameters
    ----------
    a
        ``(..., H, W)`` array; for ``code >= 4`` the patch is square, or the result is
        ``(..., W, H)``.
    code
        Which transform, 0 to 7: ``code & 4`` transposes rows and columns, then ``code & 1``
        flips the columns (left-right) and ``code & 2`` the rows (up-down); 0 is the identity.

    Returns
    -------
    numpy.ndarray
        A view of ``a``, transformed.

    Examples
    --------
    >>> a = np.arange(4).reshape(2, 2)
    >>> dihedral(a, 1).tolist(), dihedral(a, 4).tolist()
    ([[1, 0], [3, 2]], [[0, 2], [1, 3]])
    """
    if code & 4:
        a = a.swapaxes(-1, -2)
    if code & 1:
        a = a[..., ::-1]
    if code & 2:
        a = a[..., ::-1, :]
    return a


def dihedral_xy(xy: np.ndarray, code: int) -> np.ndarray:
    """The transform :func:`dihedral` applies to an image, applied to points on it.

    Parameters
    ----------
    xy
        ``(n, 2)`` points (x, y) in [0, 1]: x across the columns, y down the rows.
    code
        Which transform, 0 to 7, as for :func:`dihedral`.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` the points where they lie on the transformed image (a copy).

    Examples
    --------
    >>> dihedral_xy(np.array([[0.25, 0.5]]), 1).tolist()  # left-right: x -> 1 - x
    [[0.75, 0.5]]
    """
    xy = xy.copy()
    if code & 4:
        xy = xy[:, ::-1].copy()
    if code & 1:
        xy[:, 0] = 1 - xy[:, 0]
    if code & 2:
        xy[:, 1] = 1 - xy[:, 1]
    return xy


class PatchSampler:
    """Make training batches of random patches from one or several sections.

    Parameters
    ----------
    sections
        Training sections (with ``target`` and ``weight``).
    patch_size, n_cells, cell_size
        Patch side in grid pixels; sub-patches per patch and their side in cell-scale pixels.
    batch_size
        Patches per batch.
    augment
        Apply a random one of the 8 flips/rotations to each patch.
    exclude
        One ``(H, W)`` bool mask per section (or ``None``) of pixels whose targets are held out
        (e.g. for validation): no patch is centred on them, and in every patch they carry no
        target and no weight. Their conditioning arrays stay, as they would at inference.

    Examples
    --------
    >>> import torch
    >>> sampler = PatchSampler(sections, patch_size=32, n_cells=16, cell_size=24,
    ...                        batch_size=8)  # doctest: +SKIP
    >>> batch = sampler(0, torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, sections: list[SectionArrays], patch_size: int, n_cells: int,
                 cell_size: int, batch_size: int, augment: bool = True,
                 exclude: list[np.ndarray | None] | None = None):
        if not sections:
            raise ValueError("No training section given.")
        exclude = list(exclude) if exclude is not None else [None] * len(sections)
        if len(exclude) != len(sections):
            raise ValueError(f"exclude has {len(exclude)} masks for {len(sections)} sections.")
        for s, m in zip(sections, exclude, strict=True):
            if m is not None and np.shape(m) != tuple(s.shape):
                raise ValueError(f"An exclude mask of shape {np.shape(m)} does not match its "
                                 f"section's grid {tuple(s.shape)}.")
        self.sections = sections
        self.exclude = [None if m is None else np.asarray(m, bool) for m in exclude]
        self.size, self.n_cells, self.cell_size = patch_size, n_cells, cell_size
        self.batch_size, self.augment = batch_size, augment
        # Sample sections in proportion to their supervised area; patches centred on evidence.
        self._centres = [np.argwhere((s.weight[0] > 0.05) & (True if m is None else ~m))
                         for s, m in zip(sections, self.exclude, strict=True)]
        area = np.array([len(c) for c in self._centres], float)
        if area.sum() == 0:
            raise ValueError("The training sections have no supervised pixels.")
        self._p = area / area.sum()

    def __call__(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The batch for ``step``; deterministic given ``generator``'s state."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        rng = np.random.default_rng(seed)
        items = [self._one(rng) for _ in range(self.batch_size)]
        return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}

    def _one(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        s = rng.choice(len(self.sections), p=self._p)
        sec, centres = self.sections[s], self._centres[s]
        ci, cj = centres[rng.integers(len(centres))]
        i = int(ci) - int(rng.integers(self.size))
        j = int(cj) - int(rng.integers(self.size))
        item = patch_condition(sec, i, j, self.size, self.n_cells, self.cell_size, rng)
        item["x0"] = pad_to(sec.target, i, j, self.size, self.size)
        item["weight"] = pad_to(sec.weight, i, j, self.size, self.size)
        if self.exclude[s] is not None:  # held-out pixels: seen as inputs, never as targets
            out = pad_to(self.exclude[s][None], i, j, self.size, self.size, fill=False)
            item["x0"] = np.where(out, np.float32(0), item["x0"])
            item["weight"] = np.where(out, np.float32(0), item["weight"])
        if self.augment:
            code = int(rng.integers(8))
            for key in ("x0", "weight", "lr", "lr_mask", "he", "cells"):
                item[key] = dihedral(item[key], code)
            item["cell_xy"] = dihedral_xy(item["cell_xy"], code)
        return {k: np.ascontiguousarray(v) for k, v in item.items()}
