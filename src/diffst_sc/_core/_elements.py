"""Helpers over SpatialData elements: which table, image and coordinate system, and their geometry.

Every room reads elements through these, so that a choice (the table a function works on, the
H&E it reads, the coordinate system they share) is made one way everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._checks import blank_colour


def annotated_region(adata):
    """The element a table annotates (``spatialdata_attrs["region"]``, unwrapped if a list of 1)."""
    region = adata.uns.get("spatialdata_attrs", {}).get("region")
    return region[0] if isinstance(region, list | tuple) and len(region) == 1 else region


def table_region(sdata, table_key: str) -> str:
    """The shapes element (the spots) that table ``table_key`` annotates.

    Raises
    ------
    ValueError
        When the table annotates no shapes element of ``sdata``, or several.
    """
    region = annotated_region(sdata.tables[table_key])
    if not isinstance(region, str) or region not in sdata.shapes:
        raise ValueError(
            f"Table {table_key!r} must annotate one shapes element (spot circles); it annotates "
            f"{region!r}. Parse it with `spatialdata.models.TableModel.parse(adata, region=..., "
            "region_key=..., instance_key=...)`.")
    return region


def table_spots(sdata, table_key: str):
    """The spots table ``table_key`` annotates, one row per table row, in the table's order."""
    region = table_region(sdata, table_key)
    adata = sdata.tables[table_key]
    attrs = adata.uns.get("spatialdata_attrs", {})
    return order_like_table(sdata.shapes[region], adata, attrs.get("instance_key"),
                            attrs.get("region_key"), region)


def pick_table(sdata, table_key):
    tables = list(sdata.tables.keys())
    if table_key is not None:
        if table_key not in sdata.tables:
            raise KeyError(f"No table {table_key!r}; the SpatialData has tables {tables}.")
        return table_key
    if not tables:
        raise ValueError("The SpatialData has no table: add one annotating the spots "
                         "(`sdata.tables['table'] = TableModel.parse(...)`).")
    if len(tables) > 1:
        if "table" in tables:
            return "table"
        raise ValueError(f"The SpatialData has several tables {tables}: pass `table_key=`.")
    return tables[0]


def pick_coordinate_system(sdata, element, cs, what: str = "spots", image_key=None):
    """The coordinate system shared by ``element`` and an RGB(A) image (``cs`` checked if given).

    With ``image_key``, the system must be one of that image's.
    """
    from spatialdata.transformations import get_transformation

    element_cs = list(get_transformation(element, get_all=True))
    if cs is not None:
        if cs not in sdata.coordinate_systems:
            raise ValueError(f"Unknown coordinate system {cs!r}; this SpatialData has "
                             f"{list(sdata.coordinate_systems)}. Pass one of them as "
                             "`coordinate_system=`.")
        if cs not in element_cs:
            raise ValueError(f"The {what} are not placed in coordinate system {cs!r}; they are "
                             f"in {element_cs}.")
        return cs
    if image_key is not None:
        image_cs = list(get_transformation(sdata.images[image_key], get_all=True))
        with_image = [c for c in element_cs if c in image_cs]
        if not with_image:
            raise ValueError(f"Image {image_key!r} shares no coordinate system with the {what} "
                             f"(it is in {image_cs}, they are in {element_cs}); pass the H&E "
                             "registered to them as `image_key=`, or add a transformation.")
    else:
        with_image = [c for c in element_cs if any(
            c in get_transformation(im, get_all=True) and image_levels(im)[0].shape[0] in (3, 4)
            for im in sdata.images.values())]
    if not with_image:
        raise ValueError(f"No RGB H&E image shares a coordinate system with the {what} (they "
                         f"are in {element_cs}; images: {describe_images(sdata)}); add the H&E "
                         "to one of them.")
    # spatialdata-io's Visium reader adds downscaled systems; the full-resolution one is the
    # shortest name, which is also the dataset id.
    return sorted(with_image, key=lambda c: (c != "global", len(c)))[0]


