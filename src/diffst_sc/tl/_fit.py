"""``ds.tl.fit``: train the cross-modal diffusion model on one or several sections."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._core._checks import MAKE_GENES_UNIQUE, check_unique_genes, warn_if_not_counts
from .._core._docs import shared_parameters
from .._core._view import section_view
from ..model._data import GridSpec, pairs_fingerprint, path_rows, training_arrays
from ..pp import self_supervised_pairs
from ..pp._low_counts import LOW_COUNTS_KEY
from ._inputs import as_sdata_list, check_fit_options, remember_model

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..model import DiffST

#: Training budgets per preset (the network's sizes come from ``module.preset``).
TRAINING_PRESETS = {
    "cpu-small": {"max_steps": 800, "batch_size": 8, "patch_size": 32, "lr": 1e-3},
    "gpu-large": {"max_steps": 30000, "batch_size": 32, "patch_size": 64, "lr": 2e-4},
}


@shared_parameters
def fit(
    data: SpatialData | AnnData | list[SpatialData],
    image: np.ndarray | None = None,
    *,
    genes: list[str] | None = None,
    n_genes: int = 100,
    table_key: str | None = None,
    image_key: str | None = None,
    img_key: str | None = None,
    coordinate_system: str | None = None,
    layer: str | None = None,
    microns_per_pixel: float | list[float] | None = None,
    missing_key: str | None = LOW_COUNTS_KEY,
    preset: str = "cpu-small",
    max_steps: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    graph_key: str = "diffst_coexpr",
    prediction: str = "x0",
    pairs: str = "self",
    histology_path: bool = True,
    deep: bool = False,
    progress: bool = True,
    **config,
) -> DiffST:
    """Train a Diff-ST model: spot expression + H&E -> fine gene maps.

    Each section's measured spots are summed into coarser pseudo-spots (``ds.pp.degrade``); the
    model learns, guided by the H&E, to recover the measured spots from them, and is then applied
    one scale finer by :func:`superresolve`. Sections given together are learned jointly.

    Parameters
    ----------
    data
        A SpatialData (spots, a table annotating them, an H&E), a list of them, or an AnnData in
        scanpy's layout (with ``image`` or ``img_key``).
    image
        The H&E as an array, with AnnData input.
    genes
        Genes to model; by default the ``n_genes`` most expressed (``ds.pp.select_genes``).
    n_genes
        How many genes to pick when ``genes`` is not given.
    {table_key}
    {image_key}
    {img_key}
    {coordinate_system}
    {layer}
    {microns_per_pixel}
        One number for every section, or a list with one per section; pass the same to
        :func:`superresolve`.
    missing_key
        Boolean ``obs`` column of the spots to leave out of the training pairs (they are not
        summed into pseudo-spots and are no targets); computed with
        :func:`diffst_sc.pp.flag_low_count_spots` and written to the table when absent. ``None``
        uses every spot. Self-supervised pairs only: with ``pairs="supervised"`` every spot is
        used.
    preset
        ``"cpu-small"`` (minutes on a laptop) or ``"gpu-large"``.
    max_steps, batch_size
        Override the preset's training budget.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ...
    seed
        Seed of the weights, the patches and the noise: the same seed gives the same model.
    checkpoint_dir
        Save checkpoints there; an interrupted fit called again with the same folder resumes.
    graph_key
        ``table.varp`` key of the gene co-expression graph (built if absent).
    prediction
        What the network predicts: ``"x0"``, ``"eps"`` or ``"v"``.
    pairs
        ``"self"``: learn from the measured spots degraded to coarser pseudo-spots (works on any
        section). ``"supervised"``: learn from a section holding high-resolution truth as
        ``ds.pp.degrade`` lays it out (``tables["table"]`` the low-resolution spots,
        ``tables["hr_table"]`` the truth: finer spots, Visium HD bins or binned Xenium
        transcripts).
    histology_path
        Learn the low-capacity path first: a ridge regression from histology descriptors of
        each footprint (stain statistics and nuclear density from the H&E at 1 um per pixel)
        and the interpolated expression to how the fine map departs from the interpolated
        spots. The network then refines that base map. ``False`` for the ablation without it.
    deep
        Also train the deep network (the cross-modal diffusion model) on what the histology
        path leaves, as its refinement. Off by default: on the her2st benchmark the network,
        trained from scratch on a section's few dozen pairs, makes the path's maps worse, not
        better (``benchmarks/results``). With ``False`` the model is the histology path alone:
        fitted in under a minute, and :func:`superresolve` writes its map (one deterministic
        sample; the uncertainty is the path's error on its training pairs).
    {progress}
    **config
        Overrides of the network configuration (``ds.module.NetConfig`` fields, e.g.
        ``use_gene_graph=False``) and ``deterministic=True`` for the non-diffusion ablation.

    Returns
    -------
    DiffST
        The fitted model, also recorded with ``data`` so that ``ds.tl.superresolve(data)``
        finds it.

    Examples
    --------
    >>> sdata = ds.io.read_legacy_st("her2st/C2")  # doctest: +SKIP
    >>> model = ds.tl.fit(sdata, max_steps=500)  # doctest: +SKIP
    """
    import torch

    from .. import pp
    from ..model._diffst import DiffST
    from ..module import preset as net_preset
    from ..schedulers import DiffusionConfig
    from ..train import TrainerConfig, fit_model

    if not deep and not histology_path:
        raise ValueError("deep=False keeps only the histology path, so it needs "
                         "histology_path=True; pass deep=True to train the network alone.")
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {list(TRAINING_PRESETS)}.")
    check_fit_options(max_steps=max_steps, batch_size=batch_size, genes=genes)
    budget = dict(TRAINING_PRESETS[preset])
    sdatas, _ = as_sdata_list(data, image, img_key)
    kw = {"table_key": table_key, "image_key": image_key, "coordinate_system": coordinate_system,
          "layer": layer}
    views = [section_view(s, **kw, microns_per_pixel=um)
             for s, um in zip(sdatas, _per_section(microns_per_pixel, len(sdatas)), strict=True)]
    for v in views:
        check_unique_genes(v.genes, where=f"The table of section {v.name!r}",
                           fix=MAKE_GENES_UNIQUE)
        warn_if_not_counts(v.is_counts, where=f"section {v.name!r}")
    if genes is None:
        tables = [_counts_table(v) for v in views]
        genes = pp.select_genes(tables if len(tables) > 1 else tables[0], n_top=n_genes)
    genes = [str(g) for g in genes]
    for v in views:
        missing = [g for g in genes if g not in set(v.genes)]
        if missing:
            raise KeyError(f"Section {v.name!r} lacks {len(missing)} of the genes, e.g. "
                           f"{missing[:5]}. Pass genes measured in every section.")

    graph = _gene_graph(sdatas, views, genes, graph_key, table_key)
    spec = GridSpec()
    if pairs not in ("self", "supervised"):
        raise ValueError(f"pairs must be 'self' or 'supervised', not {pairs!r}.")
    pair_views = _training_views(sdatas, views, supervised=pairs == "supervised",
                                 missing_key=missing_key, genes=genes)
    path = None
    if histology_path:
        from ..model._histology_path import HistologyPath

        rows = [r for lr_views, hr in pair_views for r in path_rows(lr_views, hr, genes, spec)]
        ratio = float(np.median([hr.spot_diameter_um / lr_views[0].spot_diameter_um
                                 for lr_views, hr in pair_views]))
        path = HistologyPath.fit(rows, ratio)
        if len(pair_views) == 1 and pairs == "self":
            path.fitted_on = pairs_fingerprint(pair_views[0][1], genes)
    sections = [p for lr_views, hr in pair_views
                for p in training_arrays(lr_views, hr, genes, spec, path)] if deep else []

    diff_keys = {"deterministic", "schedule", "num_train_steps"}
    diff_cfg = DiffusionConfig(prediction=prediction,
                               **{k: config.pop(k) for k in list(config) if k in diff_keys})
    for k in [k for k in config if k in ("lr", "patch_size")]:
        budget[k] = config.pop(k)
    net_cfg = net_preset(preset, len(genes), **config)
    budget["max_steps"] = int(max_steps or budget["max_steps"])
    budget["batch_size"] = int(batch_size or budget["batch_size"])
    training = {"preset": preset, "seed": seed, "sections": [v.name for v in views],
                "histology_path": histology_path, "deep": deep, **budget}

    torch.manual_seed(seed)
    model = DiffST(genes, net_cfg, diff_cfg, spec, graph=graph, training=training)
    model.histology_path = path
    if deep:
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
    model.residual_sd = _residual_sd(model, sections, seed) if deep else path.residual_sd
    remember_model(data, model)
    remember_model(sdatas, model)
    return model


def _gene_graph(sdatas, views, genes, key, table_key) -> np.ndarray:
    """The co-expression graph of ``genes``: each section's, averaged over sections."""
    from .. import pp

    mats = []
    for s, v in zip(sdatas, views, strict=True):
        table = v.adata
        params = table.uns.get(key, {})
        if key not in table.varp or list(params.get("genes", [])) != genes:
            if key in table.varp:
                warnings.warn(f"Rebuilding table.varp[{key!r}] of section {v.name!r} for the "
                              "model's genes.", UserWarning, stacklevel=3)
            pp.coexpression_graph(s, genes=genes, key_added=key, table_key=v.table_key,
                                  layer=v.layer)
        idx = table.var_names.get_indexer(genes)
        m = table.varp[key][idx][:, idx]
        mats.append(m.toarray() if hasattr(m, "toarray") else np.asarray(m))
    return np.mean(mats, axis=0).astype(np.float32)


def _training_views(sdatas, views, supervised: bool = False, missing_key: str | None = None,
                    genes: list[str] | None = None) -> list[tuple[list, object]]:
    """Each section's training views: (input views, the target view).

    Self-supervised, the inputs are the section's spots summed into pseudo-spots and the
    target its spots (without those flagged in ``obs[missing_key]``); supervised, the input is
    the section and the target its truth. Self-supervised views hold only ``genes`` (all by
    default), with each spot's library size alongside.
    """
    if supervised:
        return [_supervised_views(s, v) for s, v in zip(sdatas, views, strict=True)]
    return [self_supervised_pairs(v, missing_key, genes) for v in views]


def _per_section(value, n: int) -> list:
    """``value`` (one per section, or one for all) as a list of ``n``."""
    if not isinstance(value, list | tuple):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"microns_per_pixel has {len(value)} values for {n} sections: pass "
                         "one number for all of them or one per section, in the same order.")
    return list(value)


