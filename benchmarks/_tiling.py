"""The tiled her2st section of ``speed.py``: one section's H&E crop and spots repeated k x k times.

A real section (her2st C2 by default; Andersson et al., Nat Commun 12, 6012, 2021) grows by
tiling, so that cost can be measured against tissue area on real tissue and counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffst_sc._core import section_view


def tiled_section(section, k: int, *, he_downsample: int = 1, genes=None):
    """A legacy ST section grown ``k x k`` times by tiling its H&E crop and its spots.

    The crop is the rectangle of array positions holding the section's spots, at least one array
    step wider on every side, starting at an even position and an even number of steps across
    (so that every tile has the section's own 2 x 2 blocks); tile ``(ty, tx)`` shifts the crop's pixels by ``(ty * height, tx * width)`` and its
    spots' array positions by the crop's size in array steps.

    Parameters
    ----------
    section
        A legacy ST section as ``ds.io.read_legacy_st`` returns it, or its folder.
    k
        Tiles per side.
    he_downsample
        Average the H&E over ``he_downsample x he_downsample`` pixels before tiling (1 keeps the
        full resolution); the pixel size in the metadata follows.
    genes
        Keep only these genes in the table (all by default; library sizes then count only
        these).

    Returns
    -------
    spatialdata.SpatialData
        Image ``"he"``, circles ``"spots"``, table ``"table"`` (raw counts, ``array_row``,
        ``array_col``), in coordinate system ``"<section>_x<k>"``.
    """
    import diffst_sc as ds
    from diffst_sc._core import SECTION_UNS_KEY, build_sdata

    if k < 1 or he_downsample < 1:
        raise ValueError(f"k ({k}) and he_downsample ({he_downsample}) must be >= 1.")
    sdata = section if hasattr(section, "tables") else ds.io.read_legacy_st(section)
    view = section_view(sdata)
    table = view.adata
    genes = list(map(str, table.var_names)) if genes is None else [str(g) for g in genes]
    x = table[:, genes].layers["counts"]
    counts = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    rows = table.obs["array_row"].to_numpy(int)
    cols = table.obs["array_col"].to_numpy(int)
    centres = np.asarray(view.centres_px, float)
    # Pixels per array step along x (columns) and y (rows), and the pixel of array position 0.
    a = np.c_[cols, rows, np.ones(len(rows))]
    coef, *_ = np.linalg.lstsq(a, centres, rcond=None)
    step_x, step_y = float(coef[0, 0]), float(coef[1, 1])
    # Even starts keep the section's own 2 x 2 blocks (array position // 2) in every tile.
    c0, r0 = cols.min() - 1, rows.min() - 1
    c0, r0 = c0 - c0 % 2, r0 - r0 % 2
    n_cols = _even(cols.max() + 1 - c0 + 1)
    n_rows = _even(rows.max() + 1 - r0 + 1)
    origin = np.array([c0 - 0.5, r0 - 0.5]) @ coef[:2] + coef[2]
    width, height = round(n_cols * step_x), round(n_rows * step_y)
    he = np.moveaxis(np.asarray(sdata.images["he"]["scale0"]["image"].data), 0, -1)
    crop = _window(he, int(round(origin[1])), int(round(origin[0])), height, width)
    if he_downsample > 1:
        f = he_downsample
        h, w = crop.shape[0] // f * f, crop.shape[1] // f * f
        crop = crop[:h, :w].reshape(h // f, f, w // f, f, 3).mean((1, 3)).round()
        crop = crop.astype(np.uint8)
    ch, cw = crop.shape[:2]
    image = np.tile(crop, (k, k, 1))
    local = (centres - np.round(origin)) / he_downsample
    tiles = [(ty, tx) for ty in range(k) for tx in range(k)]
    all_centres = np.vstack([local + [tx * cw, ty * ch] for ty, tx in tiles])
    obs_rows = np.concatenate([rows - r0 + ty * n_rows for ty, _ in tiles])
    obs_cols = np.concatenate([cols - c0 + tx * n_cols for _, tx in tiles])
    import pandas as pd

    obs = pd.DataFrame({"array_row": obs_rows, "array_col": obs_cols},
                       index=[f"{c}x{r}" for c, r in zip(obs_cols, obs_rows, strict=True)])
    meta = dict(table.uns[SECTION_UNS_KEY])
    meta["microns_per_pixel"] = float(meta["microns_per_pixel"]) * he_downsample
    meta["spot_diameter_px"] = float(meta["spot_diameter_px"]) / he_downsample
    name = str(meta.get("source", view.coordinate_system))
    meta["source"] = f"{name} tiled {k} x {k}"
    return build_sdata(counts=np.tile(counts, (k * k, 1)), genes=genes, obs=obs,
                       centres_px=all_centres, diameter_px=meta["spot_diameter_px"],
                       image_yxc=image, name=f"{name}_x{k}",
                       uns={SECTION_UNS_KEY: meta})


def _even(n: int) -> int:
    return int(n + n % 2)


def _window(img: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """``img[y0:y0+h, x0:x0+w]``, white where the window leaves the image."""
    out = np.full((h, w, img.shape[2]), 255, dtype=img.dtype)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, img.shape[0]), min(x0 + w, img.shape[1])
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = img[ys:ye, xs:xe]
    return out


def write_store(section_dir: Path, k: int, he_downsample: int, n_genes: int,
                store: Path) -> list[str]:
    """Write the ``k x k`` section to the zarr ``store``; return the genes of the sweep."""
    import diffst_sc as ds

    base = ds.io.read_legacy_st(section_dir)
    genes = [str(g) for g in ds.pp.select_genes(base, n_top=n_genes)]
    tiled_section(base, k, he_downsample=he_downsample).write(store)
    return genes
