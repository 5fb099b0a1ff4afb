"""Preprocessing: genes, normalisation, co-expression graph, LR/HR pairs, failed spots."""

from ._coexpression import coexpression_graph, coexpression_matrix
from ._degrade import degrade
from ._genes import select_genes
from ._low_counts import flag_low_count_spots
from ._normalize import log1p_normalize, normalize

__all__ = [
    "select_genes",
    "normalize",
    "log1p_normalize",
    "coexpression_graph",
    "coexpression_matrix",
    "degrade",
    "flag_low_count_spots",
]
