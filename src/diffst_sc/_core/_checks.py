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


def check_spots_in_image(centres_px: np.ndarray, image_yx: tuple[int, int],
                         diameter_px: float) -> None:
    """Raise if spot centres fall outside the image (wrong transform or wrong image)."""
    h, w = image_yx
    tol = diameter_px / 2
    out = ((centres_px[:, 0] < -tol) | (centres_px[:, 0] > w + tol)
           | (centres_px[:, 1] < -tol) | (centres_px[:, 1] > h + tol))
    if out.any():
        bad = centres_px[out][:3].round(1).tolist()
        raise ValueError(
            f"{int(out.sum())} of {len(centres_px)} spots lie outside the {w} x {h} px image "
            f"(x, y of the first: {bad}). The spot coordinates and the image do not match: check "
            "the image (full-resolution vs downscaled) and the transformations, or pass "
            "`image_key=` / `coordinate_system=`."
        )


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Return an H&E as ``(y, x, 3)``; accept ``(y, x, 3|4)``, ``(3|4, y, x)`` or grey ``(y, x)``."""
    im = np.asarray(image)
    if im.ndim == 2:
        return np.repeat(im[..., None], 3, axis=2)
    if im.ndim != 3:
        raise ValueError(f"The image must be 2-D or 3-D (y, x, channels); got shape {im.shape}.")
    if im.shape[-1] in (3, 4):
        return im[..., :3]
    if im.shape[0] in (3, 4):
        return np.moveaxis(im[:3], 0, -1)
    raise ValueError(f"The image has shape {im.shape}: expected RGB(A) channels first or last "
                     "(y, x, 3) / (3, y, x). Pass the H&E, not a fluorescence stack.")


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

