"""Readers and adapters that bring real data into the canonical SpatialData form."""

from .._core._checks import (
    CoarseImageWarning,
    HistologyUninformativeWarning,
    NetworkUninformativeWarning,
    NotCountsWarning,
)
from .._core._view import SectionView, section_view
from ._anndata import from_anndata
from ._legacy_st import read_legacy_st

__all__ = ["read_legacy_st", "from_anndata", "section_view", "SectionView", "NotCountsWarning",
           "CoarseImageWarning",
           "HistologyUninformativeWarning", "NetworkUninformativeWarning"]
