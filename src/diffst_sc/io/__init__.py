"""Readers and adapters that bring real data into the canonical SpatialData form."""

from ._anndata import from_anndata
from ._checks import NotCountsWarning
from ._legacy_st import read_legacy_st
from ._view import SectionView, section_view

__all__ = ["read_legacy_st", "from_anndata", "section_view", "SectionView", "NotCountsWarning"]
