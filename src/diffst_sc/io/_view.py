"""One internal view of a section, built from a SpatialData object, used by everything downstream."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._checks import MAKE_GENES_UNIQUE, check_counts, check_spots_in_image, check_unique_genes

#: Where ``diffst_sc`` records section metadata in ``table.uns``.
SECTION_UNS_KEY = "diffst_section"
#: ``obs`` column with each spot's counts over all genes, where a table holds only some genes
#: (``pp.degrade``'s tables, and the training copies ``fit`` makes of a section's model genes).
LIBRARY_KEY = "diffst_library_size"
#: ``obs`` column of ``pp.degrade``'s pseudo-spots: the measured spots their counts sum, over
#: those of a full block. A block cut by the tissue's edge measured only part of its footprint
#: (below 1); a block of spots grouped by bins may hold more than a full block's (above 1). A
#: table without the column measured every footprint whole.
MEASURED_KEY = "diffst_measured_fraction"
#: Visium's spot diameter, used when Space Ranger scale factors are present.
VISIUM_SPOT_DIAMETER_UM = 55.0
#: Visium's centre-to-centre spot distance. Space Ranger's ``spot_diameter_fullres`` is that of a
#: 65 um disc, not of the 55 um spot, so the pixel size is measured on the lattice instead.
VISIUM_SPOT_SPACING_UM = 100.0


@dataclass
class SectionView:
    """A section seen through one table, one set of spots and one H&E image.

    Attributes
    ----------
    name
        Name of the section (the coordinate system by default).
    adata
        The table annotating the spots, rows in the order of ``centres_px``.
    centres_px
        ``(n_spots, 2)`` spot centres as (x, y) in H&E pixels (full resolution).
    diameter_px
        Spot diameter in H&E pixels.
    image
        The full-resolution H&E as a lazy ``(c, y, x)`` array.
    image_to_cs
        ``3 x 3`` affine taking H&E pixel (x, y) to the coordinate system.
    microns_per_pixel
        Physical size of one H&E pixel.
    coordinate_system, table_key, image_key, shapes_key
        Where the pieces came from in the SpatialData object.
    layer
        The layer of ``adata`` holding expression (``None`` for ``X``).
    is_counts
        Whether that expression is raw integer counts (checked once, by :func:`section_view`).

    Examples
    --------
    >>> view = ds.io.section_view(sdata)  # doctest: +SKIP
    >>> view.expression(["ERBB2"]).shape, view.microns_per_pixel  # doctest: +SKIP
    """

    name: str
    adata: object
    centres_px: np.ndarray
    diameter_px: float
    image: object
    image_to_cs: np.ndarray
    microns_per_pixel: float
    coordinate_system: str
    table_key: str
    image_key: str
    shapes_key: str
    layer: str | None = None
    image_scales: list = field(default_factory=list)
    is_counts: bool = True

    @property
    def genes(self) -> list[str]:
        """Gene names of the table."""
        return list(map(str, self.adata.var_names))

    @property
    def n_spots(self) -> int:
        """Number of spots."""
        return self.centres_px.shape[0]

    @property
    def spacing_px(self) -> float:
        """Median centre-to-centre distance of neighbouring spots, in H&E pixels."""
        return spot_spacing(self.centres_px)

    @property
    def spot_diameter_um(self) -> float:
        """Spot diameter in micrometres."""
        return self.diameter_px * self.microns_per_pixel

    @property
    def spacing_um(self) -> float:
        """Spot spacing in micrometres."""
        return self.spacing_px * self.microns_per_pixel

    def expression(self, genes: list[str] | None = None) -> np.ndarray:
        """Dense ``(n_spots, n_genes)`` float32 expression of ``genes`` (all genes if ``None``)."""
        ad = self.adata if genes is None else self.adata[:, _gene_index(self.adata, genes)]
        x = ad.X if self.layer is None else ad.layers[self.layer]
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        return x.astype(np.float32, copy=False)

    def library_sizes(self) -> np.ndarray:
        """``(n_spots,)`` each spot's counts over all genes (see :func:`library_sizes`)."""
        return library_sizes(self.adata, self.layer)

    @property
    def measured_fraction(self) -> np.ndarray:
        """``(n_spots,)`` the share of each footprint that was measured (:data:`MEASURED_KEY`)."""
        return measured_fraction(self.adata)

    def footprint_expression(self, genes: list[str] | None = None) -> np.ndarray:
        """:meth:`expression` over each whole footprint: counts over its measured share.

        What the model reads: a pseudo-spot of a block cut by the tissue's edge summed fewer
        measured spots than its disc holds, and its counts, taken over the whole disc, would
        make the tissue's edge look several times poorer than it is.
        """
        return self.expression(genes) / self.measured_fraction[:, None]

    def footprint_library_sizes(self) -> np.ndarray:
        """:meth:`library_sizes` over each whole footprint (see :meth:`footprint_expression`)."""
        return footprint_library_sizes(self.adata, self.layer)

    def image_at(self, microns_per_pixel: float,
                 bbox_px: tuple[float, float, float, float] | None = None,
                 dtype=np.float32) -> np.ndarray:
        """The RGB H&E resampled to ``microns_per_pixel``, as ``(3, y, x)``.

        ``bbox_px`` ``(x0, y0, x1, y1)`` restricts it to a window, in full-resolution H&E pixels;
        ``dtype`` is ``numpy.float32`` (values in [0, 1]) or ``numpy.uint8`` (0-255).
        """
        from ..pp._histology import resample_image

        return resample_image(self.image_scales or [self.image], self.microns_per_pixel,
                              microns_per_pixel, bbox_px, dtype=dtype)


