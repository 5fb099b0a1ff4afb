"""Arguments that cannot work are refused before fit or superresolve does any work."""

from __future__ import annotations

import pytest

import diffst_sc as ds
from conftest import unfitted_model


@pytest.fixture
def demo():
    return ds.datasets.her2st_demo()


@pytest.mark.parametrize("max_steps", [0, -5, 2.5])
def test_fit_refuses_a_training_budget_that_is_not_positive(demo, max_steps):
    with pytest.raises(ValueError, match=rf"max_steps must be a positive whole number, got "
                       rf"{max_steps}"):
        ds.tl.fit(demo, genes=["ERBB2", "IGKC"], deep=True, max_steps=max_steps, progress=False)
    assert "diffst_coexpr" not in demo.tables["table"].varp  # refused before any work


def test_fit_refuses_a_gene_given_twice(demo):
    with pytest.raises(ValueError, match=r"`genes` has 1 duplicated gene name\(s\): \['ERBB2'\]"):
        ds.tl.fit(demo, genes=["ERBB2", "IGKC", "ERBB2"], progress=False)
    assert "diffst_coexpr" not in demo.tables["table"].varp


@pytest.fixture
def model():
    """An unfitted model over two demo genes: superresolve's checks run before it is used."""
    return unfitted_model(["ERBB2", "IGKC"])


@pytest.mark.parametrize(("key", "reason"), [
    ("my map", "alphanumeric characters, underscores, dots and hyphens"),
    ("", "empty"),
    ("__diffst", "start with '__'"),
])
def test_superresolve_refuses_names_spatialdata_refuses(demo, model, key, reason):
    with pytest.raises(ValueError, match=rf"key_added={key!r} cannot name a SpatialData "
                       rf"element: .*{reason}") as err:
        ds.tl.superresolve(demo, model, key_added=key, progress=False)
    if key == "my map":
        assert "key_added='my_map'" in str(err.value)  # a valid name to use instead
    assert set(demo.images) == {"he"}


def test_superresolve_refuses_a_name_that_differs_only_in_case(demo, model):
    with pytest.raises(ValueError, match=r"key_added='HE' would add images element 'HE', but "
                       r"the SpatialData has images element 'he'"):
        ds.tl.superresolve(demo, model, key_added="HE", progress=False)
    assert set(demo.images) == {"he"}


def test_the_name_is_checked_before_the_model_is_looked_for(demo):
    with pytest.raises(ValueError, match=r"key_added='my map'"):
        ds.tl.superresolve(demo, key_added="my map", progress=False)


def test_fit_refuses_a_named_image_that_is_not_rgb(demo):
    import numpy as np
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    placed = get_transformation(demo.images["he"], get_all=True)
    demo.images["two"] = Image2DModel.parse(np.zeros((2, 64, 64), np.uint8), dims=("c", "y", "x"),
                                            c_coords=["c0", "c1"], transformations=placed)
    del demo.images["he"]
    with pytest.raises(ValueError, match=r"Image 'two' has 2 channels \['c0', 'c1'\] \(shape "
                       r"\(2, 64, 64\).*pass its name as `image_key=`"):
        ds.tl.fit(demo, genes=["ERBB2", "IGKC"], image_key="two", progress=False)
    assert "diffst_coexpr" not in demo.tables["table"].varp


def test_fit_names_the_section_whose_genes_repeat(demo):
    table = demo.tables["table"]
    names = list(table.var_names)
    names[1] = names[0]
    table.var_names = names
    with pytest.raises(ValueError, match=rf"The table of section 'her2st_c2' has 1 duplicated "
                       rf"gene name\(s\): \['{names[0]}'\]"):
        ds.tl.fit(demo, genes=["ERBB2", "IGKC"], progress=False)
    assert "diffst_coexpr" not in table.varp


def test_fit_warns_once_per_section_that_holds_no_counts(demo):
    """Values that are not counts are named with the section, before any work."""
    table = demo.tables["table"]
    table.layers["counts"] = table.layers["counts"] * 0.37
    with pytest.warns(ds.io.NotCountsWarning, match="section 'her2st_c2' is not integer") as got:
        with pytest.raises(KeyError, match="lacks 1 of the genes"):
            ds.tl.fit(demo, genes=["ERBB2", "NOT_A_GENE"], progress=False)
    assert sum(issubclass(w.category, ds.io.NotCountsWarning) for w in got) == 1
