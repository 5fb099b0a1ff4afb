"""The models a user holds.

:class:`HistologyModel` (numpy only) is the default model of ``ds.tl.fit``: a ridge regression
from histology descriptors to how expression varies inside each spot. :class:`DiffST` (torch,
imported on first use) is the Diff-ST network trained as a refinement of a fitted histology
model (``ds.tl.fit(..., deep=True)``). Each owns fitting, mapping a section, saving and loading.
The rest of this package turns sections into the arrays they read and their maps into layers.
"""

from __future__ import annotations

from ._calibration import Calibration, count_dispersion, count_spread, histology_weights
from ._conditions import GridSpec
from ._diffst import DiffST
from ._diffst_gate import HeldOut
from ._diffst_training import train_diffst
from ._histology import HISTOLOGY_FORMAT, UNS_KEY, HistologyModel
from ._histology_path import FootprintRows, HistologyPath, cells_of, descriptor_maps
from ._maps import SectionMaps
from ._pairs import section_calibration
from ._reference import REFERENCES
from ._ridge import Ridge
from ._scaler import ExpressionScaler, scaler_for

__all__ = ["HistologyModel", "DiffST", "UNS_KEY", "GridSpec", "ExpressionScaler", "scaler_for",
           "HistologyPath", "FootprintRows", "Ridge", "SectionMaps", "descriptor_maps",
           "cells_of", "section_calibration", "Calibration", "histology_weights",
           "count_dispersion", "count_spread", "REFERENCES", "train_diffst", "HeldOut",
           "HISTOLOGY_FORMAT", "load"]



def load(path) -> HistologyModel | DiffST:
    """The model saved in folder ``path``, a HistologyModel or a DiffST, as its config says."""
    import json
    from pathlib import Path

    try:
        fmt = json.loads((Path(path) / "config.json").read_text()).get("format", "")
    except (OSError, ValueError, AttributeError):
        fmt = ""  # the class's load names what is wrong with the folder
    cls = DiffST if str(fmt).startswith("diffst_sc.diffst") else HistologyModel
    return cls.load(path)