def measured_fraction(adata) -> np.ndarray:
    """``(n_obs,)`` ``obs[MEASURED_KEY]`` where the table records it (positive), else ones."""
    if MEASURED_KEY not in adata.obs.columns:
        return np.ones(adata.n_obs)
    f = adata.obs[MEASURED_KEY].to_numpy(np.float64)
    if not np.all(np.isfinite(f) & (f > 0)):
        raise ValueError(f"obs[{MEASURED_KEY!r}] must be positive (the share of each footprint "
                         "that its counts measured); drop the column to treat every footprint "
                         "as measured whole.")
    return f


def footprint_library_sizes(adata, layer: str | None = None) -> np.ndarray:
    """:func:`library_sizes` divided by :func:`measured_fraction`: counts over whole footprints."""
    return library_sizes(adata, layer) / measured_fraction(adata)


def library_sizes(adata, layer: str | None = None) -> np.ndarray:
    """``(n_obs,)`` each spot's counts over all genes.

    ``obs[LIBRARY_KEY]`` when the table records it (a table of some genes only, e.g.
    ``ds.pp.degrade``'s: the sum over a few genes would make a spot that merely expresses them
    little look empty), else the row sums of ``layer`` (``X`` if ``None``).
    """
    if LIBRARY_KEY in adata.obs:
        return adata.obs[LIBRARY_KEY].to_numpy(np.float64)
    x = adata.X if layer is None else adata.layers[layer]
    return np.asarray(x.sum(1), np.float64).ravel()


def spot_spacing(centres: np.ndarray) -> float:
    """Median nearest-neighbour distance of points (their lattice spacing)."""
    from scipy.spatial import cKDTree

    if len(centres) < 2:
        raise ValueError("At least two spots are needed to know their spacing; this section has "
                         f"{len(centres)}.")
    d, _ = cKDTree(centres).query(centres, k=2)
    return float(np.median(d[:, 1]))


def lattice_spacing_px(obs, centres: np.ndarray) -> float:
    """Centre-to-centre distance of neighbouring lattice positions, in the units of ``centres``.

    Fitted to all spots' array positions (``obs`` columns ``array_row``, ``array_col``) when
    present, which holds for any subset of the spots; else the median nearest-neighbour
    distance. On Visium's lattice (one parity of row + col) row neighbours are 2 columns apart.
    """
    if obs is not None and {"array_row", "array_col"} <= set(obs.columns) and len(obs) >= 3:
        row = obs["array_row"].to_numpy(float)
        col = obs["array_col"].to_numpy(float)
        a = np.c_[col, row, np.ones(len(row))]
        if np.linalg.matrix_rank(a) == 3:
            coef, *_ = np.linalg.lstsq(a, np.asarray(centres, float)[:, :2], rcond=None)
            parity = (row + col) % 2
            if (parity == parity[0]).all():
                return float(2 * np.linalg.norm(coef[0]))
            return float(np.sqrt(abs(np.linalg.det(coef[:2, :2]))))
    return spot_spacing(centres)


def _gene_index(adata, genes: list[str]) -> list[int]:
    names = pd.Index(map(str, adata.var_names))
    check_unique_genes(names, where="The table", fix=MAKE_GENES_UNIQUE)
    missing = [g for g in genes if g not in names]
    if missing:
        raise KeyError(
            f"{len(missing)} of the {len(genes)} requested genes are not in the table, e.g. "
            f"{missing[:5]}. Pick genes from `table.var_names` (see `ds.pp.select_genes`)."
        )
    return list(names.get_indexer(genes))


