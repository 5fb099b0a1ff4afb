"""Scores of super-resolved maps against measured ones (the benchmark protocol's, and more).

Plain numpy: ``(n_spots, n_genes)`` predictions against the truth at the same spots.
"""

from ._scores import (
    block_means,
    consistency_error,
    expression_scores,
    gene_mean,
    interval_coverage,
    nrmse,
    pcc,
    renormalisation_factors,
    renormalise_to_blocks,
    scorable_genes,
    ssim_on_grid,
    uncertainty_gain,
    values_on_grid,
    within_block_pcc,
)

__all__ = ["pcc", "nrmse", "ssim_on_grid", "within_block_pcc", "expression_scores",
           "interval_coverage", "uncertainty_gain", "consistency_error", "block_means",
           "renormalise_to_blocks", "renormalisation_factors", "scorable_genes", "values_on_grid",
           "gene_mean"]
