"""Validation of user data at the boundary, with errors that say how to fix the input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp


class NotCountsWarning(UserWarning):
    """Expression values are not raw integer counts (e.g. already normalised).

    Examples
    --------
    >>> import warnings, diffst_sc as ds
    >>> warnings.filterwarnings("ignore", category=ds.io.NotCountsWarning)
    """


class HistologyUninformativeWarning(UserWarning):
    """On this section the H&E explains nothing of how spots depart from their interpolation.

    Measured on the section's own spots summed into pseudo-spots: for the genes it names, the
    map is the interpolated spots (``uns[key]["histology_weight"]`` holds each gene's weight).

    Examples
    --------
    >>> import warnings, diffst_sc as ds
    >>> warnings.filterwarnings("ignore", category=ds.io.HistologyUninformativeWarning)
    """


class NetworkUninformativeWarning(UserWarning):
    """A Diff-ST network adds nothing to its histology model's map on held-out tiles.

    ``ds.tl.fit(..., deep=True)`` keeps a fold of the training pairs' tiles out of training and
    scales the network's residual by what it gains there (``DiffST.residual_scale``); at 0 the
    network's maps are its histology model's.

    Examples
    --------
    >>> import warnings, diffst_sc as ds
    >>> warnings.filterwarnings("ignore", category=ds.io.NetworkUninformativeWarning)
    """


class CoarseImageWarning(UserWarning):
    """The H&E is too coarse (over about 4 um per pixel) for its histology to resolve cells.

    Examples
    --------
    >>> import warnings, diffst_sc as ds
    >>> warnings.filterwarnings("ignore", category=ds.io.CoarseImageWarning)
    """


def _values(x) -> np.ndarray:
    if sp.issparse(x):
        return x.data
    return np.asarray(x).ravel()


def check_counts(x, *, where: str = "the table", matrix: str | None = None) -> bool:
    """Check an expression matrix; return ``True`` when it holds raw integer counts.

    Parameters
    ----------
    x
        The matrix, dense or sparse.
    where
        Where it is, for the messages (e.g. ``"section 'C2'"``).
    matrix
        How a user reaches it, e.g. ``"adata.layers['counts']"``, for the hint that fixes
        NaN values; without it the hint names no attribute.

    Raises
    ------
    ValueError
        On NaN, infinite or negative values.
    """
    v = _values(x)
    if v.size and not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"Expression in {where} is not numeric (dtype {v.dtype}).")
    if v.size == 0:
        return True
    if not np.isfinite(v).all():
        n = int((~np.isfinite(v)).sum())
        fill = (f"`{matrix} = np.nan_to_num({matrix})`" if matrix is not None
                else "with `np.nan_to_num` on that matrix")
        raise ValueError(f"Expression in {where} has {n} NaN or infinite values. Fill or drop "
                         f"them first, e.g. {fill}, or drop the spots.")
    if (v < 0).any():
        raise ValueError(f"Expression in {where} has {int((v < 0).sum())} negative values. "
                         "diffst_sc needs raw counts (or non-negative normalised values): pass "
                         "the raw counts layer with `layer=`, not scaled or centred data.")
    return bool(np.allclose(v, np.round(v)))


def matrix_name(layer: str | None) -> str:
    """How a user reaches the matrix of ``layer``: ``adata.X`` or ``adata.layers[...]``."""
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def warn_if_not_counts(is_counts: bool, *, where: str = "the table") -> None:
    """Warn that non-integer values are treated as expression in count-like units."""
    if not is_counts:
        warnings.warn(
            f"Expression in {where} is not integer counts (it looks normalised). diffst_sc "
            "proceeds and treats the values as non-negative expression per spot; the output "
            "keeps their units. To silence this, pass raw counts with `layer=` or filter "
            "`diffst_sc.io.NotCountsWarning`.",
            NotCountsWarning,
            stacklevel=3,
        )


#: How to fix spots that miss a SpatialData's image, for :func:`check_spots_in_image`.
SPOTS_OFF_IMAGE_FIX = ("The spot coordinates and the image do not match: check the image "
                       "(full-resolution vs downscaled) and the transformations, or pass "
                       "`image_key=` / `coordinate_system=`.")


def check_spots_in_image(centres_px: np.ndarray, image_yx: tuple[int, int],
                         diameter_px: float, *, fix: str = SPOTS_OFF_IMAGE_FIX) -> None:
    """Raise if spot centres fall outside the image (wrong transform or wrong image).

    ``fix`` says what to do about it; the default suits a SpatialData (``section_view``).
    """
    h, w = image_yx
    tol = diameter_px / 2
    out = ((centres_px[:, 0] < -tol) | (centres_px[:, 0] > w + tol)
           | (centres_px[:, 1] < -tol) | (centres_px[:, 1] > h + tol))
    if out.any():
        bad = centres_px[out][:3].round(1).tolist()
        raise ValueError(
            f"{int(out.sum())} of {len(centres_px)} spots lie outside the {w} x {h} px image "
            f"(x, y of the first: {bad}). {fix}"
        )


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Return an H&E as ``(y, x, 3)``; accept ``(y, x, 3|4)`` or ``(3|4, y, x)``.

    Raises
    ------
    ValueError
        For a greyscale ``(y, x)`` image and for other channel counts: the model reads the
        colours of an H&E stain, which a grey image does not hold.
    """
    im = np.asarray(image)
    if im.ndim == 2:
        raise ValueError(f"The image is greyscale (shape {im.shape}, one channel), but diffst_sc "
                         "reads histology from the colours of an RGB H&E. Pass the colour H&E as "
                         "an array (y, x, 3) or (3, y, x), not a grey or single-stain image.")
    if im.ndim != 3:
        raise ValueError(f"The image must be 3-D (y, x, channels); got shape {im.shape}.")
    if im.shape[-1] in (3, 4):
        return im[..., :3]
    if im.shape[0] in (3, 4):
        return np.moveaxis(im[:3], 0, -1)
    raise ValueError(f"The image has shape {im.shape}: expected RGB(A) channels first or last "
                     "(y, x, 3) / (3, y, x). Pass the H&E, not a fluorescence stack.")


#: Sampled pixels per side when an image is checked for content (see :func:`blank_colour`).
CHECK_SIDE = 256


def blank_colour(rgb: np.ndarray) -> tuple[int, ...] | None:
    """The one colour of ``rgb`` where it holds nothing else, else ``None``.

    ``rgb`` is ``(3, y, x)`` in 0-255 (a sample of an image's pixels); it is blank when no
    channel varies by more than one level, as in an all-black placeholder PNG.
    """
    rgb = np.asarray(rgb, dtype=np.float64).reshape(rgb.shape[0], -1)
    if rgb.shape[1] == 0:
        return None
    if np.all(rgb.max(1) - rgb.min(1) <= 1.0):
        return tuple(int(round(v)) for v in rgb.mean(1))
    return None


def blank_problem(rgb_yxc: np.ndarray) -> str | None:
    """``"blank: ..."`` if the ``(y, x, 3)`` 0-255 image holds one colour (see above), else None.

    Checked on a strided subsample of about :data:`CHECK_SIDE` pixels a side.
    """
    h, w = rgb_yxc.shape[:2]
    step = max(1, -(-max(h, w) // CHECK_SIDE))
    colour = blank_colour(np.moveaxis(np.asarray(rgb_yxc[::step, ::step]), -1, 0))
    if colour is None:
        return None
    return f"blank: every sampled pixel of its {w} x {h} px has the colour {colour} (R, G, B)"


def check_not_blank(rgb_yxc: np.ndarray, *, what: str = "The image", fix: str) -> None:
    """Raise if the ``(y, x, 3)`` 0-255 image is blank (:func:`blank_problem`).

    ``what`` names the image in the message, ``fix`` says what to pass instead.
    """
    problem = blank_problem(rgb_yxc)
    if problem is not None:
        raise ValueError(f"{what} is {problem}, so there is no histology to read. {fix}")


def check_layer(adata, layer: str | None, *, where: str = "the table") -> None:
    """Raise unless ``layer`` is ``None`` (``X``) or a layer of ``adata``.

    Raises
    ------
    KeyError
        Naming the layer, the table's layers and what to pass.
    """
    if layer is None or layer in adata.layers:
        return
    layers = list(adata.layers)
    have = f"its layers are {layers}" if layers else "it has no layers"
    to_pass = "one of them as `layer=`, or " if layers else ""
    raise KeyError(f"No layer {layer!r} in {where}; {have}. Pass {to_pass}`layer=None` to read "
                   "the expression in `X`.")


#: How to fix a table's duplicated gene names, for the messages that refuse them.
MAKE_GENES_UNIQUE = ("Make them unique first (`adata.var_names_make_unique()`) or drop the "
                     "duplicated columns.")


def check_unique_genes(names, *, where: str, fix: str) -> None:
    """Raise naming the duplicated gene names of ``names`` (``where`` they are, ``fix`` them)."""
    names = pd.Index(list(map(str, names)))
    if not names.is_unique:
        dups = list(names[names.duplicated()].unique())
        raise ValueError(f"{where} has {len(dups)} duplicated gene name(s): {dups[:10]}"
                         f"{' ...' if len(dups) > 10 else ''}. {fix}")


def check_new_names(key_added, sdata=None) -> None:
    """Raise before any work when spatialdata would refuse the layers named after ``key_added``.

    ``key_added`` must be a valid element name (letters, digits, ``_``, ``-`` and ``.``, not
    starting with ``__``), and neither ``key_added``, ``key_added + "_std"`` (images) nor
    ``key_added + "_table"`` (a table) may clash with an element of ``sdata`` whose name differs
    only in case or that is of another type: spatialdata refuses both.

    Raises
    ------
    ValueError
        Naming the bad name, the rule and a valid alternative.
    """
    # spatialdata's own rule, so that the check never drifts from what it refuses at writing
    from spatialdata import sanitize_name
    from spatialdata._core.validation import check_valid_name

    try:
        check_valid_name(key_added)
    except (TypeError, ValueError) as err:
        hint = ""
        if isinstance(key_added, str) and key_added:
            hint = f", e.g. key_added={sanitize_name(key_added)!r}"
        raise ValueError(f"key_added={key_added!r} cannot name a SpatialData element: {err} "
                         f"Choose another name{hint}.") from None
    if sdata is None:
        return
    wanted = {key_added: "images", key_added + "_std": "images", key_added + "_table": "tables"}
    for kind, name, _ in sdata.gen_elements():
        for new, new_kind in wanted.items():
            if name.lower() == new.lower() and (name != new or kind != new_kind):
                raise ValueError(
                    f"key_added={key_added!r} would add {new_kind} element {new!r}, but the "
                    f"SpatialData has {kind} element {name!r}; spatialdata refuses names that "
                    "differ only in case or are shared by two kinds of element. Choose another "
                    "key_added=."
                )