def section_view(
    sdata,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
    coordinate_system: str | None = None,
    layer: str | None = None,
    microns_per_pixel: float | None = None,
) -> SectionView:
    """Build the internal view of one section of a SpatialData object.

    Parameters
    ----------
    sdata
        A SpatialData object with a table annotating spots (circles or polygons) and an H&E image.
    table_key
        Table to use; the only table by default.
    image_key
        H&E image to use; by default the largest RGB(A) image in the coordinate system.
    coordinate_system
        Coordinate system relating spots and image; by default the one they share.
    layer
        Layer of the table holding raw counts; ``"counts"`` if present, else ``X``.
    microns_per_pixel
        H&E pixel size; read from the table's metadata or Space Ranger's scale factors if omitted.

    Returns
    -------
    SectionView

    Examples
    --------
    >>> import diffst_sc as ds
    >>> view = ds.io.section_view(ds.datasets.her2st_demo())
    >>> view.n_spots
    187
    """
    from spatialdata.transformations import get_transformation

    table_key = _pick_table(sdata, table_key)
    adata = sdata.tables[table_key]
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"Table {table_key!r} is empty ({adata.n_obs} spots x {adata.n_vars} "
                         "genes); it needs spots and genes to super-resolve.")
    attrs = adata.uns.get("spatialdata_attrs", {})
    region = _annotated_region(adata)
    if not isinstance(region, str) or region not in sdata.shapes:
        raise ValueError(
            f"Table {table_key!r} must annotate one shapes element (spot circles); it annotates "
            f"{region!r}. Parse it with `spatialdata.models.TableModel.parse(adata, region=..., "
            "region_key=..., instance_key=...)`."
        )
    shapes = sdata.shapes[region]
    if image_key is not None:
        _check_image_key(sdata, image_key)
    cs = _pick_coordinate_system(sdata, shapes, coordinate_system, image_key=image_key)
    image_key = _pick_image(sdata, cs, image_key)
    image_el = sdata.images[image_key]
    scales = _image_scales(image_el)
    image = scales[0]

    a_shapes = _affine(get_transformation(shapes, to_coordinate_system=cs))
    a_image = _affine(get_transformation(image_el, to_coordinate_system=cs))
    to_px = np.linalg.inv(a_image) @ a_shapes

    instance_key = attrs.get("instance_key")
    shapes = _order_like_table(shapes, adata, instance_key, attrs.get("region_key"), region)
    xy, diam = _centres_and_diameter(shapes)
    centres = (np.c_[xy, np.ones(len(xy))] @ to_px.T)[:, :2]
    diameter_px = float(diam * np.sqrt(abs(np.linalg.det(to_px[:2, :2]))))

    if layer is None and "counts" in adata.layers:
        layer = "counts"
    view = SectionView(
        name=cs, adata=adata, centres_px=centres, diameter_px=diameter_px, image=image,
        image_to_cs=a_image, microns_per_pixel=np.nan, coordinate_system=cs,
        table_key=table_key, image_key=image_key, shapes_key=region, layer=layer,
        image_scales=scales,
    )
    view.microns_per_pixel = _microns_per_pixel(view, microns_per_pixel)
    check_spots_in_image(centres, image.shape[1:], diameter_px)
    x = adata.X if layer is None else adata.layers[layer]
    view.is_counts = check_counts(x, where=f"table {table_key!r}"
                                  + (f" layer {layer!r}" if layer else ""))
    return view


def section_name(data, table_key: str | None = None) -> str | None:
    """The name :func:`section_view` gives the section of ``data``, or ``None`` if it has none.

    For a SpatialData, the coordinate system its spots and H&E share (the default
    ``coordinate_system`` of :func:`section_view`); for an AnnData, the name recorded in
    ``uns["diffst_section"]["name"]``. ``None`` where neither can be found.
    """
    import anndata as ad

    if isinstance(data, ad.AnnData):
        name = data.uns.get(SECTION_UNS_KEY, {}).get("name")
        return None if name is None else str(name)
    try:
        region = _annotated_region(data.tables[_pick_table(data, table_key)])
        return _pick_coordinate_system(data, data.shapes[region], None)
    except (KeyError, TypeError, ValueError):
        return None


def _annotated_region(adata):
    """The element a table annotates (``spatialdata_attrs["region"]``, unwrapped if a list of 1)."""
    region = adata.uns.get("spatialdata_attrs", {}).get("region")
    return region[0] if isinstance(region, list | tuple) and len(region) == 1 else region


def _pick_table(sdata, table_key):
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


def _pick_coordinate_system(sdata, element, cs, what: str = "spots", image_key=None):
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
            c in get_transformation(im, get_all=True) and _image_scales(im)[0].shape[0] in (3, 4)
            for im in sdata.images.values())]
    if not with_image:
        raise ValueError(f"No RGB H&E image shares a coordinate system with the {what} (they "
                         f"are in {element_cs}; images: {_describe_images(sdata)}); add the H&E "
                         "to one of them.")
    # spatialdata-io's Visium reader adds downscaled systems; the full-resolution one is the
    # shortest name, which is also the dataset id.
    return sorted(with_image, key=lambda c: (c != "global", len(c)))[0]


