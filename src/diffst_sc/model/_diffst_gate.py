"""Held-out tiles of a Diff-ST network's training pairs: what they keep out, what they decide.

A network that learns from one section's few hundred spots may learn nothing that holds beyond
them (on her2st it made the maps worse). So one fold of square tiles of each training pair's
grid (the histology path's cross-validation folds, ``FOLD_TILE`` pixels a side) is kept out of
training: its spots make no target, and no patch takes its pixels as targets. On those tiles

- during training, the weight average's denoising loss is measured every few steps; the
  average with the lowest loss is kept, and training stops when it has not improved for a
  quarter of the budget (:class:`HeldOutLoss`);
- after training, the network's map and its base's are made on the pair's input as
  ``superresolve`` makes them (samples, projected onto the spots) and read over the held-out
  spots; the residual the network adds is scaled by how much of the held-out spots' departure
  from the base it explains (:func:`gate`): the least-squares slope, shrunk by its sampling
  error and kept in ``[0, 1]``. At 0 the network's maps are its base's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .._core._grid import Grid, coverage_matrix, normalised_rows
from .._core._view import SectionView
from ._conditions import GridSpec
from ._histology_path import _spatial_folds
from ._pairs import pair_grid, target_arrays, training_arrays
from ._scaler import disc_area_um2, scaler_for

#: The fold of the path's tiles held out of the network's training.
HELD_OUT_FOLD = 0
#: Samples and denoising steps of the held-out maps: ``superresolve``'s defaults, so that the
#: gate judges the maps a user gets.
GATE_SAMPLES, GATE_STEPS = 8, 20
#: Batches of held-out patches the loss is measured on, each of the training batch's size.
LOSS_BATCHES = 4
#: File in ``checkpoint_dir`` keeping the best weight average, so that a resumed fit keeps it.
BEST_FILE = "held_out_best.pt"


def held_out_tiles(shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: the pixels of a grid of ``shape`` in the held-out fold of tiles."""
    h, w = shape
    rc = np.indices((h, w)).reshape(2, -1).T
    return (_spatial_folds(rc) == HELD_OUT_FOLD).reshape(h, w)


@dataclass
class HeldOut:
    """The held-out part of one training section's pairs.

    Made by :meth:`of`; :meth:`arrays` gives the pairs' training and held-out arrays.

    Attributes
    ----------
    lr_views, hr_view
        The pairs' inputs and their target spots.
    grid
        The pairs' grid (as ``training_arrays`` lays it).
    tiles
        ``(H, W)`` bool, the held-out tiles on the grid: the fold ``HELD_OUT_FOLD`` of the
        histology path's cross-validation tiles.
    spots
        ``(n_hr,)`` bool, the target spots whose centres lie in them.
    spec
        How the section is rasterised (the base's ``GridSpec``).
    calibration
        The base's calibration on the section (``None`` without a base).

    Examples
    --------
    >>> import diffst_sc as ds
    >>> from diffst_sc._core import section_view
    >>> view = section_view(ds.datasets.her2st_demo())
    >>> inputs, target = ds.pp.self_supervised_pairs(view, genes=["ERBB2", "IGKC"])
    >>> held = ds.model.HeldOut.of(inputs, target, ds.model.GridSpec())
    >>> bool(0.1 < held.spots.mean() < 0.3)
    True
    """

    lr_views: list[SectionView]
    hr_view: SectionView
    grid: Grid
    tiles: np.ndarray
    spots: np.ndarray
    spec: GridSpec
    calibration: object = None

    @classmethod
    def of(cls, lr_views: list[SectionView], hr_view: SectionView, spec: GridSpec,
           calibration=None) -> HeldOut:
        """The held-out tiles of the pairs ``(lr_views, hr_view)`` and their spots."""
        grid = pair_grid(lr_views[0], hr_view, spec)
        tiles = held_out_tiles((grid.height, grid.width))
        xy = np.floor((np.asarray(hr_view.centres_px) - [grid.x0, grid.y0]) / grid.pixel)
        rows = np.clip(xy[:, 1].astype(int), 0, grid.height - 1)
        cols = np.clip(xy[:, 0].astype(int), 0, grid.width - 1)
        return cls(list(lr_views), hr_view, grid, tiles, tiles[rows, cols], spec, calibration)

    def arrays(self, genes: list[str], path=None) -> tuple[list, list]:
        """The pairs' arrays for training and for the held-out loss, one of each per input.

        The training pairs' target is made of the other spots alone; train them with
        ``PatchSampler(..., exclude=[tiles] * n)``, so that no held-out pixel is a target
        either. The held-out pairs share their inputs, with the held-out spots' target and a
        weight that is 0 off the held-out tiles. With a histology ``path``, the inputs are its
        base map (weighed by :attr:`calibration`) and the targets the residual left to learn.
        """
        train = training_arrays(self.lr_views, self.hr_view, genes, self.spec, path,
                                calibration=self.calibration, spots=~self.spots)
        if tuple(train[0].shape) != (self.grid.height, self.grid.width):
            raise RuntimeError("The held-out tiles lie on another grid than the pairs'.")
        scaler = scaler_for(self.lr_views[0], genes)
        target, weight = target_arrays(self.hr_view, genes, scaler, self.grid, self.spots)
        weight = weight * self.tiles[None]
        held = [replace(p, target=target - p.lr if path is not None else target, weight=weight)
                for p in train]
        return train, held


