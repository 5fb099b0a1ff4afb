"""What diffst_sc reads from a section: the tables, image and geometry it will use."""

from __future__ import annotations

from dataclasses import dataclass

from .._core._docs import shared_parameters
from .._core._view import section_view


@dataclass(frozen=True)
class SectionInfo:
    """The choices and measurements ``fit`` and ``superresolve`` make on one section.

    Attributes
    ----------
    table_key, shapes_key, image_key, coordinate_system
        The spots' table, the shapes it annotates, the H&E used (the finest usable one unless
        named) and the coordinate system that places the spots on it.
    layer
        Where the counts are read (``None``: ``X``).
    n_spots, n_genes
        The table's size.
    microns_per_pixel
        Micrometres per pixel of the H&E's full-resolution level.
    spot_diameter_um, spot_spacing_um
        The spots' diameter and the median distance between neighbouring spots.
    image_shape
        ``(channels, height, width)`` of the H&E's full-resolution level.
    counts
        Whether the expression looks like raw counts (integers); the model assumes them.
    """

    table_key: str
    shapes_key: str
    image_key: str
    coordinate_system: str
    layer: str | None
    n_spots: int
    n_genes: int
    microns_per_pixel: float
    spot_diameter_um: float
    spot_spacing_um: float
    image_shape: tuple[int, ...]
    counts: bool

    def __repr__(self) -> str:
        c, h, w = (self.image_shape + (0, 0, 0))[:3]
        where = "X" if self.layer is None else f"layers[{self.layer!r}]"
        return (f"SectionInfo: {self.n_spots} spots x {self.n_genes} genes in table "
                f"{self.table_key!r} ({where}, {'raw counts' if self.counts else 'not counts'}), "
                f"spots {self.shapes_key!r} {self.spot_diameter_um:.1f} um wide, "
                f"{self.spot_spacing_um:.1f} um from the nearest (median);\n  H&E {self.image_key!r}: {h} x {w} "
                f"pixels at {self.microns_per_pixel:.3g} um per pixel, in coordinate system "
                f"{self.coordinate_system!r}")


@shared_parameters
def describe_section(
    sdata,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
    coordinate_system: str | None = None,
    layer: str | None = None,
    microns_per_pixel: float | None = None,
) -> SectionInfo:
    """What ``fit`` and ``superresolve`` will read from a section, to check before fitting.

    It makes the same choices they make with the same arguments (the table, the finest usable
    H&E, the coordinate system, the counts layer) and runs the same checks, raising the same
    errors for input they would refuse. Check the micrometres per pixel against what you know
    of the scan: every size the model uses (spot discs, nuclei, cell sub-patches) follows it.

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
    SectionInfo

    Examples
    --------
    >>> import diffst_sc as ds
    >>> info = ds.io.describe_section(ds.datasets.her2st_demo())
    >>> info.n_spots, info.image_key, round(info.spot_spacing_um)
    (187, 'he', 187)
    """
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        view = section_view(sdata, table_key=table_key, image_key=image_key,
                            coordinate_system=coordinate_system, layer=layer,
                            microns_per_pixel=microns_per_pixel)
    for w in said:  # the same warnings fit gives, pointed at the caller's line
        warnings.warn(w.message, w.category, stacklevel=2)
    return SectionInfo(
        table_key=view.table_key, shapes_key=view.shapes_key, image_key=view.image_key,
        coordinate_system=view.coordinate_system, layer=view.layer, n_spots=view.n_spots,
        n_genes=len(view.genes), microns_per_pixel=float(view.microns_per_pixel),
        spot_diameter_um=float(view.spot_diameter_um), spot_spacing_um=float(view.spacing_um),
        image_shape=tuple(int(s) for s in view.image.shape), counts=bool(view.is_counts))