def _describe_images(sdata) -> str:
    """Each image element's name and channel count, for messages: ``'he' (3 channels), ...``."""
    if not len(sdata.images):
        return "none"
    n_c = {k: _image_scales(el)[0].shape[0] for k, el in sdata.images.items()}
    return ", ".join(f"{k!r} ({n} channel{'s' if n != 1 else ''})" for k, n in n_c.items())


def _check_image_key(sdata, image_key: str) -> None:
    """Raise unless ``image_key`` names an RGB(A) image element of ``sdata``.

    Raises
    ------
    KeyError
        When there is no such image (the message lists the images).
    ValueError
        When it is not RGB(A): the message names its channels and shape, and the RGB images to
        pass instead.
    """
    from spatialdata.models import get_channel_names

    if image_key not in sdata.images:
        raise KeyError(f"No image {image_key!r}; the SpatialData has images "
                       f"{list(sdata.images)}. Pass the H&E's name as `image_key=`.")
    im = _image_scales(sdata.images[image_key])[0]
    n_c = im.shape[0]
    if n_c in (3, 4):
        return
    channels = list(map(str, get_channel_names(im))) if "c" in im.coords else []
    rgb = [k for k, el in sdata.images.items() if _image_scales(el)[0].shape[0] in (3, 4)]
    fix = (f"pass the RGB H&E element's name as `image_key=` (RGB images here: {rgb})" if rgb
           else "add the RGB H&E as an image element and pass its name as `image_key=`")
    raise ValueError(f"Image {image_key!r} has {n_c} channel{'s' if n_c != 1 else ''} "
                     f"{channels} (shape "
                     f"{tuple(im.shape)}, (c, y, x)), but an RGB H&E has 3 channels, or 4 with "
                     f"alpha; {fix}.")


def _image_scales(el) -> list:
    """The levels of a (possibly multiscale) image element, finest first, as DataArrays."""
    if hasattr(el, "children") and len(getattr(el, "children", {})):
        return [el[k]["image"] for k in sorted(el.children, key=lambda s: int(s.replace("scale", "")))]
    return [el]


def _pick_image(sdata, cs, image_key):
    from spatialdata.transformations import get_transformation

    if image_key is not None:
        _check_image_key(sdata, image_key)
        el = sdata.images[image_key]
        if cs not in get_transformation(el, get_all=True):
            raise ValueError(f"Image {image_key!r} is not in coordinate system {cs!r}.")
        return image_key
    cands = []
    for k, el in sdata.images.items():
        if cs not in get_transformation(el, get_all=True):
            continue
        im = _image_scales(el)[0]
        if im.shape[0] in (3, 4):
            cands.append((int(np.prod(im.shape[1:])), k))
    if not cands:
        raise ValueError(f"No RGB H&E image in coordinate system {cs!r} (images: "
                         f"{list(sdata.images)}). Add one, or pass `image_key=`.")
    return max(cands)[1]


def _affine(transformation) -> np.ndarray:
    return np.asarray(transformation.to_affine_matrix(input_axes=("x", "y"),
                                                       output_axes=("x", "y")), dtype=float)


def _order_like_table(shapes, adata, instance_key, region_key, region):
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


def _centres_and_diameter(shapes):
    geom = shapes.geometry
    xy = np.c_[geom.centroid.x.to_numpy(), geom.centroid.y.to_numpy()]
    if "radius" in shapes.columns:
        diam = 2 * float(np.median(shapes["radius"].to_numpy()))
    else:
        diam = 2 * float(np.sqrt(np.median(geom.area.to_numpy()) / np.pi))
    return xy, diam


def _microns_per_pixel(view: SectionView, given: float | None) -> float:
    if given is not None:
        if not np.isfinite(given) or given <= 0:
            raise ValueError(f"microns_per_pixel must be a positive number, not {given!r}.")
        return float(given)
    meta = view.adata.uns.get(SECTION_UNS_KEY, {})
    if "microns_per_pixel" in meta:
        # Recorded for the image the table was read with; rescale if another level is used.
        ref_diam = meta.get("spot_diameter_px", view.diameter_px)
        return float(meta["microns_per_pixel"]) * ref_diam / view.diameter_px
    if "spatial" in view.adata.uns:
        return VISIUM_SPOT_SPACING_UM / lattice_spacing_px(view.adata.obs, view.centres_px)
    spacing = view.spacing_px
    ratio = view.diameter_px / spacing
    guess = 55.0 / view.diameter_px if ratio > 0.52 else 100.0 / view.diameter_px
    warnings.warn(
        f"The H&E pixel size is not recorded; assuming {guess:.3f} um/px from the spots' geometry "
        f"(diameter/spacing = {ratio:.2f}: {'Visium' if ratio > 0.52 else 'legacy ST'}-like). "
        "Pass `microns_per_pixel=` to be exact.",
        UserWarning,
        stacklevel=3,
    )
    return guess
