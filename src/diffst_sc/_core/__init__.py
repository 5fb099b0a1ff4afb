"""The toolkit every room builds on: one way to read a section and each of its elements.

- ``_view``: :class:`SectionView`, the one internal view of a section, and its keys.
- ``_elements``: which table, H&E and coordinate system; element geometry.
- ``_lattice``: spot spacing, array positions and lattice sites, hexagonal or square.
- ``_blocks``: blocks of a lattice's spots (pseudo-spots), square or hexagonal, and their view.
- ``_grid``: the working grid, disc coverage and Gaussian spreading on it.
- ``_raster``: reading image elements (layers) over footprints and grids, and their extent.
- ``_tiles``: a grid cut into overlapping tiles, blended band by band.
- ``_image``: the H&E at a chosen pixel size, the level it is read from; a cheap sample of an
  image (to check it holds histology); the tissue mask.
- ``_pixels``: a map's pixels as a table for scanpy and squidpy.
- ``_build``: the canonical SpatialData of one section.
- ``_checks``: input checks whose errors name the problem and the fix.

Nothing here imports the user-facing rooms (``io``, ``pp``, ``tl``, ``pl``, ``model``).
"""

from ._blocks import coarsen_view, hex_parents, spot_blocks
from ._build import build_sdata
from ._checks import (
    CoarseImageWarning,
    NotCountsWarning,
    check_counts,
    check_new_names,
    check_unique_genes,
    warn_if_not_counts,
)
from ._elements import (
    affine_matrix,
    centres_and_diameter,
    image_levels,
    image_problem,
    order_like_table,
    pick_coordinate_system,
    pick_image,
    pick_table,
    table_region,
    table_spots,
)
from ._grid import Grid, cell_weights, coverage_matrix, gaussian_weights, normalised_rows
from ._image import image_sample, pick_level, resample_image, tissue_mask
from ._lattice import area_per_spot, is_hex_lattice, lattice_sites, spot_positions, spot_spacing
from ._pixels import add_pixel_table, pixel_table
from ._raster import (
    element_raster,
    footprint_means,
    footprint_weights,
    layer_extent,
    layer_footprint_means,
    resample_to_grid,
)
from ._tiles import BandBlender, gene_chunk, tile_starts, tile_window
from ._view import LIBRARY_KEY, MEASURED_KEY, SECTION_UNS_KEY, SectionView, section_view

__all__ = [
    "SectionView", "section_view", "SECTION_UNS_KEY", "LIBRARY_KEY", "MEASURED_KEY",
    "pick_table", "pick_image", "pick_coordinate_system", "affine_matrix", "image_levels",
    "order_like_table", "centres_and_diameter", "spot_spacing", "spot_positions",
    "area_per_spot", "is_hex_lattice", "lattice_sites", "Grid", "cell_weights", "coverage_matrix",
    "gaussian_weights", "normalised_rows",
    "element_raster", "footprint_means", "footprint_weights", "layer_footprint_means",
    "build_sdata", "NotCountsWarning", "CoarseImageWarning", "check_counts", "check_unique_genes",
    "check_new_names", "warn_if_not_counts", "resample_image", "tissue_mask", "resample_to_grid",
    "table_region", "table_spots", "layer_extent", "spot_blocks", "hex_parents", "coarsen_view",
    "tile_starts", "tile_window", "BandBlender", "gene_chunk",
    "add_pixel_table", "pixel_table", "image_problem", "image_sample", "pick_level",
]
