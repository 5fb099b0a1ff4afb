"""Saved models: a folder that loads back exactly; edited or damaged files give one clear line;
the histology model travels with the data through zarr, in a new process, without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import diffst_sc as ds
from conftest import unfitted_model
from diffst_sc.module import preset
from diffst_sc.schedulers import DiffusionConfig

GENES = ["ERBB2", "IGKC", "COL1A1", "FASN"]


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def demo_model():
    """The embedded section with a histology model fitted on four genes."""
    sdata = ds.datasets.her2st_demo()
    return sdata, ds.tl.fit(sdata, genes=GENES, progress=False)


@pytest.fixture
def saved(demo_model, tmp_path):
    return demo_model[1].save(tmp_path / "model")


def _edit_config(folder, edit) -> None:
    cfg_file = folder / "config.json"
    cfg = json.loads(cfg_file.read_text())
    edit(cfg)
    cfg_file.write_text(json.dumps(cfg, indent=1))


def test_a_saved_histology_model_is_a_small_folder_without_torch(saved, demo_model):
    model = demo_model[1]
    assert sorted(p.name for p in saved.iterdir()) == ["arrays.npz", "config.json"]
    assert sum(p.stat().st_size for p in saved.iterdir()) < 200_000
    back = ds.model.HistologyModel.load(saved)
    assert back.genes == model.genes
    np.testing.assert_array_equal(back.path.ridge.coef, model.path.ridge.coef)
    np.testing.assert_array_equal(back.residual_sd, model.residual_sd)
    assert repr(back) == repr(model)


def test_saving_writes_only_the_folder(demo_model, tmp_path):
    sdata, model = demo_model
    uns_before = dict(sdata.tables["table"].uns)
    model.save(tmp_path / "m")
    assert sorted(sdata.tables["table"].uns) == sorted(uns_before)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)


def test_a_folder_of_other_files_is_not_overwritten(demo_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a saved model"):
        demo_model[1].save(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_config_that_is_not_json(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON") as err:
        ds.model.HistologyModel.load(saved)
    assert "save" in _one_line(err)


def test_an_edited_config_fails_its_checksum_or_entries(saved):
    _edit_config(saved, lambda c: c.pop("genes"))
    with pytest.raises(ValueError, match="'genes'") as err:
        ds.model.HistologyModel.load(saved)
    _one_line(err)


def test_an_outdated_format_is_refused_with_the_fix(saved):
    _edit_config(saved, lambda c: c.update(format="diffst_sc.model/1"))
    with pytest.raises(ValueError, match="fit the model again") as err:
        ds.model.HistologyModel.load(saved)
    _one_line(err)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_arrays_are_refused(saved, damage):
    f = saved / "arrays.npz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate"
                  else data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    with pytest.raises(ValueError, match="checksum") as err:
        ds.model.HistologyModel.load(saved)
    _one_line(err)


def test_a_missing_file_is_named(saved):
    (saved / "arrays.npz").unlink()
    with pytest.raises(FileNotFoundError, match="arrays.npz"):
        ds.model.HistologyModel.load(saved)


def test_a_diffst_saves_its_base_graph_and_weights(tmp_path):
    import torch

    base = unfitted_model(GENES)
    cfg = preset("cpu-small", len(GENES))
    graph = np.eye(len(GENES), dtype=np.float32)
    model = ds.DiffST(base, cfg, DiffusionConfig(), graph=graph)
    model.residual_scale = 0.5
    folder = model.save(tmp_path / "deep")
    assert {p.name for p in folder.iterdir()} == {"config.json", "arrays.npz", "model.pt"}
    back = ds.DiffST.load(folder)
    assert back.base.genes == GENES and back.residual_scale == 0.5
    np.testing.assert_array_equal(back.graph, graph)
    for a, b in zip(model.module.state_dict().values(), back.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    with (folder / "model.pt").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="checksum"):
        ds.DiffST.load(folder)


@pytest.mark.parametrize("as_text", [True, False])
def test_superresolve_takes_the_folder_of_a_saved_model(saved, as_text):
    sdata = ds.datasets.her2st_demo()
    ds.tl.superresolve(sdata, str(saved) if as_text else saved, progress=False)
    assert list(sdata.images["diffst"].coords["c"].values) == GENES


def test_superresolve_says_what_to_pass_without_a_model():
    sdata = ds.datasets.her2st_demo()
    with pytest.raises(ValueError, match="ds.tl.fit"):
        ds.tl.superresolve(sdata, progress=False)


def test_fit_refuses_a_folder_where_the_image_goes(demo_model):
    with pytest.raises(TypeError, match="model.save"):
        ds.tl.fit(demo_model[0], "my_model")


_NEW_PROCESS = """
import sys
import numpy as np
import spatialdata as sd
import diffst_sc as ds
sdata = sd.read_zarr(sys.argv[1])
ds.tl.superresolve(sdata, key_added="again", progress=False)
assert "torch" not in sys.modules, "torch was imported"
a = np.asarray(sdata.images["again"])
b = np.asarray(sdata.images["diffst"])
print(float(np.abs(a - b).max() / b.max()))
"""


def test_the_model_travels_with_the_data_through_zarr_in_a_new_process(tmp_path):
    """fit stores the histology model in uns; the written store, read in a new process, gives
    the same maps with no model passed and without importing torch."""
    sdata = ds.datasets.her2st_demo()
    ds.tl.fit(sdata, genes=GENES, progress=False)
    ds.tl.superresolve(sdata, progress=False)
    sdata.write(tmp_path / "s.zarr")
    out = subprocess.run([sys.executable, "-c", _NEW_PROCESS, str(tmp_path / "s.zarr")],
                         capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) <= 1e-6