@dataclass
class HeldOutLoss:
    """A callback of ``fit_model``: the weight average's loss on held-out patches.

    Every ``every`` steps (and at the last) the denoising loss of the weight average is
    measured on fixed held-out batches (the same patches, noise levels and noise each time).
    The average with the lowest loss is kept (:attr:`best_state`); training stops when it has
    not improved for ``patience`` steps. With ``path``, the best is also written there, and a
    resumed fit takes it back (:meth:`recall`).
    """

    loss_fn: object
    batches: list
    every: int
    patience: int
    max_steps: int
    n_cells: int
    seed: int = 0
    path: Path | None = None
    best_loss: float = float("inf")
    best_step: int = -1
    best_state: dict | None = None
    losses: list = field(default_factory=list)
    called: bool = False

    def recall(self) -> None:
        """Take back the best weight average a run stopped before resuming had written."""
        if self.path is not None and Path(self.path).is_file():
            from ..train import load_state

            saved = load_state(self.path)
            self.best_loss, self.best_step = float(saved["loss"]), int(saved["step"])
            self.best_state, self.losses = saved["state"], list(saved["losses"])

    def __call__(self, info) -> None:
        from ..train import StopTraining, save_state

        step = info.step
        if not self.called:  # after step 1, a fresh run; later, one resumed from a checkpoint
            self.called = True
            if step > 1:
                self.recall()
        if step % self.every and step != self.max_steps:
            return
        loss = self.measure(info.ema.module)
        # a resumed run measures again the steps after its checkpoint
        self.losses = [x for x in self.losses if x[0] < step] + [[step, loss]]
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in info.ema.module.state_dict().items()}
            if self.path is not None:
                save_state(self.path, {"loss": loss, "step": step, "state": self.best_state,
                                       "losses": self.losses})
        elif step - self.best_step >= self.patience:
            raise StopTraining

    def measure(self, net) -> float:
        """The mean held-out denoising loss (``mse``) of ``net`` over the fixed batches."""
        import torch

        dev = next(net.parameters()).device
        was = net.training
        net.eval()
        net.set_active_cells(self.n_cells)
        total = 0.0
        try:
            with torch.no_grad():
                for k, batch in enumerate(self.batches):
                    batch = {key: v.to(dev) for key, v in batch.items()}
                    gen = torch.Generator(device=dev).manual_seed(self.seed * 1000 + k)
                    total += float(self.loss_fn(net, batch, gen)[1]["mse"])
        finally:
            net.train(was)
        return total / max(len(self.batches), 1)


