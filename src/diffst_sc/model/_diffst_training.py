"""Training a :class:`~diffst_sc.model.DiffST`: its pairs, its gene graph, its loop.

The network learns the residual its base map leaves on the training pairs (the pairs the base
was fitted on), through the diffusion loss, with the trainer of :mod:`diffst_sc.train`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._core._presets import check_preset
from ._data import GridSpec, training_arrays
from ._diffst import DiffST
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
    ``lr`` and ``patch_size`` of the budget, and the diffusion's ``deterministic``,
    ``schedule`` and ``num_train_steps``.
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
    net_cfg = net_preset(preset, len(genes), **config)
    budget["max_steps"] = int(max_steps or budget["max_steps"])
    budget["batch_size"] = int(batch_size or budget["batch_size"])
    spec = base.grid_spec if base is not None else GridSpec()
    path = base.path if base is not None else None
    sections = [p for lr_views, hr in pair_views
                for p in training_arrays(lr_views, hr, genes, spec, path)]
    record = {**(training or {}), "preset": preset, "seed": seed, **budget}
    # the weights are drawn from a generator of their own, not the global one
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffST(base, net_cfg, diff_cfg, genes=genes,
                       graph=gene_graph() if net_cfg.use_gene_graph else None,
                       training=record)
    sampler = _patch_sampler(sections, net_cfg, budget)
    tcfg = TrainerConfig(lr=budget["lr"], max_steps=budget["max_steps"],
                         batch_size=budget["batch_size"], seed=seed, progress=progress,
                         checkpoint_every=max(50, budget["max_steps"] // 5))
    result = fit_model(model.module, _loss_fn(model), sampler, tcfg, device=device,
                       checkpoint_dir=checkpoint_dir,
                       before_step=[_cell_curriculum(net_cfg.n_cells, budget["max_steps"])])
    result.ema.copy_to(model.module)
    model.module.to("cpu")
    model.history = list(result.history)
    model.residual_sd = _residual_sd(model, sections, seed)
    return model


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


def _patch_sampler(sections, net_cfg, budget):
    from ..train import PatchSampler

    return PatchSampler(sections, patch_size=budget["patch_size"], n_cells=net_cfg.n_cells,
                        cell_size=net_cfg.cell_size, batch_size=budget["batch_size"])


def _loss_fn(model: DiffST):
    diffusion = model.diffusion

    def loss(module, batch, generator):
        cond = {k: batch[k] for k in _COND_KEYS}
        return diffusion.loss(module, batch["x0"], cond, batch["weight"], generator)

    return loss


def _cell_curriculum(n_cells: int, max_steps: int):
    """Grow the number of attended sub-patches from a quarter to all over the first half."""

    def hook(step, module):
        frac = min(1.0, step / max(1, max_steps // 2))
        module.set_active_cells(max(1, round(n_cells * (0.25 + 0.75 * frac))))

    return hook