def describe_images(sdata) -> str:
    """Each image element's name and channel count, for messages: ``'he' (3 channels), ...``."""
    if not len(sdata.images):
        return "none"
    n_c = {k: image_levels(el)[0].shape[0] for k, el in sdata.images.items()}
    return ", ".join(f"{k!r} ({n} channel{'s' if n != 1 else ''})" for k, n in n_c.items())


def check_image_key(sdata, image_key: str) -> None:
    """Raise unless ``image_key`` names an RGB(A) image element of ``sdata`` that is not blank.

    Raises
    ------
    KeyError
        When there is no such image (the message lists the images).
    ValueError
        When it is not RGB(A): the message names its channels and shape, and the RGB images to
        pass instead; when it is blank (one colour): the message says so and what to pass.
    """
    if image_key not in sdata.images:
        raise KeyError(f"No image {image_key!r}; the SpatialData has images "
                       f"{list(sdata.images)}. Pass the H&E's name as `image_key=`.")
    im = image_levels(sdata.images[image_key])[0]
    n_c = im.shape[0]
    if n_c not in (3, 4):
        rgb = [k for k, el in sdata.images.items() if image_levels(el)[0].shape[0] in (3, 4)]
        fix = (f"pass the RGB H&E element's name as `image_key=` (RGB images here: {rgb})" if rgb
               else "add the RGB H&E as an image element and pass its name as `image_key=`")
        raise ValueError(f"Image {image_key!r} has {n_c} channel{'s' if n_c != 1 else ''} "
                         f"{_channels(im)} (shape "
                         f"{tuple(im.shape)}, (c, y, x)), but an RGB H&E has 3 channels, or 4 with "
                         f"alpha; {fix}.")
    problem = image_problem(sdata.images[image_key])
    if problem is not None:
        usable = [k for k, el in sdata.images.items()
                  if k != image_key and image_problem(el) is None]
        fix = (f"Pass another image as `image_key=` (usable H&E images here: {usable})" if usable
               else "Add the H&E as an image element and pass its name as `image_key=`")
        raise ValueError(f"Image {image_key!r} cannot be the H&E: it is {problem}. {fix}, or "
                         "check the file it was read from.")


def image_problem(el) -> str | None:
    """Why image element ``el`` cannot be the H&E, for messages; ``None`` when it can.

    Not RGB(A) (1, 2 or more than 4 channels), or blank: one colour over a sample of its pixels
    read cheaply (a coarse stored level or a strided subsample; see
    :func:`~diffst_sc._core.image_sample`), such as Space Ranger's all-black hires PNG.
    """
    from ._image import image_sample

    levels = image_levels(el)
    n_c = levels[0].shape[0]
    if n_c not in (3, 4):
        return (f"not RGB(A): {n_c} channel{'s' if n_c != 1 else ''} {_channels(levels[0])}, "
                "where an H&E has 3 (or 4 with alpha)")
    colour = blank_colour(image_sample(levels))
    if colour is not None:
        return f"blank: every sampled pixel has the colour {colour} (R, G, B)"
    return None


def _channels(im) -> list[str]:
    from spatialdata.models import get_channel_names

    return list(map(str, get_channel_names(im))) if "c" in im.coords else []


def image_levels(el) -> list:
    """The levels of a (possibly multiscale) image element, finest first, as DataArrays."""
    from spatialdata import get_pyramid_levels
    from xarray import DataArray

    # spatialdata's helper reads multiscale trees only (0.7: a single scale raises KeyError)
    return [el] if isinstance(el, DataArray) else list(get_pyramid_levels(el))


