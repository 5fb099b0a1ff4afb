"""Read a raster (e.g. a super-resolved gene map) out over spot footprints or onto another grid.

Conventions (spatialdata's): a raster is ``(c, y, x)``; pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)`` in raster units, its centre at ``(j + 0.5, i + 0.5)``; a 3 x 3 affine
on homogeneous ``(x, y, 1)`` takes raster units to a coordinate system. The layers of
``ds.tl.superresolve`` are NaN outside the tissue: the readouts leave NaN pixels out (their
weights too), unless told to read them as a value (``nan_as=0.0``: no tissue, no counts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ._elements import image_levels

if TYPE_CHECKING:
    import xarray as xr
    from spatialdata import SpatialData

    from ._view import SectionView

#: Sub-samples across a footprint's diameter that the automatic supersampling aims for.
_SAMPLES_ACROSS = 32
#: Sample points generated at once (bounds the memory of one batch of spots).
_BATCH_POINTS = 4_000_000


def _check_affine(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.shape != (3, 3) or not np.allclose(a[2], [0, 0, 1]):
        raise ValueError(f"`{name}` must be a 3 x 3 affine on (x, y, 1) with last row [0, 0, 1]; "
                         f"got {a.tolist()}.")
    if abs(np.linalg.det(a[:2, :2])) < 1e-300:
        raise ValueError(f"`{name}` is singular: it does not place the raster in the plane.")
    return a


def channel_index(image, channels) -> tuple[object, list | None]:
    """Subset a raster's channels by name (DataArray) or position."""
    if channels is None:
        names = channel_names(image)
        return image, names
    channels = list(channels)
    names = channel_names(image)
    if names is not None and all(isinstance(c, str) for c in channels):
        missing = [c for c in channels if c not in names]
        if missing:
            raise KeyError(f"{len(missing)} channels are not in the raster, e.g. {missing[:5]}; "
                           f"it has {len(names)} channels such as {names[:5]}.")
        pos = [names.index(c) for c in channels]
    else:
        pos = [int(c) for c in channels]
    return _array(image)[pos], [names[p] for p in pos] if names is not None else None


def _array(image):
    """The array behind a raster: a DataArray's ``.data`` (numpy or dask), else the array itself."""
    return image.data if hasattr(image, "dims") else image


def channel_names(image) -> list | None:
    coords = getattr(image, "coords", None)
    if coords is not None and "c" in coords:
        return [str(c) for c in np.asarray(coords["c"].values)]
    return None


def _compute_window(image, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """The raster's values in a window, computed once, as float (c, y, x)."""
    data = _array(image)
    if data.ndim != 3:
        raise ValueError(f"Expected a (c, y, x) raster; got {data.ndim} dimensions "
                         f"(shape {tuple(data.shape)}).")
    win = data[:, y0:y1, x0:x1]
    if hasattr(win, "compute"):
        win = win.compute()
    return np.asarray(win, dtype=np.float64)


def _raster_extent(image) -> tuple[int, int]:
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"Expected a (c, y, x) raster; got shape {shape}.")
    return int(shape[1]), int(shape[2])


