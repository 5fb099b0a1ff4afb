"""The H&E at a fixed physical pixel size, the scale at which the model sees histology."""

from __future__ import annotations

import numpy as np


def resample_image(levels: list, microns_per_pixel: float, target_um: float) -> np.ndarray:
    """Resample an RGB(A) image pyramid to ``target_um`` micrometres per pixel.

    Parameters
    ----------
    levels
        ``(c, y, x)`` arrays (numpy, dask or xarray), finest first, each a power-of-two
        downsampling of the previous.
    microns_per_pixel
        Pixel size of the finest level.
    target_um
        Wanted pixel size.

    Returns
    -------
    numpy.ndarray
        ``(3, y, x)`` float32 in [0, 1].
    """
    from skimage.transform import resize

    if target_um <= 0:
        raise ValueError(f"target pixel size must be positive, got {target_um}.")
    full = levels[0].shape[1:]
    # The coarsest level still at least as fine as the target, so resizing only shrinks.
    best = 0
    for i, lev in enumerate(levels):
        if microns_per_pixel * full[0] / lev.shape[1] <= target_um * 1.0001:
            best = i
    lev = levels[best]
    arr = np.asarray(getattr(lev, "data", lev)[:3])
    if hasattr(arr, "compute"):
        arr = arr.compute()
    arr = np.moveaxis(np.asarray(arr), 0, -1)
    scale = arr.dtype.kind in "ui" and 255.0 or 1.0
    out_shape = (max(1, round(full[0] * microns_per_pixel / target_um)),
                 max(1, round(full[1] * microns_per_pixel / target_um)))
    if out_shape != arr.shape[:2]:
        arr = resize(arr.astype(np.float32) / scale, out_shape, order=1, anti_aliasing=True,
                     preserve_range=True)
    else:
        arr = arr.astype(np.float32) / scale
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)
