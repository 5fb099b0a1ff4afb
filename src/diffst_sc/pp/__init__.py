"""Preprocessing: genes, normalisation, co-expression graph, LR/HR pairs, failed spots, H&E.

The H&E part is the histology descriptors: stain and nuclear statistics over discs around spots
or grid pixels, which the model's histology path reads.
"""

from ._coexpression import coexpression_graph, coexpression_matrix
from ._degrade import degrade
from ._descriptors import (
    BASE_UM,
    COUNT_LIKE,
    DESCRIPTOR_NAMES,
    StainQuantities,
    histology_descriptors,
    nuclear_threshold,
    reading_pixel_um,
    section_quantities,
    stabilise_variance,
    stain_quantities,
    working_pixel_um,
)
from ._discs import coarsening, disc_means, disc_reach_um
from ._genes import DEFAULT_EXCLUDE, select_genes
from ._low_counts import LOW_COUNTS_KEY, flag_low_count_spots, spots_to_skip
from ._normalize import log1p_normalize, normalize
from ._pairs import self_supervised_pairs
from ._windows import WINDOW_BYTES, section_descriptors

__all__ = [
    "select_genes",
    "DEFAULT_EXCLUDE",
    "normalize",
    "log1p_normalize",
    "coexpression_graph",
    "coexpression_matrix",
    "degrade",
    "self_supervised_pairs",
    "flag_low_count_spots",
    "LOW_COUNTS_KEY",
    "spots_to_skip",
    "histology_descriptors",
    "stain_quantities",
    "section_quantities",
    "disc_means",
    "StainQuantities",
    "DESCRIPTOR_NAMES",
    "stabilise_variance",
    "COUNT_LIKE",
    "BASE_UM",
    "nuclear_threshold",
    "working_pixel_um",
    "reading_pixel_um",
    "coarsening",
    "disc_reach_um",
    "section_descriptors",
    "WINDOW_BYTES",
]