def _counts_table(view):
    """An AnnData whose ``X`` is the view's counts (shared, not copied), for gene selection.

    It records the section's name, so that ``pp.select_genes`` names it as ``fit`` does.
    """
    import anndata as ad
    import pandas as pd

    from .._core._view import SECTION_UNS_KEY

    x = view.adata.X if view.layer is None else view.adata.layers[view.layer]
    return ad.AnnData(X=x, obs=pd.DataFrame(index=view.adata.obs_names.copy()),
                      var=pd.DataFrame(index=view.adata.var_names.copy()),
                      uns={SECTION_UNS_KEY: {"name": view.name}})


def _supervised_views(sdata, view):
    """LR spots (the view) -> the high-resolution truth in ``tables["hr_table"]``."""
    if "hr_table" not in sdata.tables:
        raise ValueError(f"pairs='supervised' needs the truth in tables['hr_table'] (section "
                         f"{view.name!r} has {list(sdata.tables)}); make it with ds.pp.degrade.")
    hr = section_view(sdata, table_key="hr_table", image_key=view.image_key,
                      coordinate_system=view.coordinate_system,
                      microns_per_pixel=view.microns_per_pixel)
    return [view], hr


def _residual_sd(model, sections, seed: int, max_sections: int = 8) -> list[float]:
    """Per-gene RMS error (model units) of the fitted model's mean prediction on its pairs.

    ``superresolve`` adds it to the spread of the samples, so that the uncertainty also covers
    what the model gets wrong on average, not only how much its samples differ.
    """
    import torch

    from ..train._patches import patch_condition

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


_COND_KEYS = ("lr", "lr_mask", "he", "cells", "cell_xy", "cell_entropy")


def _loss_fn(model):
    diffusion = model.diffusion

    def loss(module, batch, generator):
        cond = {k: batch[k] for k in _COND_KEYS}
        total, logs = diffusion.loss(module, batch["x0"], cond, batch["weight"], generator)
        return total, logs

    return loss


def _cell_curriculum(n_cells: int, max_steps: int):
    """Grow the number of attended sub-patches from a quarter to all over the first half."""

    def hook(step, module):
        frac = min(1.0, step / max(1, max_steps // 2))
        module.set_active_cells(max(1, round(n_cells * (0.25 + 0.75 * frac))))

    return hook