def footprint_weights(raster_shape_yx: tuple[int, int], image_to_cs: np.ndarray, centres_cs: np.ndarray, diameter_cs: float, *,
                      supersample: int | None = None) -> sp.csr_matrix:
    """Pixel-area weights of disc footprints on a raster.

    Each pixel is split into ``supersample x supersample`` sub-pixels; a sub-pixel counts for a
    disc when its centre, mapped to the coordinate system, lies inside the disc.

    Parameters
    ----------
    raster_shape_yx
        ``(height, width)`` of the raster.
    image_to_cs
        ``3 x 3`` affine from raster units to the coordinate system of the discs.
    centres_cs
        ``(n_spots, 2)`` disc centres (x, y) in the coordinate system.
    diameter_cs
        Disc diameter in the coordinate system's units.
    supersample
        Sub-pixels per pixel side; chosen so that about 32 sub-pixels span a diameter if omitted.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_spots, height * width)``: the fraction of each pixel's area inside each disc.
    """
    a = _check_affine(image_to_cs, "image_to_cs")
    centres = np.asarray(centres_cs, dtype=float).reshape(-1, 2)
    if not np.isfinite(centres).all():
        raise ValueError("`centres_cs` has NaN or infinite values.")
    if not np.isfinite(diameter_cs) or diameter_cs <= 0:
        raise ValueError(f"`diameter_cs` must be a positive number, not {diameter_cs!r}.")
    h, w = (int(s) for s in raster_shape_yx)
    if not len(centres):
        return sp.csr_matrix((0, h * w))
    inv = np.linalg.inv(a)
    r = diameter_cs / 2.0
    centres_px = centres @ inv[:2, :2].T + inv[:2, 2]
    # Half extents of the disc's image (an ellipse) along the raster's x and y axes.
    half = r * np.sqrt((inv[:2, :2] ** 2).sum(1))
    if supersample is None:
        supersample = int(np.clip(np.ceil(_SAMPLES_ACROSS / (2 * half.min())), 1, 8))
    s = int(supersample)
    if s < 1:
        raise ValueError(f"`supersample` must be at least 1, not {supersample}.")
    kx, ky = int(np.ceil(2 * half[0])) + 2, int(np.ceil(2 * half[1])) + 2
    sub = (np.arange(s) + 0.5) / s
    # Offsets of every sub-pixel of a kx x ky window, relative to the window's corner pixel.
    oy, ox = np.meshgrid((np.arange(ky)[:, None] + sub).ravel(),
                         (np.arange(kx)[:, None] + sub).ravel(), indexing="ij")
    oy, ox = oy.ravel(), ox.ravel()
    pix_local = np.floor(oy).astype(np.int64) * kx + np.floor(ox).astype(np.int64)

    rows, cols, vals = [], [], []
    batch = max(1, _BATCH_POINTS // ox.size)
    corner = np.floor(centres_px - half).astype(np.int64)
    for start in range(0, len(centres), batch):
        stop = min(start + batch, len(centres))
        cx, cy = corner[start:stop, 0:1], corner[start:stop, 1:2]
        px, py = cx + ox[None], cy + oy[None]
        qx = a[0, 0] * px + a[0, 1] * py + a[0, 2]
        qy = a[1, 0] * px + a[1, 1] * py + a[1, 2]
        inside = ((qx - centres[start:stop, 0:1]) ** 2 + (qy - centres[start:stop, 1:2]) ** 2
                  <= r * r)
        # Sub-pixels inside the disc, counted per pixel of the window.
        spot, k = np.nonzero(inside)
        counts = np.bincount(spot * (kx * ky) + pix_local[k],
                             minlength=(stop - start) * kx * ky).reshape(stop - start, kx * ky)
        spot, loc = np.nonzero(counts)
        gx = cx[spot, 0] + loc % kx
        gy = cy[spot, 0] + loc // kx
        ok = (gx >= 0) & (gx < w) & (gy >= 0) & (gy < h)
        rows.append(spot[ok] + start)
        cols.append(gy[ok] * w + gx[ok])
        vals.append(counts[spot[ok], loc[ok]] / (s * s))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(centres), h * w))