def pick_image(sdata, cs, image_key):
    """The H&E of coordinate system ``cs``: ``image_key`` (checked), else the finest usable one.

    Usable: RGB(A) and not blank (:func:`image_problem`). Finest: the smallest pixel in ``cs``
    units (then the most pixels). A blank RGB image skipped on the way is warned about.

    Raises
    ------
    ValueError
        When no image of ``cs`` is usable: the message lists each image of the section and what
        is wrong with it, and the fix.
    """
    from spatialdata.transformations import get_transformation

    if image_key is not None:
        check_image_key(sdata, image_key)
        el = sdata.images[image_key]
        if cs not in get_transformation(el, get_all=True):
            raise ValueError(f"Image {image_key!r} is not in coordinate system {cs!r}.")
        return image_key
    problems = {}
    for k in _finest_first(sdata, cs):
        problem = image_problem(sdata.images[k])
        if problem is None:
            _warn_skipped(problems, k)
            return k
        problems[k] = problem
    for k, el in sdata.images.items():
        if k not in problems:
            problems[k] = (f"not in coordinate system {cs!r} (it is in "
                           f"{list(get_transformation(el, get_all=True))})")
    listed = "; ".join(f"{k!r} is {p}" for k, p in problems.items()) or "there are none"
    raise ValueError(f"No usable H&E image in coordinate system {cs!r}: {listed}. Pass the H&E's "
                     "name as `image_key=`, or check the image files the section was read from "
                     "(a blank image is often a placeholder, e.g. a Space Ranger hires PNG "
                     "written empty).")


def _finest_first(sdata, cs) -> list[str]:
    """The images of ``cs``, smallest pixel (in ``cs`` units) first, then most pixels first."""
    from spatialdata.transformations import get_transformation

    keyed = []
    for k, el in sdata.images.items():
        if cs not in get_transformation(el, get_all=True):
            continue
        area = abs(np.linalg.det(affine_matrix(get_transformation(el, cs))[:2, :2]))
        keyed.append((area, -int(np.prod(image_levels(el)[0].shape[1:])), k))
    return [k for *_, k in sorted(keyed)]


def _warn_skipped(problems: dict, chosen: str) -> None:
    """Warn that finer RGB images were skipped as blank on the way to ``chosen``."""
    import warnings

    blank = {k: p for k, p in problems.items() if p.startswith("blank")}
    if blank:
        listed = "; ".join(f"{k!r} is {p}" for k, p in blank.items())
        warnings.warn(f"Skipped finer images with no histology ({listed}); reading the H&E from "
                      f"{chosen!r}. Pass `image_key=` to choose another.", UserWarning,
                      stacklevel=4)


def affine_matrix(transformation) -> np.ndarray:
    return np.asarray(transformation.to_affine_matrix(input_axes=("x", "y"),
                                                       output_axes=("x", "y")), dtype=float)


def order_like_table(shapes, adata, instance_key, region_key, region):
    if instance_key is None or instance_key not in adata.obs:
        if len(shapes) != adata.n_obs:
            raise ValueError("The table does not say which spot each row is (no instance_key) "
                             "and the numbers of rows and spots differ.")
        return shapes
    obs = adata.obs
    if region_key is not None and region_key in obs:
        if not (obs[region_key].astype(str) == region).all():
            raise ValueError(f"The table annotates several regions; keep only rows of {region!r}.")
    ids = obs[instance_key].to_numpy()
    missing = pd.Index(ids).difference(shapes.index)
    if len(missing):
        raise ValueError(f"{len(missing)} table rows have no spot in shapes {region!r}, e.g. "
                         f"{list(missing[:3])}.")
    return shapes.loc[ids]


def centres_and_diameter(shapes):
    geom = shapes.geometry
    xy = np.c_[geom.centroid.x.to_numpy(), geom.centroid.y.to_numpy()]
    if "radius" in shapes.columns:
        diam = 2 * float(np.median(shapes["radius"].to_numpy()))
    else:
        diam = 2 * float(np.sqrt(np.median(geom.area.to_numpy()) / np.pi))
    return xy, diam
