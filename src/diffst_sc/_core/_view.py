"""One internal view of a section, built from a SpatialData object, used by everything downstream."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core._docs import shared_parameters
from ._checks import (
    MAKE_GENES_UNIQUE,
    CoarseImageWarning,
    check_counts,
    check_layer,
    check_spots_in_image,
    check_unique_genes,
)
from ._elements import (
    affine_matrix,
    annotated_region,
    centres_and_diameter,
    check_image_key,
    image_levels,
    pick_coordinate_system,
    pick_image,
    pick_table,
    table_region,
    table_spots,
)
from ._lattice import lattice_spacing_px, spot_spacing

if TYPE_CHECKING:
    from spatialdata import SpatialData

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


#: H&E pixels coarser than this (micrometres) cannot resolve cells: maps read from such an image
#: are close to an interpolation of the spots, and :func:`section_view` warns.
COARSE_IMAGE_UM = 4.0


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
    >>> from diffst_sc._core import section_view
    >>> view = section_view(sdata)  # doctest: +SKIP
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
        ad = self.adata if genes is None else self.adata[:, gene_indices(self.adata, genes)]
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
        from ._image import resample_image

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


def gene_indices(adata, genes: list[str]) -> list[int]:
    names = pd.Index(map(str, adata.var_names))
    check_unique_genes(names, where="The table", fix=MAKE_GENES_UNIQUE)
    missing = [g for g in genes if g not in names]
    if missing:
        raise KeyError(
            f"{len(missing)} of the {len(genes)} requested genes are not in the table, e.g. "
            f"{missing[:5]}. Pick genes from `table.var_names` (see `ds.pp.select_genes`)."
        )
    return list(names.get_indexer(genes))


@shared_parameters
def section_view(
    sdata: SpatialData,
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
    {table_key}
    {image_key}
    {coordinate_system}
    {layer}
    {microns_per_pixel}

    Returns
    -------
    SectionView

    Examples
    --------
    >>> import diffst_sc as ds
    >>> from diffst_sc._core import section_view
    >>> view = section_view(ds.datasets.her2st_demo())
    >>> view.n_spots
    187
    """
    from spatialdata.transformations import get_transformation

    table_key = pick_table(sdata, table_key)
    adata = sdata.tables[table_key]
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"Table {table_key!r} is empty ({adata.n_obs} spots x {adata.n_vars} "
                         "genes); it needs spots and genes to super-resolve.")
    if layer is None and "counts" in adata.layers:
        layer = "counts"
    check_layer(adata, layer, where=f"table {table_key!r}")
    region = table_region(sdata, table_key)
    shapes = sdata.shapes[region]
    if image_key is not None:
        check_image_key(sdata, image_key)
    cs = pick_coordinate_system(sdata, shapes, coordinate_system, image_key=image_key)
    image_key = pick_image(sdata, cs, image_key)
    image_el = sdata.images[image_key]
    scales = image_levels(image_el)
    image = scales[0]

    a_shapes = affine_matrix(get_transformation(shapes, to_coordinate_system=cs))
    a_image = affine_matrix(get_transformation(image_el, to_coordinate_system=cs))
    to_px = np.linalg.inv(a_image) @ a_shapes

    shapes = table_spots(sdata, table_key)
    xy, diam = centres_and_diameter(shapes)
    centres = (np.c_[xy, np.ones(len(xy))] @ to_px.T)[:, :2]
    diameter_px = float(diam * np.sqrt(abs(np.linalg.det(to_px[:2, :2]))))

    view = SectionView(
        name=cs, adata=adata, centres_px=centres, diameter_px=diameter_px, image=image,
        image_to_cs=a_image, microns_per_pixel=np.nan, coordinate_system=cs,
        table_key=table_key, image_key=image_key, shapes_key=region, layer=layer,
        image_scales=scales,
    )
    view.microns_per_pixel = _microns_per_pixel(view, microns_per_pixel)
    check_spots_in_image(centres, image.shape[1:], diameter_px)
    _warn_if_coarse(view)
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
        region = annotated_region(data.tables[pick_table(data, table_key)])
        return pick_coordinate_system(data, data.shapes[region], None)
    except (KeyError, TypeError, ValueError):
        return None


def _warn_if_coarse(view: SectionView) -> None:
    """Warn when the H&E is too coarse for its histology to say more than the spots."""
    if view.microns_per_pixel > COARSE_IMAGE_UM:
        warnings.warn(
            f"The H&E {view.image_key!r} has {view.microns_per_pixel:.1f} um per pixel, coarser "
            f"than {COARSE_IMAGE_UM:g} um: the histology cannot resolve cells there, so the maps "
            "will be close to an interpolation of the spots. Use a finer image of the section if "
            "there is one (e.g. the full-resolution H&E, as `image_key=`).",
            CoarseImageWarning,
            stacklevel=3,
        )


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
