"""Reader for legacy Spatial Transcriptomics (100 um spots, 200 um grid), e.g. the HER2+ cohort."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._core._build import build_sdata
from .._core._checks import check_counts, check_spots_in_image
from .._core._lattice import lattice_fit, square_step
from .._core._view import SECTION_UNS_KEY

if TYPE_CHECKING:
    from spatialdata import SpatialData


def read_legacy_st(
    path: str | Path,
    *,
    name: str | None = None,
    spot_diameter_um: float = 100.0,
    spot_spacing_um: float = 200.0,
    microns_per_pixel: float | None = None,
    image_file: str = "he.jpg",
) -> SpatialData:
    """Read a legacy ST section (``counts.tsv.gz``, ``spots.tsv``, ``he.jpg``) into SpatialData.

    The layout is that of Andersson et al. (Nat Commun 2021): counts with spots as rows named
    ``"{x}x{y}"`` (array column, row), a spot table with ``x y pixel_x pixel_y selected`` and a
    full-resolution H&E. Only spots under tissue (``selected == 1``) are kept.

    Parameters
    ----------
    path
        Folder of the section.
    name
        Name of the section and of its coordinate system; the folder name by default.
    spot_diameter_um, spot_spacing_um
        Spot geometry of the platform (100 um spots on a 200 um grid for legacy ST).
    microns_per_pixel
        H&E pixel size; by default inferred from the spot grid (pixels per array step over
        ``spot_spacing_um``).
    image_file
        Name of the H&E file in ``path``.

    Returns
    -------
    SpatialData
        Image ``"he"`` (multiscale), circles ``"spots"``, table ``"table"`` with raw counts in
        ``X`` and ``layers["counts"]``, ``obs[["array_row", "array_col"]]`` and
        ``uns["diffst_section"]`` (pixel size, spot geometry), in coordinate system ``name``.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.io.read_legacy_st("../shared/data/her2st/C2")  # doctest: +SKIP
    """
    from PIL import Image

    path = Path(path)
    for f in ("counts.tsv.gz", "spots.tsv", image_file):
        if not (path / f).exists():
            raise FileNotFoundError(f"{path / f} not found: a legacy ST folder holds "
                                    f"counts.tsv.gz, spots.tsv and {image_file}.")
    name = name or path.name
    spots = pd.read_csv(path / "spots.tsv", sep="\t")
    if "selected" in spots:
        spots = spots[spots["selected"] == 1]
    spots = spots.copy()
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)]
    counts = pd.read_csv(path / "counts.tsv.gz", sep="\t", index_col=0)
    keep = spots.index.intersection(counts.index)
    if len(keep) == 0:
        raise ValueError(f"No spot of {path / 'spots.tsv'} is in {path / 'counts.tsv.gz'}: the "
                         "counts' row names must be 'XxY' array positions.")
    spots, counts = spots.loc[keep], counts.loc[keep]
    check_counts(counts.to_numpy(), where=str(path / "counts.tsv.gz"))

    Image.MAX_IMAGE_PIXELS = None
    he = np.asarray(Image.open(path / image_file).convert("RGB"))
    centres = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    if microns_per_pixel is None:
        microns_per_pixel = spot_spacing_um / pixels_per_array_step(spots)
    diameter_px = spot_diameter_um / microns_per_pixel
    check_spots_in_image(centres, he.shape[:2], diameter_px)

    obs = pd.DataFrame({"array_row": spots["y"].to_numpy(), "array_col": spots["x"].to_numpy()},
                       index=keep.astype(str))
    meta = {
        "platform": "legacy_st",
        "microns_per_pixel": float(microns_per_pixel),
        "spot_diameter_um": float(spot_diameter_um),
        "spot_spacing_um": float(spot_spacing_um),
        "spot_diameter_px": float(diameter_px),
        "source": str(path.name),
    }
    return build_sdata(
        counts=counts.to_numpy(),
        genes=list(counts.columns.astype(str)),
        obs=obs,
        centres_px=centres,
        diameter_px=diameter_px,
        image_yxc=he,
        name=name,
        uns={SECTION_UNS_KEY: meta},
    )


def pixels_per_array_step(spots: pd.DataFrame) -> float:
    """Least-squares scale of pixel positions against array positions (``x``, ``y``).

    Raises
    ------
    ValueError
        When the spots do not span the array (fewer than 3, or all on one line).
    """
    coef = lattice_fit(spots["y"], spots["x"], spots[["pixel_x", "pixel_y"]].to_numpy(float))
    if coef is None:
        raise ValueError(f"The {len(spots)} spots do not span the array (fewer than 3, or all on "
                         "one line), so the pixel size cannot be measured on it: pass "
                         "`microns_per_pixel=`.")
    return square_step(coef)
