"""A saved model's folder: edited or damaged files give one clear line; a folder is a model."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest

import diffst_sc as ds
from diffst_sc.module import preset
from diffst_sc.schedulers import DiffusionConfig

GENES = ["ERBB2", "IGKC", "COL1A1"]


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def saved(tmp_path):
    """The folder of a freshly initialised (untrained) model over three demo genes."""
    model = ds.DiffST(GENES, preset("cpu-small", len(GENES)), DiffusionConfig())
    return model.save(tmp_path / "model")


def _edit_config(folder, edit) -> None:
    cfg_file = folder / "config.json"
    cfg = json.loads(cfg_file.read_text())
    edit(cfg)
    cfg_file.write_text(json.dumps(cfg, indent=1))


def test_a_saved_model_loads_back(tmp_path):
    import torch

    model = ds.DiffST(GENES, preset("cpu-small", len(GENES)), DiffusionConfig())
    with torch.no_grad():  # weights no fresh model holds, so a load that skipped them shows
        for param in model.module.parameters():
            param.add_(1.0)
    back = ds.DiffST.load(model.save(tmp_path / "model"))
    assert back.genes == GENES
    loaded = back.module.state_dict()
    for key, tensor in model.module.state_dict().items():
        assert torch.equal(loaded[key], tensor), key


def test_config_that_is_not_json(saved):
    cfg_file = saved / "config.json"
    lines = cfg_file.read_text().splitlines()
    lines[2] = lines[2].replace(":", "", 1)  # a user's edit that breaks the syntax on line 3
    cfg_file.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON \(line 3") as err:
        ds.DiffST.load(saved)
    assert str(cfg_file) in _one_line(err) and "model.save(" in str(err.value)


def test_config_missing_an_entry(saved):
    _edit_config(saved, lambda cfg: cfg.pop("diffusion"))
    with pytest.raises(ValueError, match=r"config\.json lacks the entry 'diffusion'") as err:
        ds.DiffST.load(saved)
    assert "model.save(" in _one_line(err)


def test_config_with_an_unknown_value(saved):
    _edit_config(saved, lambda cfg: cfg["diffusion"].update(noise="pink"))
    with pytest.raises(ValueError, match=r"config\.json does not describe a valid model") as err:
        ds.DiffST.load(saved)
    assert "noise" in _one_line(err)


def test_config_whose_width_no_longer_matches_the_weights(saved):
    _edit_config(saved, lambda cfg: cfg["net"].update(channels=128))
    with pytest.raises(ValueError, match=r"config\.json does not match the weights in model\.pt "
                       r"\(\d+ tensors differ, e\.g\. .* in the file, .* in the "
                       r"configuration\)") as err:
        ds.DiffST.load(saved)
    assert "size mismatch" not in _one_line(err)


def test_the_checksum_of_the_weights_is_recorded(saved):
    recorded = json.loads((saved / "config.json").read_text())["weights_sha256"]
    assert recorded == hashlib.sha256((saved / "model.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_weights_are_refused(saved, damage):
    weights = saved / "model.pt"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # 2 kB of flipped bytes inside a tensor: torch would load them without a word
        middle = len(data) // 2
        data[middle:middle + 2048] = bytes(b ^ 0xFF for b in data[middle:middle + 2048])
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.pt does not match the checksum recorded in "
                       r"config\.json: the file is damaged or was replaced; save the model again"):
        ds.DiffST.load(saved)


def test_models_saved_before_the_checksum_still_load(saved):
    _edit_config(saved, lambda cfg: cfg.pop("weights_sha256"))
    assert ds.DiffST.load(saved).genes == GENES
    # a truncated file without a checksum: the advice is to write it again, not to re-save it
    # "as a state dict" (it was one)
    weights = saved / "model.pt"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"model\.pt is damaged or incomplete") as err:
        ds.DiffST.load(saved)
    assert "state dict" not in _one_line(err)


@pytest.mark.parametrize("as_text", [True, False])
def test_superresolve_takes_the_folder_of_a_saved_model(tmp_path, as_text):
    genes = ["ERBB2", "NOTAGENE"]
    folder = ds.DiffST(genes, preset("cpu-small", 2), DiffusionConfig()).save(tmp_path / "m")
    sdata = ds.datasets.her2st_demo()
    # the folder is loaded as a model (no AttributeError of a str): the error is the model's own
    with pytest.raises(KeyError, match=r"lack 1 of the model's 2 genes, e\.g\. \['NOTAGENE'\]"):
        ds.tl.superresolve(sdata, str(folder) if as_text else folder, progress=False)


def test_superresolve_says_what_to_pass_without_a_model():
    sdata = ds.datasets.her2st_demo()
    with pytest.raises(ValueError, match=r"pass `model=` a DiffST .* or the folder of a saved one"):
        ds.tl.superresolve(sdata, progress=False)


def test_a_recorded_folder_that_is_gone(tmp_path):
    sdata = ds.datasets.her2st_demo()
    sdata.tables["table"].uns["diffst_model"] = {"path": str(tmp_path / "moved_away")}
    with pytest.raises(FileNotFoundError, match=r"records a model saved in .*moved_away.*"
                       r"pass `model=`"):
        ds.tl.superresolve(sdata, progress=False)


def test_the_saved_model_is_found_again_after_writing_the_data(tmp_path):
    import spatialdata as sd

    sdata = ds.datasets.her2st_demo()
    model = ds.tl.fit(sdata, genes=GENES, progress=False)
    folder = model.save(tmp_path / "model")
    assert sdata.tables["table"].uns["diffst_model"] == {"path": str(folder.resolve())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notes on its coming defaults
        sdata.write(tmp_path / "c2.zarr")
    back = sd.read_zarr(tmp_path / "c2.zarr")
    ds.tl.superresolve(back, progress=False)  # no model given and none in memory for `back`
    assert list(map(str, back.images["diffst"].coords["c"].values)) == GENES
