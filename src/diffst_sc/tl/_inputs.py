"""Bring what a user passes (SpatialData, a list of them, AnnData + image) to SpatialData."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

from .._core._attached import attach, attached
from ..model._saved import SAVED_MODEL_KEY

_NO_MODEL = ("No model given and none fitted on these data: pass `model=` a DiffST (from "
             "`ds.tl.fit(data)`) or the folder of a saved one (written by `model.save(path)`).")


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
    """The SpatialData made from an AnnData (made once per AnnData object and remembered)."""
    from ..io import from_anndata

    hit = attached(adata, "sdata")
    if hit is not None and image is None:
        return hit
    sdata = from_anndata(adata, image, img_key=img_key)
    attach(adata, "sdata", sdata)
    return sdata


def remember_model(data, model) -> None:
    """Record ``model`` as the one fitted on ``data`` (each object of a list too)."""
    for d in data if isinstance(data, list | tuple) else [data]:
        attach(d, "model", model)
        sd = attached(d, "sdata")
        if sd is not None:
            attach(sd, "model", model)


def recall_model(data):
    """The model last fitted on ``data``, or ``None``."""
    return attached(data, "model")


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


def resolve_model(model, data, sdata):
    """The model to super-resolve ``sdata`` with.

    ``model`` itself; the folder of a saved model when ``model`` is a path; else the model last
    fitted on ``data``; else the saved model whose folder a table of ``sdata`` records in
    ``uns[SAVED_MODEL_KEY]`` (written by ``DiffST.save``).

    Raises
    ------
    TypeError
        When ``model`` is neither a DiffST nor a path.
    ValueError
        When no model is given, none was fitted on the data and no table records one.
    """
    from ..model._diffst import DiffST

    if isinstance(model, str | os.PathLike):
        return DiffST.load(model)
    if model is not None:
        if not isinstance(model, DiffST):
            raise TypeError(f"model must be a DiffST or the folder of a saved one, got "
                            f"{type(model).__name__}.")
        return model
    model = recall_model(data) or recall_model(sdata)
    if model is not None:
        return model
    folder = recorded_model_folder(sdata)
    if folder is None:
        raise ValueError(_NO_MODEL)
    return DiffST.load(folder)


def recorded_model_folder(sdata) -> Path | None:
    """The folder of the saved model a table of ``sdata`` records, or ``None`` if none does.

    Raises
    ------
    FileNotFoundError
        When a table records a folder that no longer holds a model.
    """
    for key, table in sdata.tables.items():
        record = table.uns.get(SAVED_MODEL_KEY)
        if not isinstance(record, dict) or "path" not in record:
            continue
        folder = Path(str(record["path"]))
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"tables[{key!r}].uns[{SAVED_MODEL_KEY!r}] records a model saved in {folder}, "
                f"which holds none now. {_NO_MODEL}")
        return folder
    return None