def gate(model, parts: list[HeldOut], *, seed: int = 0, device="auto",
         n_samples: int = GATE_SAMPLES, steps: int = GATE_STEPS) -> dict:
    """Set ``model.residual_scale`` from the held-out spots; returns what they said.

    On each section's first pair input, the base map and the map with the network's whole
    residual are made as ``predict`` makes them, and read over the held-out target spots (in
    standardised log units: ``e`` their departure from the base, ``d`` the network's change).
    The slope of ``e`` on ``d`` over all spots and genes, ``b = <e, d> / <d, d>``, is shrunk by
    its sampling variance ``v`` (spots as units) to ``b * max(0, 1 - v / b**2)`` (about the
    multiple of ``b`` with the least expected error on new spots: a slope within its noise of
    0 gives 0), and kept in ``[0, 1]``.
    The maps draw ``n_samples`` samples of ``steps`` denoising steps.
    """
    sums = np.zeros(4)  # <e, d>, <d, d>, <e, e>, number of values
    per_spot = []  # (<e_i, d_i>, <d_i, d_i>) of each held-out spot
    n_spots = 0
    for part in parts:
        if not part.spots.any():
            continue
        e, d = _departures(model, part, seed, device, n_samples, steps)
        sums += [(e * d).sum(), (d * d).sum(), (e * e).sum(), e.size]
        per_spot.append(np.c_[(e * d).sum(1), (d * d).sum(1)])
        n_spots += len(e)
    ed, dd, ee, n = sums
    slope = float(ed / dd) if dd > 0 else 0.0
    if per_spot:
        a, b = np.concatenate(per_spot).T
        var = float(((a - slope * b) ** 2).sum() / dd**2) if dd > 0 else 0.0
    else:
        var = 0.0
    shrunk = slope * max(0.0, 1.0 - var / slope**2) if slope > 0 else 0.0
    scale = float(np.clip(shrunk, 0.0, 1.0))
    model.residual_scale = scale
    mse = (lambda s: float((ee - 2 * s * ed + s * s * dd) / n)) if n else (lambda s: float("nan"))
    return {"n_spots": int(n_spots), "slope": slope, "slope_se": float(np.sqrt(var)),
            "scale": scale, "mse_base": mse(0.0), "mse_network": mse(1.0),
            "mse_gated": mse(scale), "gain": mse(0.0) - mse(scale)}


def _departures(model, part: HeldOut, seed: int, device, n_samples: int,
                steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, G)`` the held-out spots' departure from the base map, and the network's change."""
    view, hr, genes = part.lr_views[0], part.hr_view, model.genes
    deterministic = model.diffusion.config.deterministic
    kw = {"calibration": part.calibration, "seed": seed, "device": device, "progress": False,
          "n_samples": 1 if deterministic else n_samples, "steps": steps}
    keep = model.residual_scale
    try:
        model.residual_scale = 0.0
        base = model.predict(view, **kw)
        model.residual_scale = 1.0
        net = model.predict(view, **kw)
    finally:
        model.residual_scale = keep
    cov = coverage_matrix(hr.centres_px[part.spots], hr.diameter_px, base.grid).tocsr()
    seen = np.asarray(cov.sum(1)).ravel() > 0
    fp = normalised_rows(cov[seen])
    scaler = scaler_for(view, genes)
    area = disc_area_um2(view)

    def read(maps):
        flat = maps.mean.reshape(len(genes), -1).astype(np.float64)
        return scaler.to_model(np.asarray(fp @ flat.T), area)

    z_hr = scaler.to_model(hr.footprint_expression(genes)[part.spots][seen], disc_area_um2(hr))
    z_base = read(base)
    return (z_hr - z_base).astype(np.float64), (read(net) - z_base).astype(np.float64)
