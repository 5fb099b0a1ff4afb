"""Training a :class:`~diffst_sc.model.DiffST`: its pairs, its gene graph, its loop.

The network learns the residual its base map leaves on the training pairs (the pairs the base
was fitted on), through the diffusion loss, with the trainer of :mod:`diffst_sc.train`. A fold
of the pairs' tiles is held out: it chooses the weights kept and how much of the network's
residual the maps take (``residual_scale``, see :mod:`._diffst_gate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._core._presets import check_preset
from ._conditions import GridSpec
from ._diffst import DiffST
from ._diffst_gate import (
    BEST_FILE,
    GATE_SAMPLES,
    GATE_STEPS,
    LOSS_BATCHES,
    HeldOut,
    HeldOutLoss,
    gate,
)
from ._histology import HistologyModel

#: Keys of ``fit``'s ``**config`` that set the diffusion rather than the network.
_DIFFUSION_KEYS = ("deterministic", "schedule", "num_train_steps")
_COND_KEYS = ("lr", "lr_mask", "he", "cells", "cell_xy", "cell_entropy")


def train_diffst(pair_views: list, genes: list[str], base: HistologyModel | None, gene_graph,
                 *, preset: str = "cpu-small", max_steps: int | None = None,
                 batch_size: int | None = None, prediction: str = "x0", seed: int = 0,
                 device="auto", checkpoint_dir: str | Path | None = None,
                 progress: bool = True, training: dict | None = None,
                 **config) -> DiffST:
    """Train a Diff-ST network on ``pair_views`` as a refinement of ``base``.

    ``gene_graph()`` returns the ``(G, G)`` co-expression graph; it is called only when the
    network uses one. ``config`` overrides fields of the network's configuration (``ds.module.NetConfig``),
    ``lr`` and ``patch_size`` of the budget, the diffusion's ``deterministic``, ``schedule``
    and ``num_train_steps``, and ``held_out_samples`` and ``held_out_steps``, the sampling of
    the held-out maps that set ``residual_scale`` (``superresolve``'s defaults, 8 and 20).

    The network learns on the base map as each section's map weighs it (the base's
    calibration), from all but a fold of held-out tiles (:class:`HeldOut`); the weight average
    with the lowest loss on them is kept, and with a base, ``residual_scale`` is set from the
    held-out spots (``model.held_out`` records what they said).
    """
    import torch

    from ..module import preset as net_preset
    from ..schedulers import DiffusionConfig
    from ..train import TrainerConfig, fit_model

    budget = dict(check_preset(preset)["training"])
    diff_cfg = DiffusionConfig(prediction=prediction,
                               **{k: config.pop(k) for k in list(config) if k in _DIFFUSION_KEYS})
    for k in [k for k in config if k in ("lr", "patch_size")]:
        budget[k] = config.pop(k)
    sampling = {"n_samples": int(config.pop("held_out_samples", GATE_SAMPLES)),
                "steps": int(config.pop("held_out_steps", GATE_STEPS))}
    net_cfg = net_preset(preset, len(genes), **config)
    budget["max_steps"] = int(max_steps or budget["max_steps"])
    budget["batch_size"] = int(batch_size or budget["batch_size"])
    spec = base.grid_spec if base is not None else GridSpec()
    path = base.path if base is not None else None
    parts, sections, exclude, validation = [], [], [], []
    for lr_views, hr in pair_views:
        part = HeldOut.of(lr_views, hr, spec, base.calibrate(hr) if base is not None else None)
        pairs, held = part.arrays(genes, path)
        parts.append(part)
        sections += pairs
        exclude += [part.tiles] * len(pairs)
        validation += held
    record = {**(training or {}), "preset": preset, "seed": seed, **budget}
    # the weights are drawn from a generator of their own, not the global one
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffST(base, net_cfg, diff_cfg, genes=genes,
                       graph=gene_graph() if net_cfg.use_gene_graph else None,
                       training=record)
    sampler = _patch_sampler(sections, net_cfg, budget, exclude)
    watch = _held_out_loss(model, validation, net_cfg, budget, seed, checkpoint_dir)
    tcfg = TrainerConfig(lr=budget["lr"], max_steps=budget["max_steps"],
                         batch_size=budget["batch_size"], seed=seed, progress=progress,
                         checkpoint_every=max(50, budget["max_steps"] // 5))
    result = fit_model(model.module, _loss_fn(model), sampler, tcfg, device=device,
                       checkpoint_dir=checkpoint_dir, callbacks=() if watch is None else [watch],
                       before_step=[_cell_curriculum(net_cfg.n_cells, budget["max_steps"])])
    if watch is not None and not watch.called and result.resumed_from is not None:
        watch.recall()  # a run that had ended: nothing was trained, the best is on disk
    if watch is not None and watch.best_state is not None:
        model.module.load_state_dict(watch.best_state)
    else:
        result.ema.copy_to(model.module)
    model.module.to("cpu")
    model.history = list(result.history)
    model.residual_sd = _residual_sd(model, sections, seed)
    kept = {} if watch is None else {"best_step": watch.best_step, "best_loss": watch.best_loss,
                                     "losses": watch.losses}
    if base is None:  # the network is the whole map: there is no base to fall back on
        model.held_out = kept or None
    elif watch is None:  # no held-out spot to judge it on: it has not earned its place
        model.residual_scale = 0.0
        model.held_out = {"n_spots": 0, "scale": 0.0}
    else:
        model.held_out = {**gate(model, parts, seed=seed, device=device, **sampling), **kept}
    return model


def _held_out_loss(model: DiffST, validation, net_cfg, budget, seed: int,
                   checkpoint_dir) -> HeldOutLoss | None:
    """The callback watching the held-out loss; ``None`` when no pixel is held out."""
    import torch

    if not any(float(v.weight.max(initial=0)) > 0.05 for v in validation):
        return None
    val = _patch_sampler(validation, net_cfg, budget, augment=False)
    batches = [val(k, torch.Generator().manual_seed(seed + k)) for k in range(LOSS_BATCHES)]
    steps = budget["max_steps"]
    every = max(5, steps // 16)
    return HeldOutLoss(_loss_fn(model), batches, every=every,
                       patience=max(4 * every, steps // 4), max_steps=steps,
                       n_cells=net_cfg.n_cells, seed=seed,
                       path=None if checkpoint_dir is None else Path(checkpoint_dir) / BEST_FILE)


def _residual_sd(model: DiffST, sections, seed: int, max_sections: int = 8) -> list[float]:
    """Per-gene RMS error (model units) of the fitted model's mean prediction on its pairs.

    The maps add it to the spread of the samples, so that the uncertainty also covers what the
    model gets wrong on average, not only how much its samples differ.
    """
    import torch

    from .._core._conditions import patch_condition

    net, cfg = model.module.eval(), model.net_config
    net.set_active_cells(cfg.n_cells)
    rng = np.random.default_rng(seed)
    t_last = model.diffusion.num_train_steps - 1
    num = np.zeros(cfg.n_genes)
    den = 0.0
    size = 32
    for sec in sections[:max_sections]:
        h, w = sec.shape
        for i in range(0, h, size):
            for j in range(0, w, size):
                cond = patch_condition(sec, i, j, size, cfg.n_cells, cfg.cell_size, rng)
                cond = {k: torch.from_numpy(np.ascontiguousarray(v))[None]
                        for k, v in cond.items()}
                x_t = torch.from_numpy(rng.standard_normal((1, cfg.n_genes, size, size))
                                       .astype(np.float32))
                tt = torch.full((1,), t_last)
                with torch.no_grad():
                    out, _ = net(x_t, tt.float() / model.diffusion.num_train_steps, cond)
                    x0 = model.diffusion.split(x_t, tt, out)[0][0].numpy()
                hi, wj = min(size, h - i), min(size, w - j)
                wt = sec.weight[0, i:i + hi, j:j + wj]
                err = (x0[:, :hi, :wj] - sec.target[:, i:i + hi, j:j + wj]) ** 2
                num += (err * wt).sum((1, 2))
                den += float(wt.sum())
    return np.sqrt(num / max(den, 1e-6)).astype(float).tolist()


def _patch_sampler(sections, net_cfg, budget, exclude=None, augment: bool = True):
    from ..train import PatchSampler

    return PatchSampler(sections, patch_size=budget["patch_size"], n_cells=net_cfg.n_cells,
                        cell_size=net_cfg.cell_size, batch_size=budget["batch_size"],
                        augment=augment, exclude=exclude)


def _loss_fn(model: DiffST):
    from ..train import denoising_loss

    diffusion = model.diffusion

    def loss(module, batch, generator):
        cond = {k: batch[k] for k in _COND_KEYS}
        return denoising_loss(diffusion, module, batch["x0"], cond, batch["weight"], generator)

    return loss


def _cell_curriculum(n_cells: int, max_steps: int):
    """Grow the number of attended sub-patches from a quarter to all over the first half."""

    def hook(step, module):
        frac = min(1.0, step / max(1, max_steps // 2))
        module.set_active_cells(max(1, round(n_cells * (0.25 + 0.75 * frac))))

    return hook