def footprint_means(image: np.ndarray | xr.DataArray, image_to_cs: np.ndarray, centres_cs: np.ndarray, diameter_cs: float, *, channels: list[str] | None = None,
                    supersample: int | None = None, nan_as: float | None = None) -> np.ndarray:
    """Mean of a ``(c, y, x)`` raster over disc footprints given in a coordinate system.

    The raster is computed once (only the window the discs cover); each disc's mean weights the
    pixels by the fraction of their area inside it (see :func:`footprint_weights`). Pixels with
    NaN values are left out of the mean, weights included (or read as ``nan_as``); a disc that
    covers no valid pixel, or lies off the raster, gets NaN.

    Parameters
    ----------
    image
        ``(c, y, x)`` raster (numpy, dask or xarray).
    image_to_cs
        ``3 x 3`` affine from raster units (x, y) to the coordinate system, e.g. spatialdata's
        ``get_transformation(el, to_coordinate_system=cs).to_affine_matrix(input_axes=("x", "y"),
        output_axes=("x", "y"))``.
    centres_cs
        ``(n_spots, 2)`` disc centres (x, y) in the coordinate system.
    diameter_cs
        Disc diameter in the coordinate system's units.
    channels
        Channel names (DataArray ``c`` coordinates) or positions to read; all by default.
    supersample
        Sub-pixels per pixel side (automatic by default).
    nan_as
        Value NaN pixels are read as (e.g. ``0.0``: outside the tissue, no counts); by default
        they are left out.

    Returns
    -------
    numpy.ndarray
        ``(n_spots, n_channels)`` float64.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.ones((1, 50, 50))
    >>> footprint_means(img, np.eye(3), [[25.0, 25.0]], 10.0)
    array([[1.]])
    """
    image, _ = channel_index(image, channels)
    h, w = _raster_extent(image)
    centres = np.asarray(centres_cs, dtype=float).reshape(-1, 2)
    a = _check_affine(image_to_cs, "image_to_cs")
    inv = np.linalg.inv(a)
    centres_px = centres @ inv[:2, :2].T + inv[:2, 2]
    half = diameter_cs / 2.0 * np.sqrt((inv[:2, :2] ** 2).sum(1))
    x0 = int(np.clip(np.floor((centres_px[:, 0] - half[0]).min()) - 1, 0, w))
    x1 = int(np.clip(np.ceil((centres_px[:, 0] + half[0]).max()) + 2, 0, w))
    y0 = int(np.clip(np.floor((centres_px[:, 1] - half[1]).min()) - 1, 0, h))
    y1 = int(np.clip(np.ceil((centres_px[:, 1] + half[1]).max()) + 2, 0, h))
    n_c = int(image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return np.full((len(centres), n_c), np.nan)
    values = _compute_window(image, y0, y1, x0, x1).reshape(n_c, -1).T
    if nan_as is not None:
        values = np.where(np.isnan(values), float(nan_as), values)
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=float)
    weights = footprint_weights((y1 - y0, x1 - x0), a @ shift, centres, diameter_cs,
                                supersample=supersample)
    valid = np.isfinite(values)
    if valid.all():
        total = weights @ values
        area = np.broadcast_to(np.asarray(weights.sum(axis=1)), total.shape)
    else:
        total = weights @ np.where(valid, values, 0.0)
        area = weights @ valid.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, total / area, np.nan)


