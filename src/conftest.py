"""Names the docstring examples of the package use: ``ds``, a fresh embedded section ``sdata``
and a temporary folder ``tmp_path``, so that every example runs as a doctest."""

import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace, tmp_path):
    import diffst_sc as ds

    doctest_namespace["ds"] = ds
    doctest_namespace["sdata"] = ds.datasets.her2st_demo()
    doctest_namespace["tmp_path"] = tmp_path
