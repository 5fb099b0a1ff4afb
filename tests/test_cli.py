"""The diffst command on the embedded demo section and on zarr stores."""

import subprocess
import sys

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc.cli import main
from diffst_sc.model import load as load_model


def test_help_explains_each_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "fit", "superresolve"):
        assert cmd in out
    for cmd in ("fit", "superresolve"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert "--model" in out and "--key-added" in out


def test_demo_writes_store_model_and_figures(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "diffst_sc.cli", "demo", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(out) in res.stdout
    for name in ("spots_ERBB2.png", "superresolved.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert not (out / "training_loss.png").exists()  # the default model trains no network
    import spatialdata as sd

    sdata = sd.read_zarr(out / "her2st_c2.zarr")
    assert {"diffst", "diffst_std", "he"} <= set(sdata.images)
    assert "diffst_table" in sdata.tables
    table = sdata.tables["table"]
    assert table.uns["diffst"]["model"] == "HistologyModel"
    # the default model: numpy only, in the folder and in the table it was fitted on
    assert sorted(p.name for p in (out / "model").iterdir()) == ["arrays.npz", "config.json"]
    model = load_model(out / "model")
    assert isinstance(model, ds.HistologyModel)
    assert ds.HistologyModel.from_uns(table.uns["diffst_histology"]).genes == model.genes
    # an existing output folder is not overwritten unless asked
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_fit_then_superresolve_on_a_store(tmp_path, capsys):
    """fit stores the histology model in the store's table; superresolve finds it there."""
    import spatialdata as sd

    sdata = ds.datasets.her2st_demo()
    store = tmp_path / "c2.zarr"
    sdata.write(store)
    genes = tmp_path / "genes.txt"
    genes.write_text("ERBB2\nIGKC\nCOL1A1\n")
    assert main(["fit", str(store), "--genes", str(genes)]) == 0
    stored = sd.read_zarr(store).tables["table"].uns["diffst_histology"]
    assert ds.HistologyModel.from_uns(stored).genes == ["ERBB2", "IGKC", "COL1A1"]
    assert main(["superresolve", str(store)]) == 0
    assert "HistologyModel" in capsys.readouterr().out
    back = sd.read_zarr(store)
    assert list(map(str, back.images["diffst"].coords["c"].values)) == ["ERBB2", "IGKC", "COL1A1"]
    record = back.tables["table"].uns["diffst"]  # the run's record is written with the layers
    assert record["model"] == "HistologyModel" and record["consistency_error"] < 1e-3
    # a second run does not silently replace the layers
    assert main(["superresolve", str(store)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["superresolve", str(store), "--overwrite"]) == 0
    assert "diffst" in sd.read_zarr(store).images


def test_keys_of_fit_and_superresolve(tmp_path, capsys):
    """--key-added names what each command writes; --model-key finds a model stored so."""
    import spatialdata as sd

    store = tmp_path / "c2.zarr"
    ds.datasets.her2st_demo().write(store)
    genes = tmp_path / "genes.txt"
    genes.write_text("ERBB2\nIGKC\n")
    model_dir = tmp_path / "model"
    assert main(["fit", str(store), "--genes", str(genes), "--key-added", "hist",
                 "--model", str(model_dir)]) == 0
    assert sorted(p.name for p in model_dir.iterdir()) == ["arrays.npz", "config.json"]
    table = sd.read_zarr(store).tables["table"]
    assert "hist" in table.uns and "diffst_histology" not in table.uns
    capsys.readouterr()
    # the default key finds nothing: said in the command's words, nothing written
    assert main(["superresolve", str(store)]) == 2
    err = capsys.readouterr().err
    assert "has no uns['diffst_histology']" in err and "--model-key" in err
    assert main(["superresolve", str(store), "--model-key", "hist", "--key-added", "fine"]) == 0
    assert main(["superresolve", str(store), "--model", str(model_dir), "--key", "saved"]) == 0
    back = sd.read_zarr(store)
    assert {"fine", "fine_std", "saved", "saved_std"} <= set(back.images)
    assert "diffst" not in back.images
    np.testing.assert_allclose(back.images["fine"].values, back.images["saved"].values)
    assert back.tables["table"].uns["saved"]["model"] == "HistologyModel"


def test_deep_fit_is_saved_and_passed_by_its_folder(tmp_path, capsys):
    import spatialdata as sd

    store = tmp_path / "c2.zarr"
    ds.datasets.her2st_demo().write(store)
    genes = tmp_path / "genes.txt"
    genes.write_text("ERBB2\nIGKC\nCOL1A1\n")
    # the network lives only in a folder: --deep without --model is refused before any work
    assert main(["fit", str(store), "--genes", str(genes), "--deep", "--max-steps", "3"]) == 2
    assert "--deep needs --model" in capsys.readouterr().err
    assert "diffst_histology" not in sd.read_zarr(store).tables["table"].uns
    model_dir = tmp_path / "model"
    assert main(["fit", str(store), "--model", str(model_dir), "--genes", str(genes),
                 "--deep", "--max-steps", "3"]) == 0
    assert {"config.json", "arrays.npz", "model.pt"} <= {p.name for p in model_dir.iterdir()}
    model = load_model(model_dir)
    assert type(model).__name__ == "DiffST" and isinstance(model.base, ds.HistologyModel)
    # the base is stored in the table too; the network is used only when passed
    assert "diffst_histology" in sd.read_zarr(store).tables["table"].uns
    assert main(["superresolve", str(store), "--model", str(model_dir), "--n-samples", "1",
                 "--steps", "2"]) == 0
    back = sd.read_zarr(store)
    assert list(map(str, back.images["diffst"].coords["c"].values)) == ["ERBB2", "IGKC", "COL1A1"]
    assert back.tables["table"].uns["diffst"]["model"] == "DiffST"
    assert main(["superresolve", str(store), "--model", str(model_dir), "--n-samples", "1",
                 "--steps", "2", "--overwrite", "--seed", "1"]) == 0


# -- errors before work, in the command's words ---------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The demo section as a zarr store with a histology model stored by ``ds.tl.fit`` over two
    genes, and already a layer named 'diffst'."""
    import warnings

    sdata = ds.datasets.her2st_demo()
    ds.tl.fit(sdata, genes=["ERBB2", "IGKC"], progress=False)
    sdata.images["diffst"] = sdata.images["he"]
    path = tmp_path_factory.mktemp("cli") / "c2.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notes on its coming defaults
        sdata.write(path)
    return str(path)


@pytest.fixture
def model_dir(tmp_path):
    """The folder of an untrained Diff-ST network (without a histology model) over two genes."""
    from diffst_sc.module import preset
    from diffst_sc.schedulers import DiffusionConfig

    genes = ["ERBB2", "IGKC"]
    return str(ds.DiffST(None, preset("cpu-small", 2), DiffusionConfig(), genes=genes)
               .save(tmp_path / "m"))


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"diffst {ds.__version__}"


def test_every_option_has_help():
    import argparse

    from diffst_sc.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"diffst {name} {'/'.join(action.option_strings) or action.dest}"


@pytest.mark.parametrize("command", ["fit", "demo"])
def test_max_steps_zero_is_refused(store, tmp_path, capsys, command):
    argv = (["fit", store, "--model", str(tmp_path / "m")] if command == "fit"
            else ["demo", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--deep", "--max-steps", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-steps: must be a positive whole number, got '0'" in err
    assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize("flag", ["--key-added", "--key"])
def test_a_name_spatialdata_refuses_is_said_in_cli_words(store, capsys, flag):
    assert main(["superresolve", store, flag, "my map"]) == 2
    err = capsys.readouterr().err
    assert "--key-added 'my map' cannot name a SpatialData element" in err
    assert "--key-added 'my_map'" in err and "key_added" not in err


def test_existing_layers_are_said_in_cli_words(store, model_dir, capsys):
    for model in ([], ["--model", model_dir]):  # the stored histology model, a saved network
        assert main(["superresolve", store, *model]) == 2
        err = capsys.readouterr().err
        assert "pass --overwrite" in err and "`--key-added`" in err
        assert "overwrite=True" not in err and "key_added" not in err


def test_an_edited_config_is_one_line_without_a_traceback(store, model_dir):
    import json
    from pathlib import Path

    cfg_file = Path(model_dir) / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["net"]["channels"] = 128
    cfg_file.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "diffst_sc.cli", "superresolve", store, "--model", model_dir]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("diffst superresolve:")]
    assert len(errors) == 1, res.stderr
    assert "config.json does not match the weights in model.pt" in errors[0]
    assert errors[0].endswith("(model.save(path, overwrite=True)).")  # the fix, on the same line
    assert "Traceback" not in res.stderr and "size mismatch" not in res.stderr


def test_a_path_that_is_not_a_zarr_store(tmp_path, model_dir, capsys):
    (tmp_path / "counts.h5ad").write_bytes(b"not a store")
    for path in (tmp_path, tmp_path / "counts.h5ad"):
        with pytest.raises(SystemExit) as exit_:
            main(["superresolve", str(path), "--model", model_dir])
        assert exit_.value.code == 2
        assert f"{path} is not a zarr store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", str(tmp_path / "missing.zarr"), "--model", str(tmp_path / "m")])
    assert "missing.zarr does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "want"), [
    (["--microns-per-pixel", "0.5"], {"microns_per_pixel": 0.5, "layer": None}),
    (["--microns-per-pixel", "0.5", "--layer", "raw"], {"microns_per_pixel": 0.5, "layer": "raw"}),
])
def test_pixel_size_and_layer_reach_fit_and_superresolve(store, model_dir, tmp_path, monkeypatch,
                                                         capsys, argv, want):
    seen = {}

    def capture(name):
        def fake(*args, **kwargs):
            seen[name] = {k: kwargs[k] for k in want}
            raise ValueError("stopped by the test")
        return fake

    monkeypatch.setattr(ds.tl, "fit", capture("fit"))
    monkeypatch.setattr(ds.tl, "superresolve", capture("superresolve"))
    assert main(["fit", store, "--model", str(tmp_path / "fitted"), *argv]) == 2
    assert main(["superresolve", store, "--model", model_dir, "--key-added", "x", *argv]) == 2
    assert seen == {"fit": want, "superresolve": want}
    seen.clear()
    assert main(["superresolve", store, "--key-added", "x", *argv]) == 2  # the stored model
    assert seen == {"superresolve": want}
    assert "stopped by the test" in capsys.readouterr().err


def test_one_pixel_size_per_store_or_one_for_all(store, tmp_path, capsys):
    assert main(["fit", store, "--model", str(tmp_path / "m"),
                 "--microns-per-pixel", "1.0", "2.0"]) == 2
    err = capsys.readouterr().err
    assert "--microns-per-pixel has 2 values for 1 sections" in err
    assert "microns_per_pixel" not in err
    with pytest.raises(SystemExit):
        main(["superresolve", store, "--model", str(tmp_path), "--microns-per-pixel", "0"])
    assert "--microns-per-pixel: must be a positive number, got '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["superresolve", store, "--model", str(tmp_path), "--pixel-size-um", "-1"])
    assert "--pixel-size-um: must be a positive number, got '-1'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
