"""Bring what a user passes (SpatialData, a list of them, AnnData + image) to SpatialData."""

from __future__ import annotations

import numbers
import os

_NO_MODEL = ("No model given and the data store none: fit one first (`ds.tl.fit(data)` stores "
             "its histology model in the table's uns['diffst_histology']), or pass `model=` a "
             "fitted model or the folder of a saved one (written by `model.save(path)`).")


def as_sdata_list(data, image=None, img_key=None) -> tuple[list, bool]:
    """A list of SpatialData from ``data``; the flag says whether a single object was given."""
    from anndata import AnnData
    from spatialdata import SpatialData

    single = not isinstance(data, list | tuple)
    items = [data] if single else list(data)
    if not items:
        raise ValueError("No data given: pass a SpatialData, a list of them, or an AnnData.")
    out = []
    for d in items:
        if isinstance(d, SpatialData):
            out.append(d)
        elif isinstance(d, AnnData):
            out.append(anndata_sdata(d, image, img_key))
        else:
            raise TypeError(f"Expected SpatialData or AnnData, got {type(d).__name__}. Read your "
                            "data with ds.io.read_legacy_st, spatialdata_io.visium/xenium or "
                            "scanpy.read_visium first.")
    return out, single


def anndata_sdata(adata, image=None, img_key=None):
    """The SpatialData made from an AnnData in scanpy's layout (``ds.io.from_anndata``).

    The histology models ``fit`` stored in the AnnData's ``uns`` go with it.
    """
    from ..io import from_anndata
    from ..model import HISTOLOGY_FORMAT

    sdata = from_anndata(adata, image, img_key=img_key)
    table = sdata.tables["table"]
    for key, value in adata.uns.items():
        if isinstance(value, dict) and value.get("format") == HISTOLOGY_FORMAT:
            table.uns[key] = value
    return sdata


def check_fit_options(*, max_steps=None, batch_size=None, genes=None) -> None:
    """Refuse, before any work, training budgets that are not positive and repeated genes."""
    from .._core._checks import check_unique_genes

    for name, value in (("max_steps", max_steps), ("batch_size", batch_size)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}; leave it "
                             "out (None) for the preset's budget.")
    if genes is not None and not isinstance(genes, str):
        check_unique_genes(genes, where="`genes`", fix="Pass each gene once.")


def resolve_model(model, sdata, table_key: str | None = None):
    """The model to super-resolve ``sdata`` with.

    ``model`` itself; the model saved in folder ``model`` when it is a path; else the histology
    model that ``fit`` stored in the table's ``uns[UNS_KEY]``.

    Raises
    ------
    TypeError
        When ``model`` is neither a model nor a path.
    ValueError
        When no model is given and the table stores none.
    """
    from ..model import UNS_KEY, HistologyModel

    if isinstance(model, str | os.PathLike):
        from ..model import load

        return load(model)
    if model is not None:
        if not _is_model(model):
            raise TypeError(f"model must be a HistologyModel or DiffST (from ds.tl.fit) or the "
                            f"folder of a saved one, got {type(model).__name__}.")
        return model
    tables = sdata.tables if table_key is None else {table_key: sdata.tables[table_key]}
    stored = [k for k, t in tables.items() if UNS_KEY in t.uns]
    if not stored:
        raise ValueError(_NO_MODEL)
    return HistologyModel.from_uns(tables[stored[0]].uns[UNS_KEY])


def _is_model(obj) -> bool:
    from ..model import DiffST, HistologyModel

    return isinstance(obj, HistologyModel | DiffST)
