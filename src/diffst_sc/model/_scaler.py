"""The model's units for a section: counts per footprint to standardised log-density and back."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .._core._units import to_density, to_model_units
from .._core._view import SectionView

#: Expression is modelled as log1p of counts per 10,000 (section-median total) per unit area.
_PER = 1e4


@dataclass
class ExpressionScaler:
    """Maps one section's spot counts to the model's standardised log-density units and back.

    Density = counts / footprint area, divided by the section's median total density (so that
    sections sequenced at different depths look alike), times 10,000, then ``log1p`` and
    standardised per gene with the mean and sd over the section's input spots.
    """

    section_scale: float
    mu: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, counts: np.ndarray, totals: np.ndarray, area_um2: float) -> ExpressionScaler:
        """Statistics of the input spots: ``counts`` (n, G) of the modelled genes, ``totals`` (n,)."""
        scale = float(np.median(totals / area_um2))
        if not np.isfinite(scale) or scale <= 0:
            scale = float(np.mean(totals / area_um2)) or 1.0
        log = np.log1p(counts / area_um2 / scale * _PER)
        sd = np.maximum(log.std(0), 0.1)
        return cls(scale, log.mean(0).astype(np.float32), sd.astype(np.float32))

    def density(self, counts: np.ndarray, area_um2: float) -> np.ndarray:
        """Counts per footprint of ``area_um2`` to normalised density (model's linear units)."""
        return (np.asarray(counts, np.float64) / area_um2 / self.section_scale
                * _PER).astype(np.float32)

    def counts_per_unit(self, area_um2: float) -> float:
        """Counts per footprint of ``area_um2`` of one unit of normalised density."""
        return self.section_scale / _PER * area_um2

    def to_model(self, counts: np.ndarray, area_um2: float) -> np.ndarray:
        """Counts per footprint to standardised log-density."""
        return to_model_units(self.density(counts, area_um2), self.mu, self.sd).astype(np.float32)

    def to_counts(self, z: np.ndarray, area_um2: float, gene_axis: int = 0) -> np.ndarray:
        """Model units back to counts per footprint of ``area_um2``; genes along ``gene_axis``."""
        shape = [1] * np.ndim(z)
        shape[gene_axis] = -1
        v = to_density(z, self.mu.reshape(shape), self.sd.reshape(shape))
        return (v * self.counts_per_unit(area_um2)).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        d = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def disc_area_um2(view: SectionView) -> float:
    """Footprint area of one spot of ``view`` in square micrometres."""
    return float(np.pi * (view.spot_diameter_um / 2) ** 2)


def scaler_for(view: SectionView, genes: list[str],
               expression: np.ndarray | None = None) -> ExpressionScaler:
    """The expression scaler of a section's input spots.

    ``expression``: their ``view.footprint_expression(genes)``, where the caller has it.
    """
    if expression is None:
        expression = view.footprint_expression(genes)
    return ExpressionScaler.fit(expression, view.footprint_library_sizes(), disc_area_um2(view))
