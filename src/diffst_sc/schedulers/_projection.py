"""Consistency with the measurement, for the sampler: re-exported from the footprint correction."""

from .._core._correction import DENSITY_FLOOR, FootprintProjection, correction_rounds

__all__ = ["DENSITY_FLOOR", "FootprintProjection", "correction_rounds"]
