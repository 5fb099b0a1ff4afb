"""The HER2+ breast cancer legacy ST cohort (Andersson et al., Nat Commun 2021)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spatialdata import SpatialData

_DEMO = Path(__file__).parent / "data" / "her2st_c2"
_BASE_URL = "https://github.com/almaan/her2st/raw/master/data/"
_FILES = ("counts.tsv.gz", "spots.tsv", "he.jpg")


def her2st_demo() -> SpatialData:
    """Section C2 of the HER2+ cohort, shipped with the package (500 genes, H&E at half size).

    Returns
    -------
    SpatialData
        As :func:`diffst_sc.io.read_legacy_st` returns it, coordinate system ``"her2st_c2"``.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.datasets.her2st_demo()
    >>> sdata.tables["table"].n_obs
    187
    """
    from ..io import read_legacy_st

    return read_legacy_st(_DEMO, name="her2st_c2")


def her2st(section: str = "C2", data_dir: str | Path | None = None) -> SpatialData:
    """A full section of the HER2+ cohort.

    Files are read from ``data_dir/<section>/`` when they are there (the layout of
    :func:`diffst_sc.io.read_legacy_st`); otherwise the public files are downloaded once with
    pooch into its cache and arranged in that layout.

    Parameters
    ----------
    section
        Section name, e.g. ``"B4"``, ``"C2"`` or ``"C3"``.
    data_dir
        A folder holding ``<section>/counts.tsv.gz``, ``spots.tsv`` and ``he.jpg``.

    Returns
    -------
    SpatialData

    Examples
    --------
    >>> sdata = ds.datasets.her2st("C2", data_dir="../shared/data/her2st")  # doctest: +SKIP
    """
    from ..io import read_legacy_st

    if data_dir is not None:
        folder = Path(data_dir) / section
        if not all((folder / f).exists() for f in _FILES):
            raise FileNotFoundError(f"{folder} lacks some of {_FILES}.")
        return read_legacy_st(folder, name=section)
    return read_legacy_st(_download(section), name=section)


def _download(section: str) -> Path:
    """Fetch one section's public files with pooch and lay them out as read_legacy_st expects."""
    import shutil

    import pandas as pd
    import pooch

    patient = section[0]
    cache = Path(pooch.os_cache("diffst_sc")) / "her2st" / section
    cache.mkdir(parents=True, exist_ok=True)
    urls = {
        "counts": f"{_BASE_URL}ST-cnts/{section}.tsv.gz",
        "spots": f"{_BASE_URL}ST-spotfiles/{section}_selection.tsv",
        "image": f"{_BASE_URL}ST-imgs/{patient}/{section}/HE.jpg",
    }
    got = {k: Path(pooch.retrieve(u, known_hash=None, path=cache / "raw", progressbar=True))
           for k, u in urls.items()}
    if not (cache / "counts.tsv.gz").exists():
        shutil.copy(got["counts"], cache / "counts.tsv.gz")
    if not (cache / "he.jpg").exists():
        shutil.copy(got["image"], cache / "he.jpg")
    if not (cache / "spots.tsv").exists():
        pd.read_csv(got["spots"], sep="\t").to_csv(cache / "spots.tsv", sep="\t", index=False)
    return cache
