"""select_genes on the embedded section: too few genes, repeated names, NaN in a layer."""

from __future__ import annotations

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import section_view
from diffst_sc.pp import DEFAULT_EXCLUDE


@pytest.fixture
def table():
    return ds.datasets.her2st_demo().tables["table"]


def test_asking_for_more_genes_than_there_are_says_how_many(table):
    n = sum(not g.startswith(DEFAULT_EXCLUDE) for g in table.var_names)
    assert n < 10000
    with pytest.warns(UserWarning, match=rf"n_top=10000 but only {n} genes are available .*"
                      rf"returning all {n}"):
        genes = ds.pp.select_genes(table, n_top=10000)
    assert len(genes) == n


def test_duplicated_gene_names_are_refused_by_name(table):
    names = list(table.var_names)
    names[1], names[3] = names[0], names[2]
    table.var_names = names
    with pytest.raises(ValueError, match=rf"2 duplicated gene name\(s\): \['{names[0]}', "
                       rf"'{names[2]}'\].*var_names_make_unique"):
        ds.pp.select_genes(table, n_top=5)
    with pytest.raises(ValueError, match=rf"2 duplicated gene name\(s\): \['{names[0]}', "
                       rf"'{names[2]}'\]"):
        ds.pp.select_genes(table, genes=[names[5]])


def test_the_nan_hint_names_the_layer_that_holds_the_nan(table):
    counts = table.layers["counts"].copy()
    counts.data = counts.data.astype(np.float32)
    counts.data[7] = np.nan
    table.layers["counts"] = counts
    fill = r"`adata\.layers\['counts'\] = np\.nan_to_num\(adata\.layers\['counts'\]\)`"
    with pytest.raises(ValueError, match=r"1 NaN or infinite values.*" + fill):
        ds.pp.select_genes(table, n_top=5)


def test_sections_are_named_as_fit_names_them():
    # fit names a section after its coordinate system (SectionView.name); so does select_genes
    first, second = ds.datasets.her2st_demo(), ds.datasets.her2st_demo()
    second.rename_coordinate_systems({"her2st_c2": "C2_copy"})
    assert section_view(second).name == "C2_copy"
    second.tables["table"] = second.tables["table"][:, 1:].copy()  # loses its first gene
    lost = str(first.tables["table"].var_names[0])
    with pytest.raises(KeyError, match=rf"not in the table of section 'C2_copy': \['{lost}'\]"):
        ds.pp.select_genes([first, second], genes=[lost, "ERBB2"])
    counts = first.tables["table"].layers["counts"].astype(np.float32)
    counts.data[7] = np.nan
    first.tables["table"].layers["counts"] = counts
    with pytest.raises(ValueError, match=r"Expression in section 'her2st_c2' has 1 NaN"):
        ds.pp.select_genes([first, second], n_top=5)
    with pytest.raises(ValueError, match=r"Expression in section 'her2st_c2' has 1 NaN"):
        ds.pp.select_genes(first, n_top=5)
