"""``ds.tl.segment_nuclei``: nuclei from the H&E's hematoxylin, as a labels element."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._docs import shared_parameters
from .._core._view import COARSE_IMAGE_UM, section_view
from ..pp import BASE_UM, nuclear_threshold

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Pixels whose mean RGB (in [0, 1]) is above this are the slide's white background, as in the
#: histology descriptors (their "non-white" pixels).
_WHITE = 0.85
#: Rows of the H&E deconvolved at once.
_STRIP_PIXELS = 4_000_000


@shared_parameters
def segment_nuclei(
    sdata: SpatialData,
    *,
    key_added: str = "diffst_nuclei",
    pixel_size_um: float | None = None,
    threshold: float | None = None,
    min_area_um2: float = 8.0,
    min_distance_um: float = 3.0,
    expand_um: float = 0.0,
    table_key: str | None = None,
    image_key: str | None = None,
    coordinate_system: str | None = None,
    microns_per_pixel: float | None = None,
    overwrite: bool = False,
) -> None:
    """Segment nuclei in the H&E's hematoxylin and add them as a labels element.

    The H&E is read at ``pixel_size_um``, its hematoxylin separated by colour deconvolution
    (scikit-image's ``rgb2hed``) and lightly smoothed; nuclei are the pixels above the nuclear
    level of the histology descriptors (:func:`diffst_sc.pp.nuclear_threshold`, here taken over
    the pixels that are not the slide's white background), opened once, with holes filled and
    specks under ``min_area_um2`` dropped. Touching nuclei are split by a
    watershed of the distance to the background from its peaks at least ``min_distance_um``
    apart. ``expand_um`` then grows each nucleus into its neighbourhood, without overlap
    (``skimage.segmentation.expand_labels``), as a rough cell.

    A quick, classical segmentation for :func:`cell_expression`, which takes any labels or
    shapes: a deep-learning segmentation (cellpose, stardist, e.g. through sopa) separates
    crowded nuclei better.

    Adds ``sdata.labels[key_added]``: a ``Labels2DModel`` (0 = background, nuclei 1, 2, ...)
    placed over the H&E in the section's coordinate system.

    Parameters
    ----------
    sdata
        A SpatialData with an H&E and the spots of a table (which give the H&E's scale).
    key_added
        Name of the new labels element.
    pixel_size_um
        Pixel size of the labels; by default the H&E's own, or :data:`diffst_sc.pp.BASE_UM`
        (1 um) if the H&E is finer.
    threshold
        Hematoxylin level of nuclei (``rgb2hed`` units); by default the descriptors' level.
    min_area_um2
        Smallest nucleus kept, in square micrometres.
    min_distance_um
        Smallest distance between the centres of two touching nuclei that are split.
    expand_um
        Distance each nucleus is grown by, in micrometres (0: nuclei only).
    {table_key}
    {image_key}
    {coordinate_system}
    {microns_per_pixel}
    overwrite
        Replace an existing labels element ``key_added``.

    Returns
    -------
    None
        The labels are added to ``sdata``.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.datasets.her2st_demo()
    >>> ds.tl.segment_nuclei(sdata, expand_um=3.0)
    >>> int(sdata.labels["diffst_nuclei"].max()) > 10_000
    True
    """
    from spatialdata.models import Labels2DModel
    from spatialdata.transformations import Scale, Sequence, get_transformation

    _check_options(sdata, key_added, overwrite, pixel_size_um=pixel_size_um,
                   min_area_um2=min_area_um2, min_distance_um=min_distance_um,
                   expand_um=expand_um)
    view = section_view(sdata, table_key=table_key, image_key=image_key,
                        coordinate_system=coordinate_system, microns_per_pixel=microns_per_pixel)
    um = float(pixel_size_um or max(view.microns_per_pixel, BASE_UM))
    if max(um, view.microns_per_pixel) > COARSE_IMAGE_UM:
        raise ValueError(
            f"Nuclei cannot be segmented at {max(um, view.microns_per_pixel):.3g} um per pixel "
            f"(the H&E has {view.microns_per_pixel:.3g}); they are 5-10 um wide and need "
            f"{COARSE_IMAGE_UM:g} um per pixel or finer. Use the full-resolution H&E "
            "(`image_key=`), or segment a finer image elsewhere and pass its labels or shapes "
            "to `ds.tl.cell_expression`.")
    rgb = view.image_at(um, dtype=np.uint8)
    labels = nuclei_labels(rgb, um, threshold=threshold, min_area_um2=min_area_um2,
                           min_distance_um=min_distance_um, expand_um=expand_um)
    full_h, full_w = view.image.shape[1:]
    to_he = Scale([full_h / labels.shape[0], full_w / labels.shape[1]], axes=("y", "x"))
    to_cs = get_transformation(sdata.images[view.image_key],
                               to_coordinate_system=view.coordinate_system)
    sdata.labels[key_added] = Labels2DModel.parse(
        labels, dims=("y", "x"), transformations={view.coordinate_system: Sequence([to_he,
                                                                                    to_cs])})


def nuclei_labels(rgb: np.ndarray, pixel_um: float, *, threshold: float | None = None, min_area_um2: float = 8.0,
                  min_distance_um: float = 3.0, expand_um: float = 0.0) -> np.ndarray:
    """Nuclei of an RGB H&E array, labelled 1, 2, ... (see :func:`segment_nuclei`).

    Parameters
    ----------
    rgb
        ``(3, y, x)`` uint8 H&E at ``pixel_um`` micrometres per pixel.
    pixel_um
        Its pixel size.
    threshold, min_area_um2, min_distance_um, expand_um
        As for :func:`segment_nuclei`.

    Returns
    -------
    numpy.ndarray
        ``(y, x)`` int32 labels, 0 for the background.
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import expand_labels, watershed

    if threshold is None:
        tissue = rgb[:, rgb.sum(0, dtype=np.uint16) <= 3 * _WHITE * 255][:, None, :]
        threshold = nuclear_threshold([tissue]) if tissue.size else np.inf
    hema = ndimage.gaussian_filter(_hematoxylin(rgb), sigma=0.5 / pixel_um)
    mask = ndimage.binary_opening(hema > threshold)
    blobs, _ = ndimage.label(ndimage.binary_fill_holes(mask))
    big = np.bincount(blobs.ravel()) * pixel_um**2 >= min_area_um2
    big[0] = False
    mask = big[blobs]
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    blobs = np.where(mask, blobs, 0)
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=max(1, round(min_distance_um / pixel_um)),
                           labels=blobs, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask).astype(np.int32)
    if expand_um > 0:
        labels = expand_labels(labels, distance=expand_um / pixel_um)
    return labels


def _hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """``(y, x)`` float32 hematoxylin of ``skimage.color.rgb2hed``, a strip of rows at a time."""
    from skimage.color import rgb2hed

    h, w = rgb.shape[1:]
    out = np.empty((h, w), np.float32)
    step = max(1, _STRIP_PIXELS // max(w, 1))
    for top in range(0, h, step):
        out[top:top + step] = rgb2hed(np.moveaxis(rgb[:, top:top + step], 0, -1))[..., 0]
    return out


def _check_options(sdata, key_added, overwrite, **positive) -> None:
    from spatialdata import sanitize_name

    if not isinstance(key_added, str) or not key_added or sanitize_name(key_added) != key_added:
        raise ValueError(f"key_added={key_added!r} cannot name a SpatialData element; use "
                         "letters, digits, '_', '-' and '.' only.")
    for kind, name, _ in sdata.gen_elements():
        if name.lower() != key_added.lower():
            continue
        if kind == "labels" and name == key_added and overwrite:
            continue
        what = ("Labels" if kind == "labels" else f"A {kind} element") + f" {name!r}"
        fix = "pass overwrite=True to replace it, or" if kind == "labels" else "please"
        raise ValueError(f"{what} already exists; {fix} choose another `key_added=`.")
    for name, value in positive.items():
        if value is None:
            continue
        bad = not np.isfinite(value) or value < 0 or (name == "pixel_size_um" and value == 0)
        if bad:
            raise ValueError(f"{name} must be a positive number of micrometres, got {value!r}.")
