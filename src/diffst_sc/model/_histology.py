"""The histology model: the default model of diffst_sc, numpy only.

It predicts how expression varies *inside* each spot from the H&E around every pixel, on top of
the spots interpolated onto a fine grid, and then rescales the map so that its mean over every
measured spot is that spot (see ``docs/method.md``). Fitted in seconds, in closed form, on the
section's own spots summed into coarser pseudo-spots.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .._core._checks import check_unique_genes
from .._core._view import SectionView
from ._calibration import Calibration
from ._conditions import GridSpec, apply_path, check_image_matches, tissue_on_grid
from ._histology_path import ALPHAS, RANK, HistologyPath
from ._maps import MapSection, SectionMaps
from ._pairs import pair_grid, pairs_fingerprint, path_rows, section_calibration
from ._store import from_uns, prepare_folder, read_folder, to_uns, write_folder

HISTOLOGY_FORMAT = FORMAT = "diffst_sc.histology/2"
#: ``table.uns`` key where :func:`diffst_sc.tl.fit` stores the fitted histology model.
UNS_KEY = "diffst_histology"


class HistologyModel:
    """Spot expression + H&E -> fine gene maps, by a ridge regression on histology descriptors.

    Made by :func:`diffst_sc.tl.fit` (or :meth:`fit` on prepared training pairs); applied by
    :func:`diffst_sc.tl.superresolve`. Holds the genes (in channel order), how sections are
    rasterised, the fitted ridge and what it measured about itself on held-out tiles.

    Parameters
    ----------
    genes
        The modelled genes, in channel order.
    path
        The fitted ridge from histology descriptors to within-spot departures.
    grid_spec
        How sections are rasterised (pixel size relative to the spot spacing).
    training
        What the model was fitted on (for the record).

    Examples
    --------
    >>> import tempfile
    >>> import diffst_sc as ds
    >>> sdata = ds.datasets.her2st_demo()  # the embedded her2st section
    >>> model = ds.tl.fit(sdata, n_genes=20, progress=False)
    >>> model
    HistologyModel(20 genes, fitted on 1 section, held-out error 0.7...)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = model.save(tmp.name)
    >>> ds.model.HistologyModel.load(folder).genes == model.genes
    True
    """

    def __init__(self, genes, path: HistologyPath, grid_spec: GridSpec | None = None,
                 training: dict | None = None):
        self.genes = [str(g) for g in genes]
        check_unique_genes(self.genes, where="The model's gene list",
                           fix="The genes of a model must be unique: pass each gene once.")
        self.path = path
        self.grid_spec = grid_spec or GridSpec()
        self.training = dict(training or {})

    @classmethod
    def fit(cls, pair_views: list, genes: list[str], grid_spec: GridSpec | None = None,
            training: dict | None = None,
            reference: HistologyModel | None = None) -> HistologyModel:
        """Fit on training pairs: ``[(input views, target view), ...]``, one per section.

        The pairs come from :func:`diffst_sc.pp.self_supervised_pairs` (a section's spots
        summed into pseudo-spots, its spots the targets) or a section with high-resolution
        truth. Every target spot is one row of the ridge. With a ``reference`` model (e.g.
        :meth:`reference`), each gene's fit starts from the reference's weights as far as the
        held-out tiles support (``path.prior_strength``).
        """
        spec = grid_spec or GridSpec()
        genes = [str(g) for g in genes]
        for lr_views, hr in pair_views:  # before any descriptor is computed
            grid = pair_grid(lr_views[0], hr, spec)
            check_image_matches(hr, grid, tissue_on_grid(hr, grid, spec))
        rows = [r for lr_views, hr in pair_views for r in path_rows(lr_views, hr, genes, spec)]
        ratio = float(np.median([hr.spot_diameter_um / lr_views[0].spot_diameter_um
                                 for lr_views, hr in pair_views]))
        prior = None
        training = dict(training or {})
        if reference is not None:
            from ._reference import prior_for

            if not np.isclose(reference.path.radius_ratio, ratio):
                raise ValueError(
                    f"The reference resolves footprints {reference.path.radius_ratio:g} of its "
                    f"spots' size, these pairs {ratio:g}: a reference applies to pairs of the "
                    "same scale (spots summed 2 x 2 or into hexagons of 7, as fit makes them).")
            prior = prior_for(reference, genes)
            training["reference"] = reference.training.get("name", "reference")
        path = HistologyPath.fit(rows, ratio, prior=prior)
        if len(pair_views) == 1 and training.get("pairs", "self") == "self":
            path.fitted_on = pairs_fingerprint(pair_views[0][1], genes)
        return cls(genes, path, spec, training)

    @classmethod
    def reference(cls, name: str = "her2st") -> HistologyModel:
        """A reference model shipped with the package, by name (:data:`~diffst_sc.model.REFERENCES`).

        ``"her2st"``: fitted on the measured spots of three HER2+ breast cancer sections
        (Andersson et al., Nat Commun 12, 6012, 2021); pass it to
        ``ds.tl.fit(..., reference=...)`` for a section of similar tissue.
        """
        from ._reference import reference_folder

        return cls.load(reference_folder(name))

    def __repr__(self) -> str:
        n = len(self.training.get("sections", [])) or 1
        return (f"HistologyModel({len(self.genes)} genes, fitted on {n} "
                f"section{'s' if n != 1 else ''}, held-out error {self.path.cv_error:.3f})")

    @property
    def residual_sd(self) -> np.ndarray:
        """``(G,)`` held-out RMS error of each gene's within-spot departure (model units)."""
        sd = self.path.residual_sd
        return np.zeros(len(self.genes)) if sd is None else np.asarray(sd, np.float64)

    def diagnostics(self) -> pd.DataFrame:
        """Per gene: the held-out error the uncertainty is built from, and the path's weights.

        Columns: ``held_out_rmse`` (model units, on spatial tiles of the training spots),
        ``own_weight`` (weight of the gene's own interpolated departure) and ``shared_norm``
        (size of its weights on the histology descriptors). ``attrs`` hold the overall
        ``held_out_error`` (mean squared error of the departures in units of their variance:
        1 is no better than predicting none), the ridge ``penalties`` and ``rank``.
        """
        a, a_own, _ = self.path.ridge.linear()
        df = pd.DataFrame({
            "held_out_rmse": self.residual_sd,
            "own_weight": np.zeros(len(self.genes)) if a_own is None else a_own,
            "shared_norm": np.linalg.norm(self.path.ridge.coef, axis=0),
        }, index=pd.Index(self.genes, name="gene"))
        df.attrs.update(held_out_error=float(self.path.cv_error), penalties=list(ALPHAS),
                        rank=RANK)
        return df

    def check_genes(self, available) -> None:
        """Raise a clear error when data lack any of the model's genes."""
        have = set(map(str, available))
        missing = [g for g in self.genes if g not in have]
        if missing:
            lower = {g.lower(): g for g in have}
            hint = [lower[g.lower()] for g in missing[:5] if g.lower() in lower]
            extra = (f" The data have {hint} in other letter case: gene names are "
                     "case-sensitive." if hint else "")
            raise KeyError(
                f"The data lack {len(missing)} of the model's {len(self.genes)} genes, e.g. "
                f"{missing[:5]}. A model super-resolves only the genes it was fitted on: fit a "
                f"new model on these data (ds.tl.fit) or pass data measuring those genes.{extra}"
            )

    def calibrate(self, view: SectionView) -> Calibration:
        """How far the histology's departures hold on this section, from its own spots.

        ``view``'s spots summed into pseudo-spots are the inputs, its spots the held-out
        targets: each gene's histology weight (0: the histology explains nothing of how its
        spots depart from their interpolation, and the map is that interpolation) and the gain
        of the map's departures. On the section the model was fitted on alone, the weights of
        the fit's held-out tiles and gain 1 (see :func:`~diffst_sc.model.section_calibration`).
        """
        return section_calibration(self.path, view, self.genes, self.grid_spec)

    def gain(self, view: SectionView) -> float:
        """The scale of this section's departures against the training pairs' (:meth:`calibrate`)."""
        return self.calibrate(view).gain

    def prepare(self, view: SectionView, missing=None, cells: bool = False,
                calibration: Calibration | None = None) -> tuple[MapSection, Calibration]:
        """The section's map inputs, the base map in ``arrays.lr``, and its calibration.

        The calibration is measured on the section unless given.
        """
        section = MapSection.prepare(view, self.genes, self.grid_spec, missing, cells=cells)
        if calibration is None:
            calibration = self.calibrate(section.view)
        apply_path(section.arrays, self.path, section.view, section.grid,
                   self.path.radius_um(section.view), calibration=calibration)
        return section, calibration

    def predict(self, view: SectionView, *, missing=None, pixel_px: float | None = None,
                outside: float = 0.0, tile_size: int = 64, progress: bool = True) -> SectionMaps:
        """The section's maps: the base map, corrected to the spots, with its uncertainty.

        ``view`` is a section (``diffst_sc._core.section_view``); ``missing`` marks spots to
        leave out; ``pixel_px`` is the output pixel in full-resolution H&E pixels (the model's
        grid by default).
        """
        self.check_genes(view.genes)
        section, cal = self.prepare(view, missing)
        warn_uninformative(cal, self.genes, view)
        mean = section.corrected_base(tile_size, progress)
        return section.finish(mean, None, self.residual_sd, pixel_px=pixel_px, outside=outside,
                              calibration=cal, resolved_ratio=self.path.radius_ratio)

    # -- storage --------------------------------------------------------------------------------

    def config(self) -> dict:
        """The model as a dict of JSON values and numpy arrays."""
        path = self.path.to_dict()
        path["ridge"] = {k: None if v is None else np.asarray(v, np.float64)
                         for k, v in path["ridge"].items()}
        return {"format": FORMAT, "genes": list(self.genes), "grid": asdict(self.grid_spec),
                "training": self.training, "path": path}

    @classmethod
    def from_config(cls, cfg: dict) -> HistologyModel:
        """The inverse of :meth:`config`."""
        if cfg.get("format") != FORMAT:
            raise ValueError(f"This histology model was stored by another version of diffst_sc "
                             f"(format {cfg.get('format')!r}, expected {FORMAT!r}); fit it again "
                             "with ds.tl.fit.")
        return cls(list(cfg["genes"]), HistologyPath.from_dict(cfg["path"]),
                   GridSpec(**cfg["grid"]), cfg.get("training"))

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model into folder ``path``: ``config.json`` and ``arrays.npz``.

        Nothing but the folder is written. :meth:`load` checks the checksums recorded in
        ``config.json`` before reading anything.
        """
        folder = prepare_folder(path, overwrite)
        return write_folder(folder, self.config())

    @classmethod
    def load(cls, path: str | Path) -> HistologyModel:
        """Load a model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            When ``path`` holds no ``config.json`` or lacks a file it records.
        ValueError
            In one line naming the file and the fix, when a file is damaged, edited, or of
            another format.
        """
        cfg = read_folder(path, FORMAT, cls.__name__, ("genes", "grid", "path"))
        try:
            return cls.from_config(cfg)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{Path(path) / 'config.json'} does not describe a valid model "
                             f"({type(err).__name__}: {err}); fit and save the model again."
                             ) from None

    def to_uns(self) -> dict:
        """The model in the types a table's ``uns`` writes (see :data:`UNS_KEY`)."""
        return to_uns(self.config())

    @classmethod
    def from_uns(cls, entry) -> HistologyModel:
        """The model stored by :meth:`to_uns` (read back from zarr or h5ad too)."""
        cfg = from_uns(entry)
        cfg["genes"] = [str(g) for g in np.asarray(cfg["genes"]).tolist()]
        cfg["grid"] = {k: (v.item() if hasattr(v, "item") else v)
                       for k, v in cfg["grid"].items()}
        training = cfg.get("training") or {}
        cfg["training"] = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in training.items()}
        return cls.from_config(cfg)


def warn_uninformative(cal: Calibration, genes: list[str], view: SectionView) -> None:
    """Warn when the section's own pairs give at least half the genes no histology weight."""
    import warnings

    from .._core._checks import HistologyUninformativeWarning

    if cal.weight is None:
        return
    none = [g for g, w in zip(genes, np.asarray(cal.weight), strict=True) if w <= 0]
    if len(none) * 2 < len(genes):
        return
    warnings.warn(
        f"On section {view.name!r}, the H&E ({view.image_key!r}) explains nothing of how the "
        f"spots depart from their interpolation for {len(none)} of {len(genes)} genes (e.g. "
        f"{none[:3]}), measured on the section's own spots: for those genes the map is the "
        "interpolated spots. If the H&E should help, check that it is this section's image and "
        "that it is registered to the spots (scale factors, coordinate system).",
        HistologyUninformativeWarning, stacklevel=3)
