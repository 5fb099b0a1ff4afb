"""The user object: :class:`DiffST`, fitted by ``ds.tl.fit``, saved and loaded from a folder.

It holds the trained parts (:mod:`diffst_sc.module`) and what it needs to apply them to a new
section; this package also turns sections into the arrays those parts take: the grid a section
is rasterised on (:class:`GridSpec`), the model's expression units (:func:`scaler_for`), and the
histology path's inputs and fit (:func:`descriptor_maps`, :func:`cells_of`,
:class:`FootprintRows`, :class:`HistologyPath`) and its gain on a section (:func:`section_gain`).
"""

from ._data import ExpressionScaler, GridSpec, scaler_for, section_gain
from ._diffst import DiffST
from ._histology_path import FootprintRows, HistologyPath, cells_of, descriptor_maps

__all__ = ["DiffST", "GridSpec", "ExpressionScaler", "scaler_for", "HistologyPath",
           "FootprintRows", "descriptor_maps", "cells_of", "section_gain"]
