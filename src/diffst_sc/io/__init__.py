"""Readers and adapters that bring real data into the canonical SpatialData form."""

from .._core._checks import (
    CoarseImageWarning,
    HistologyUninformativeWarning,
    NetworkUninformativeWarning,
    NotCountsWarning,
)
from ._anndata import from_anndata
from ._describe import SectionInfo, describe_section
from ._legacy_st import read_legacy_st

__all__ = ["read_legacy_st", "from_anndata", "describe_section", "SectionInfo",
           "NotCountsWarning",
           "CoarseImageWarning",
           "HistologyUninformativeWarning", "NetworkUninformativeWarning"]
