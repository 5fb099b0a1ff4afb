"""Adapter from scanpy's AnnData layout (``obsm['spatial']``, ``uns['spatial']``) to SpatialData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._build import build_sdata
from .._core._checks import (
    blank_problem,
    check_not_blank,
    check_rgb,
    check_spots_in_image,
)
from .._core._lattice import lattice_spacing_px, spot_spacing
from .._core._view import SECTION_UNS_KEY, VISIUM_SPOT_SPACING_UM

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def from_anndata(adata: AnnData, image: np.ndarray | None = None, *, img_key: str | None = None, library_id: str | None = None,
                 spot_diameter_px: float | None = None, microns_per_pixel: float | None = None,
                 name: str | None = None) -> SpatialData:
    """Turn an AnnData with spot pixel coordinates and an H&E into the canonical SpatialData.

    Parameters
    ----------
    adata
        Spots x genes, with ``obsm['spatial']`` the spot centres (x, y) in full-resolution H&E
        pixels, as scanpy's ``read_visium`` makes it.
    image
        The H&E as an array ``(y, x, 3|4)`` or ``(3|4, y, x)`` in the pixels of
        ``obsm['spatial']``. If omitted, taken from ``uns['spatial'][library_id]['images']
        [img_key]`` and brought to full resolution by its scale factor. A greyscale or blank
        (one colour, e.g. all zeros) image is refused: it holds no histology.
    img_key
        ``"hires"`` or ``"lowres"`` when the image comes from ``uns['spatial']``; by default the
        finest one that is not blank (Space Ranger may write a blank hires PNG).
    library_id
        Key in ``uns['spatial']``; the only one by default.
    spot_diameter_px
        Spot diameter in full-resolution pixels; from ``scalefactors['spot_diameter_fullres']``
        by default.
    microns_per_pixel
        H&E pixel size; by default from Visium's 100 um spot spacing (measured on the spots'
        array positions, or their nearest-neighbour distance).
    name
        Section name (coordinate system); ``library_id`` by default.

    Returns
    -------
    SpatialData
        Image ``"he"``, circles ``"spots"``, table ``"table"`` (a copy of ``adata``, raw
        values in ``layers['counts']``).

    Examples
    --------
    >>> import scanpy as sc, diffst_sc as ds
    >>> sdata = ds.io.from_anndata(sc.read_visium("outs"), img_key="hires")  # doctest: +SKIP
    """
    if "spatial" not in adata.obsm:
        raise KeyError("adata.obsm['spatial'] is missing: it must hold spot centres (x, y) in "
                       "H&E pixels.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} spots x {adata.n_vars} genes).")
    spatial = adata.uns.get("spatial", {})
    if library_id is None and spatial:
        if len(spatial) > 1:
            raise ValueError(f"uns['spatial'] has several libraries {list(spatial)}: pass "
                             "`library_id=`.")
        library_id = next(iter(spatial))
    lib = spatial.get(library_id, {}) if library_id is not None else {}
    sf = lib.get("scalefactors", {})
    centres = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]

    given = image is not None
    if given:
        rgb, scale = _as_uint8(check_rgb(image)), 1.0
        check_not_blank(rgb, fix="Pass the H&E as `image=`, or leave it out to read one of "
                        "uns['spatial'][...]['images'] (`img_key=`); if it should hold the H&E, "
                        "check the file it was read from.")
    else:
        img_key, rgb, scale = _uns_image(lib, library_id, img_key)

    if spot_diameter_px is None:
        spot_diameter_px = sf.get("spot_diameter_fullres")
    if spot_diameter_px is None:
        spot_diameter_px = 0.55 * spot_spacing(centres)  # Visium: 55 um spots, 100 um apart
    check_spots_in_image(centres * scale, rgb.shape[:2], float(spot_diameter_px) * scale,
                         fix=_off_image_fix(given, library_id, img_key, scale))
    if microns_per_pixel is None:
        microns_per_pixel = VISIUM_SPOT_SPACING_UM / lattice_spacing_px(adata.obs, centres)

    from spatialdata.transformations import Scale

    # The image keeps its own resolution; a scale places it over the full-resolution pixels.
    centres_img = centres * scale
    transform = Scale([1 / scale, 1 / scale], axes=("y", "x")) if scale != 1.0 else None
    x = adata.layers["counts"] if "counts" in adata.layers else adata.X
    obs = adata.obs.copy()
    obs.index = obs.index.astype(str)
    meta = {
        "platform": "visium" if sf else "anndata",
        "microns_per_pixel": float(microns_per_pixel) / scale,
        "spot_diameter_um": float(spot_diameter_px) * float(microns_per_pixel),
        "spot_diameter_px": float(spot_diameter_px) * scale,
    }
    name = name or library_id or "section"
    sdata = build_sdata(counts=x.toarray() if hasattr(x, "toarray") else x,
                        genes=list(adata.var_names.astype(str)), obs=obs,
                        centres_px=centres_img, diameter_px=float(spot_diameter_px) * scale,
                        image_yxc=rgb, name=name, uns={SECTION_UNS_KEY: meta},
                        image_transform=transform)
    return sdata


def _as_uint8(rgb: np.ndarray) -> np.ndarray:
    """An RGB image as uint8: floats in [0, 1] scaled to 0-255, others cast."""
    if rgb.dtype.kind != "f":
        return rgb.astype(np.uint8, copy=False)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8) if rgb.max() <= 1.0 else rgb.astype(np.uint8)


def _off_image_fix(given: bool, library_id, img_key, scale: float) -> str:
    """What to do about spots outside the image, for an AnnData in scanpy's layout."""
    where = "obsm['spatial'] holds spot centres in full-resolution H&E pixels"
    if given:
        return (f"{where}: pass as `image=` the H&E those pixels refer to (the full-resolution "
                "image), or leave `image=` out to read a downscaled image from uns['spatial'] "
                "with its scale factor (`img_key='hires'` or `'lowres'`).")
    factor = f"uns['spatial'][{library_id!r}]['scalefactors']['tissue_{img_key}_scalef']"
    return (f"{where}, and {factor} (here {scale:g}) must bring them into the pixels of the "
            f"{img_key!r} image: check that scale factor, or pass the full-resolution H&E as "
            "`image=`.")


