"""Bring what a user passes (SpatialData, a list of them, AnnData + image) to SpatialData."""

from __future__ import annotations

import weakref

_BY_OBJECT: dict[int, tuple[weakref.ref, object]] = {}


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

    hit = _lookup(adata, "sdata")
    if hit is not None and image is None:
        return hit
    sdata = from_anndata(adata, image, img_key=img_key)
    _remember(adata, "sdata", sdata)
    return sdata


def remember_model(data, model) -> None:
    """Record ``model`` as the one fitted on ``data`` (each object of a list too)."""
    for d in data if isinstance(data, list | tuple) else [data]:
        _remember(d, "model", model)
        sd = _lookup(d, "sdata")
        if sd is not None:
            _remember(sd, "model", model)


def recall_model(data):
    """The model last fitted on ``data``, or ``None``."""
    return _lookup(data, "model")


def _remember(obj, what, value):
    key = (id(obj), what)
    _BY_OBJECT[key] = (weakref.ref(obj), value)


def _lookup(obj, what):
    hit = _BY_OBJECT.get((id(obj), what))
    if hit is None:
        return None
    ref, value = hit
    if ref() is not obj:  # the id was reused by another object
        del _BY_OBJECT[(id(obj), what)]
        return None
    return value
