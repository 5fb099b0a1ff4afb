"""The diffst command on the embedded demo section and on zarr stores."""

import subprocess
import sys

import pytest

import diffst_sc as ds
from diffst_sc.cli import main


def test_help_explains_each_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "fit", "superresolve"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["superresolve", "--help"])
    assert "--model" in capsys.readouterr().out


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
    assert (out / "model" / "config.json").exists()
    # an existing output folder is not overwritten unless asked
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_fit_then_superresolve_on_a_store(tmp_path, capsys):
    sdata = ds.datasets.her2st_demo()
    store = tmp_path / "c2.zarr"
    sdata.write(store)
    genes = tmp_path / "genes.txt"
    genes.write_text("ERBB2\nIGKC\nCOL1A1\n")
    model_dir = tmp_path / "model"
    assert main(["fit", str(store), "--model", str(model_dir), "--genes", str(genes),
                 "--deep", "--max-steps", "3"]) == 0
    assert ds.DiffST.load(model_dir).deep
    assert main(["superresolve", str(store), "--model", str(model_dir), "--n-samples", "1",
                 "--steps", "2"]) == 0
    import spatialdata as sd

    back = sd.read_zarr(store)
    assert list(map(str, back.images["diffst"].coords["c"].values)) == ["ERBB2", "IGKC", "COL1A1"]
    # a second run does not silently replace the layers
    assert main(["superresolve", str(store), "--model", str(model_dir), "--n-samples", "1",
                 "--steps", "2"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["superresolve", str(store), "--model", str(model_dir), "--n-samples", "1",
                 "--steps", "2", "--overwrite", "--seed", "1"]) == 0
    assert "diffst" in sd.read_zarr(store).images