def _uns_image(lib: dict, library_id, img_key: str | None):
    """The H&E of ``uns['spatial'][library_id]``: ``(img_key, (y, x, 3) uint8, scale factor)``.

    ``img_key`` if given (checked), else the finest usable image (largest scale factor): one that
    is RGB(A) and not blank; a blank one skipped on the way is warned about.
    """
    import warnings

    images, sf = lib.get("images", {}), lib.get("scalefactors", {})
    where = f"uns['spatial'][{library_id!r}]['images']"
    if not images:
        raise ValueError("No image given and none in adata.uns['spatial']: pass the H&E as "
                         "`image=` (an array in the pixels of obsm['spatial']).")
    if img_key is not None and img_key not in images:
        raise KeyError(f"No image {img_key!r} in {where}; there are {list(images)}.")

    def scalef(k):
        return float(sf.get(f"tissue_{k}_scalef", 1.0))

    keys = [img_key] if img_key is not None else sorted(images, key=lambda k: -scalef(k))
    problems = {}
    for k in keys:
        try:
            rgb = _as_uint8(check_rgb(images[k]))
        except ValueError as err:
            problems[k] = str(err)
            continue
        problem = blank_problem(rgb)
        if problem is None:
            if problems:
                warnings.warn(f"Skipped {where} images with no histology "
                              f"({_listed(problems)}); reading the H&E from {k!r}. Pass "
                              "`img_key=` to choose another.", UserWarning, stacklevel=3)
            return k, rgb, scalef(k)
        problems[k] = problem
    others = [k for k in images if k not in problems]
    fix = (f"pass another of them as `img_key=` ({others}) or the H&E as `image=`" if others
           else "pass the H&E as `image=`")
    raise ValueError(f"No usable H&E in {where}: {_listed(problems)}. To fix it, {fix}; if an "
                     "image should hold the H&E, check the file it was read from.")


def _listed(problems: dict) -> str:
    return "; ".join(f"{k!r} is {p}" if p.startswith("blank") else f"{k!r}: {p}"
                     for k, p in problems.items())