def resample_to_grid(image: np.ndarray | xr.DataArray, image_to_cs: np.ndarray, grid_shape_yx: tuple[int, int], grid_to_cs: np.ndarray, *, channels: list[str] | None = None,
                     supersample: int = 4) -> np.ndarray:
    """Area-weighted resampling of a raster onto another pixel grid.

    Each target pixel is split into ``supersample x supersample`` sub-pixels; each takes the
    value of the source pixel under its centre, and the target pixel their mean (NaN and
    off-raster sub-pixels left out; NaN where none is left).

    Parameters
    ----------
    image
        ``(c, y, x)`` source raster.
    image_to_cs
        ``3 x 3`` affine of the source raster to a coordinate system.
    grid_shape_yx
        ``(height, width)`` of the target grid.
    grid_to_cs
        ``3 x 3`` affine of the target grid to the same coordinate system.
    channels
        Channels to read (names or positions); all by default.
    supersample
        Sub-pixels per target pixel side.

    Returns
    -------
    numpy.ndarray
        ``(n_channels, height, width)`` float64.
    """
    image, _ = channel_index(image, channels)
    h, w = _raster_extent(image)
    m = np.linalg.inv(_check_affine(image_to_cs, "image_to_cs")) @ _check_affine(
        grid_to_cs, "grid_to_cs")
    gh, gw = (int(s) for s in grid_shape_yx)
    if supersample < 1:
        raise ValueError(f"`supersample` must be at least 1, not {supersample}.")
    sub = (np.arange(supersample) + 0.5) / supersample
    gy, gx = np.meshgrid(np.arange(gh, dtype=float), np.arange(gw, dtype=float), indexing="ij")
    # Source window covering the whole target grid, computed once.
    corners = np.array([[0, 0, 1], [gw, 0, 1], [0, gh, 1], [gw, gh, 1]], float) @ m.T
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 1, 0, w))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 1, 0, h))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, 0, h))
    n_c = int(image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return np.full((n_c, gh, gw), np.nan)
    src = _compute_window(image, y0, y1, x0, x1)
    total = np.zeros((n_c, gh, gw))
    n = np.zeros((n_c, gh, gw))
    for dy in sub:
        for dx in sub:
            sx = m[0, 0] * (gx + dx) + m[0, 1] * (gy + dy) + m[0, 2]
            sy = m[1, 0] * (gx + dx) + m[1, 1] * (gy + dy) + m[1, 2]
            ix, iy = np.floor(sx).astype(np.int64) - x0, np.floor(sy).astype(np.int64) - y0
            on = (ix >= 0) & (ix < x1 - x0) & (iy >= 0) & (iy < y1 - y0)
            v = src[:, np.clip(iy, 0, y1 - y0 - 1), np.clip(ix, 0, x1 - x0 - 1)]
            ok = on[None] & np.isfinite(v)
            total += np.where(ok, v, 0.0)
            n += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def element_raster(sdata: SpatialData, key: str, coordinate_system: str) -> tuple[object, np.ndarray]:
    """An image layer's finest ``(c, y, x)`` DataArray and its affine to a coordinate system.

    Parameters
    ----------
    sdata
        Holds the image layer.
    key
        Name of the image layer (a DataArray or a multiscale DataTree, whose ``scale0`` is used).
    coordinate_system
        Coordinate system to place it in.

    Returns
    -------
    tuple
        ``(DataArray, 3 x 3 affine)``.
    """
    from spatialdata.transformations import get_transformation

    if key not in sdata.images:
        raise KeyError(f"No image layer {key!r}; the SpatialData has images {list(sdata.images)}.")
    el = sdata.images[key]
    transforms = get_transformation(el, get_all=True)
    if coordinate_system not in transforms:
        raise ValueError(f"Image layer {key!r} is not placed in coordinate system "
                         f"{coordinate_system!r}; it is in {list(transforms)}.")
    affine = np.asarray(transforms[coordinate_system].to_affine_matrix(
        input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
    return image_levels(el)[0], affine


def layer_extent(sdata: SpatialData, view: SectionView, key: str) -> tuple[object, list[float]]:
    """An image layer's finest data and its extent in the full-resolution H&E pixels of a view.

    Parameters
    ----------
    sdata
        Holds the image layer.
    view
        The section whose H&E pixels the extent is given in (its coordinate system places both).
    key
        Name of the image layer, axis-aligned with the H&E (scaled and shifted, not rotated).

    Returns
    -------
    tuple
        ``(DataArray, [left, right, bottom, top])``: the ``(c, y, x)`` layer and its extent,
        as ``matplotlib.pyplot.imshow`` takes it over the H&E drawn in its pixels.
    """
    arr, to_cs = element_raster(sdata, key, view.coordinate_system)
    a = np.linalg.inv(view.image_to_cs) @ to_cs
    if abs(a[0, 1]) > 1e-6 or abs(a[1, 0]) > 1e-6:
        raise ValueError(f"Layer {key!r} is rotated relative to the H&E; plot it with "
                         "spatialdata-plot instead.")
    h, w = arr.shape[1:]
    x0, y0 = a[0, 2], a[1, 2]
    return arr, [x0, x0 + a[0, 0] * w, y0 + a[1, 1] * h, y0]


def layer_footprint_means(sdata: SpatialData, key: str, centres_cs: np.ndarray, diameter_cs: float,
                          coordinate_system: str, *, channels: list[str] | None = None,
                          supersample: int | None = None,
                          nan_as: float | None = None) -> np.ndarray:
    """Mean of an image layer of a SpatialData over disc footprints (see :func:`footprint_means`).

    Parameters
    ----------
    sdata
        Holds the layer ``images[key]`` (e.g. a super-resolved map, genes as channels).
    key
        Name of the image layer.
    centres_cs
        ``(n_spots, 2)`` disc centres (x, y) in ``coordinate_system``.
    diameter_cs
        Disc diameter in the coordinate system's units.
    coordinate_system
        Coordinate system of the centres; the layer is read through its transformation to it.
    channels
        Channels (e.g. genes) to read; all by default.
    supersample
        Sub-pixels per pixel side (automatic by default).
    nan_as
        Value the layer's NaN pixels (outside the tissue) are read as; left out by default.

    Returns
    -------
    numpy.ndarray
        ``(n_spots, n_channels)`` float64.

    Examples
    --------
    >>> means = layer_footprint_means(sdata, "diffst", centres, 145.0, "C2")  # doctest: +SKIP
    """
    raster, affine = element_raster(sdata, key, coordinate_system)
    return footprint_means(raster, affine, centres_cs, diameter_cs, channels=channels,
                           supersample=supersample, nan_as=nan_as)
