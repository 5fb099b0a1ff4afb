"""``ds.tl.fit``: fit the histology model (and, if asked, the Diff-ST network) on sections."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._core._checks import MAKE_GENES_UNIQUE, check_unique_genes, warn_if_not_counts
from .._core._docs import shared_parameters
from .._core._view import section_view
from ..model import UNS_KEY, GridSpec, HistologyModel
from ..pp import LOW_COUNTS_KEY, self_supervised_pairs
from ._inputs import as_sdata_list, check_fit_options

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..model import DiffST, HistologyModel


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
    pairs: str = "self",
    key_added: str = UNS_KEY,
    reference: str | Path | HistologyModel | None = None,
    deep: bool = False,
    histology_path: bool = True,
    preset: str = "cpu-small",
    max_steps: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    graph_key: str = "diffst_coexpr",
    prediction: str = "x0",
    progress: bool = True,
    **config,
) -> HistologyModel | DiffST:
    """Fit a model that turns spot expression + H&E into fine gene maps.

    Each section's measured spots are summed into coarser pseudo-spots; the model learns, from
    the H&E, how the measured spots vary inside each pseudo-spot, and :func:`superresolve`
    applies it one scale finer. Sections given together are fitted jointly.

    By default the model is a :class:`~diffst_sc.model.HistologyModel` (numpy only, seconds).
    With ``deep=True`` a Diff-ST network (:class:`~diffst_sc.model.DiffST`) is also trained as
    a refinement of it (torch; minutes on a CPU).

    Writes, to the table of each section (the AnnData itself with AnnData input):
    ``uns[key_added]``, the fitted histology model (so that ``ds.tl.superresolve(sdata)`` finds
    it, also after ``sdata.write`` and ``spatialdata.read_zarr``); ``obs[missing_key]`` and
    ``uns[missing_key]`` when the column is absent (see ``missing_key``); with ``deep=True``
    and the gene graph on, ``varp[graph_key]`` and ``uns[graph_key]``.

    Parameters
    ----------
    data
        A SpatialData (spots, a table annotating them, an H&E), a list of them, or an AnnData in
        scanpy's layout (with ``image`` or ``img_key``).
    image
        The H&E as an array, with AnnData input only.
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
    pairs
        ``"self"``: learn from the measured spots summed into coarser pseudo-spots (works on any
        section). ``"supervised"``: learn from a section holding high-resolution truth as
        ``ds.pp.degrade`` lays it out (``tables["table"]`` the low-resolution spots,
        ``tables["hr_table"]`` the truth).
    key_added
        ``uns`` key the fitted histology model is stored under.
    reference
        A histology model to start from: the name of one shipped with the package
        (``"her2st"``, HER2+ breast cancer, see :meth:`~diffst_sc.model.HistologyModel.reference`),
        a folder written by ``model.save``, or a fitted model. Each gene's fit is shrunk toward
        the reference's weights instead of toward 0, by as much as the section's own held-out
        tiles support (0 for a gene the reference does not help, or does not model): use it for
        a section of a tissue like the reference's. ``None`` fits from the data alone.
    deep
        Also train the Diff-ST network on what the histology model leaves. A fold of the
        training pairs' tiles is held out: the network's residual is scaled by what it gains
        there (``model.residual_scale``, 0 when nothing, with a
        :class:`~diffst_sc.io.NetworkUninformativeWarning`), so its maps are not worse than its
        histology model's by more than the held-out spots can tell. On the her2st benchmark it
        gains nothing (see ``docs/method.md``), so it is off.
    histology_path
        ``False`` trains the network without a histology model under it (an ablation; needs
        ``deep=True``).
    preset
        With ``deep=True``: ``"cpu-small"`` (minutes on a laptop) or ``"gpu-large"``.
    max_steps, batch_size
        With ``deep=True``: override the preset's training budget.
    device
        With ``deep=True``: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ...
    seed
        With ``deep=True``: seed of the weights, the patches and the noise.
    checkpoint_dir
        With ``deep=True``: save checkpoints there; a fit called again with the same folder
        resumes.
    graph_key
        With ``deep=True``: ``varp`` key of the gene co-expression graph (built if absent).
    prediction
        With ``deep=True``: what the network predicts, ``"x0"``, ``"eps"`` or ``"v"``.
    {progress}
    **config
        With ``deep=True``: overrides of the network configuration (``ds.module.NetConfig``
        fields, e.g. ``use_gene_graph=False``), ``deterministic=True`` for the
        non-diffusion ablation, and ``held_out_samples``, ``held_out_steps``: the sampling of
        the held-out maps that set the network's ``residual_scale`` (8 and 20, as
        :func:`superresolve`'s defaults).

    Returns
    -------
    HistologyModel or DiffST
        The fitted model: save it with ``model.save(folder)``.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.datasets.her2st_demo()  # the embedded her2st section
    >>> model = ds.tl.fit(sdata, n_genes=20, progress=False)
    >>> model.genes[:3]
    ['IGKC', 'IGLC2', 'ERBB2']
    >>> "diffst_histology" in sdata.tables["table"].uns
    True
    """
    from .. import pp

    _check_options(data, image, deep=deep, histology_path=histology_path, preset=preset,
                   pairs=pairs, config=config)
    check_fit_options(max_steps=max_steps, batch_size=batch_size, genes=genes)
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

    pair_views = _training_views(sdatas, views, supervised=pairs == "supervised",
                                 missing_key=missing_key, genes=genes)
    training = {"sections": [v.name for v in views], "pairs": pairs}
    ref = _reference_model(reference)
    base = (HistologyModel.fit(pair_views, genes, GridSpec(), training, reference=ref)
            if histology_path else None)
    if base is not None:
        for v in views:
            v.adata.uns[key_added] = base.to_uns()
        if _is_anndata(data):
            data.uns[key_added] = base.to_uns()
    if not deep:
        return base

    from ..model import train_diffst

    deep_model = train_diffst(pair_views, genes, base,
                              lambda: _gene_graph(sdatas, views, genes, graph_key),
                              preset=preset, max_steps=max_steps, batch_size=batch_size,
                              prediction=prediction, seed=seed, device=device,
                              checkpoint_dir=checkpoint_dir, progress=progress,
                              training={**training, "histology_path": histology_path},
                              **config)
    _warn_if_closed(deep_model)
    return deep_model


def _warn_if_closed(model) -> None:
    """Say so when the network's gate is closed: its maps will be its histology model's."""
    from .._core._checks import NetworkUninformativeWarning

    if model.base is None or model.residual_scale > 0:
        return
    held = model.held_out or {}
    n = int(held.get("n_spots", 0))
    if n:
        what = (f"on the {n} held-out target spots of its training pairs it does not improve "
                f"on its histology model (squared error {held['mse_network']:.4g} with its "
                f"residual, {held['mse_base']:.4g} without)")
    else:
        what = "its training pairs hold no held-out tile to judge it on"
    warnings.warn(f"The Diff-ST network adds nothing: {what}. Its residual_scale is 0, so its "
                  "maps will be its histology model's (model.base), which needs no network. "
                  "More training data (several sections, or supervised pairs) may help.",
                  NetworkUninformativeWarning, stacklevel=3)


def _reference_model(reference) -> HistologyModel | None:
    """The reference model ``fit`` was given: by name, folder or object."""
    if reference is None or isinstance(reference, HistologyModel):
        return reference
    from ..model import REFERENCES

    if isinstance(reference, str) and reference in REFERENCES:
        return HistologyModel.reference(reference)
    if Path(reference).is_dir():
        return HistologyModel.load(reference)
    raise ValueError(f"reference={reference!r} is neither a shipped reference "
                     f"({sorted(REFERENCES)}) nor a folder written by model.save(); pass one of "
                     "those or a fitted HistologyModel.")


def _check_options(data, image, *, deep, histology_path, preset, pairs, config) -> None:
    """Refuse, before any work, options that do not go together."""
    import os

    from .._core._presets import check_preset

    if isinstance(image, str | os.PathLike):
        raise TypeError(f"fit's second argument is the H&E image of an AnnData, not a path "
                        f"({str(image)!r}). To keep the model, save it: "
                        "`model = ds.tl.fit(data); model.save(folder)`.")
    if image is not None and not _is_anndata(data):
        raise TypeError("`image=` is for AnnData input only: a SpatialData holds its H&E "
                        "(choose it with `image_key=`).")
    if not deep and not histology_path:
        raise ValueError("histology_path=False leaves no model unless the network is trained: "
                         "pass deep=True for the network alone.")
    if pairs not in ("self", "supervised"):
        raise ValueError(f"pairs must be 'self' or 'supervised', not {pairs!r}.")
    if deep:
        check_preset(preset)
    if config and not deep:
        raise TypeError(f"fit got {sorted(config)}, which set the network: they apply with "
                        "deep=True only. Check the spelling of fit's arguments.")


def _is_anndata(data) -> bool:
    from anndata import AnnData

    return isinstance(data, AnnData)


def _gene_graph(sdatas, views, genes, key) -> np.ndarray:
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
