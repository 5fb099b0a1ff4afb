"""The ``diffst`` command: run the demo, fit a model, super-resolve a SpatialData store."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import __version__

_EPILOG = "Run 'diffst COMMAND --help' for the options of one command."

#: Entries of the parsed arguments that are no options (positionals, the command's function).
_POSITIONAL = {"command", "run", "stores", "store"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diffst`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"diffst {args.command}: error: {_cli_words(str(message), args)}", file=sys.stderr)
        return 2


def _cli_words(message: str, args: argparse.Namespace) -> str:
    """``message`` with the Python arguments it names (``overwrite=True``) as options.

    Arguments inside a call (``model.save(path, overwrite=True)``) are code and stay as they are.
    """
    for dest in vars(args):
        if dest in _POSITIONAL:
            continue
        flag = "--" + dest.replace("_", "-")
        name = dest
        free = r"(?<!\()(?<!, )"  # not an argument inside a call
        message = re.sub(rf"{free}`?\b{name}=True\b`?", flag, message)
        message = re.sub(rf"{free}\b{name}=(?=[`\s.,;)]|$)", flag, message)
        message = re.sub(rf"{free}\b{name}=", flag + " ", message)
        if "_" in name:  # unambiguous as a bare word too
            message = re.sub(rf"{free}\b{name}\b(?!=)", flag, message)
    return message


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _zarr_store(text: str) -> str:
    """``text`` if it names a zarr store (a folder with zarr metadata at its root)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path} does not exist: pass a SpatialData zarr store "
                                         "(the folder sdata.write(...) makes)")
    if not path.is_dir() or not any((path / m).is_file() for m in ("zarr.json", ".zgroup")):
        raise argparse.ArgumentTypeError(
            f"{path} is not a zarr store (no zarr.json or .zgroup in it): pass a SpatialData "
            "zarr store (the folder sdata.write(...) makes); read other formats with "
            "spatialdata-io or ds.io.read_legacy_st and write them first")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``diffst`` command's argument parser, with every command and option.

    For tools that read a command line's options (documentation generators, shell completion,
    e.g. ``sphinx-argparse`` with ``:module: diffst_sc.cli`` and ``:func: build_parser``).

    Returns
    -------
    argparse.ArgumentParser
    """
    from ._core._presets import PRESETS
    from .model import UNS_KEY

    steps = ", ".join(f"{k}: {v['training']['max_steps']}" for k, v in PRESETS.items())
    p = argparse.ArgumentParser(
        prog="diffst",
        description="Super-resolve spatial transcriptomics with the H&E image (Diff-ST).",
        epilog=_EPILOG)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                   help="print the version of diffst_sc and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="fit and super-resolve the embedded her2st demo section",
                       description="Fit a model on the embedded HER2+ breast cancer section, "
                       "super-resolve it, and write a zarr store, the saved model and PNG "
                       "figures.")
    d.add_argument("--out", default="diffst_output", help="output folder (default: %(default)s)")
    d.add_argument("--deep", action="store_true",
                   help="also train the Diff-ST network on what the histology model leaves "
                   "(off by default: on the benchmark it does not improve the maps)")
    d.add_argument("--max-steps", type=_positive_int, default=None,
                   help=f"training steps with --deep (default: the preset's; {steps})")
    d.add_argument("--n-samples", type=_positive_int, default=8,
                   help="samples per tile with --deep (default: %(default)s)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    d.add_argument("--device", default="auto",
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, ... (default: %(default)s)")
    d.set_defaults(run=_demo)

    f = sub.add_parser(
        "fit", help="fit a model on one or more SpatialData zarr stores",
        description="Fit the histology model on the spots and H&E of each store and store it "
        "in each store's table (uns[KEY_ADDED]), where 'diffst superresolve' finds it. With "
        "--model, also save the model to a folder (config.json + arrays.npz). With --deep, "
        "also train the Diff-ST network on what the histology model leaves; it is saved only "
        "to the --model folder (+ model.pt), which 'diffst superresolve --model' then takes.")
    f.add_argument("stores", nargs="+", type=_zarr_store,
                   help="SpatialData zarr stores (one per section)")
    f.add_argument("--model", default=None,
                   help="folder to save the fitted model into (required with --deep)")
    f.add_argument("--key-added", default=UNS_KEY, metavar="KEY",
                   help="uns key of the table where the histology model is stored "
                   "(default: %(default)s)")
    f.add_argument("--genes", help="text file with one gene per line (default: the --n-genes "
                   "most expressed)")
    f.add_argument("--n-genes", type=_positive_int, default=100,
                   help="genes to pick if --genes is not given (default: %(default)s)")
    f.add_argument("--deep", action="store_true",
                   help="also train the Diff-ST network on what the histology model leaves "
                   "(needs --model)")
    f.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS),
                   help="with --deep, network size and training budget: cpu-small (minutes on "
                   "a laptop) or gpu-large (default: %(default)s)")
    f.add_argument("--max-steps", type=_positive_int, default=None,
                   help=f"training steps with --deep (default: the preset's; {steps})")
    f.add_argument("--table-key", default=None,
                   help="table of the spots in each store (default: the only one, or 'table')")
    f.add_argument("--coordinate-system", default=None,
                   help="coordinate system shared by the spots and the H&E (default: the only "
                   "one)")
    f.add_argument("--microns-per-pixel", type=_positive_float, nargs="+", default=None,
                   metavar="UM",
                   help="size of one full-resolution H&E pixel in micrometres: one value for "
                   "every store or one per store, in order (default: read from each store, "
                   "else guessed from the spots with a warning)")
    f.add_argument("--layer", default=None,
                   help="layer of the table holding raw counts (default: 'counts' if present, "
                   "else X)")
    f.add_argument("--checkpoint-dir", default=None,
                   help="checkpoints here with --deep; rerun with the same folder to resume")
    f.add_argument("--device", default="auto",
                   help="with --deep: auto (CUDA, then MPS, then CPU), cpu, cuda, ... "
                   "(default: %(default)s)")
    f.add_argument("--seed", type=int, default=0,
                   help="with --deep, seed of the weights and the patches: the same seed gives "
                   "the same network (default: %(default)s)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    f.set_defaults(run=_fit)

    s = sub.add_parser(
        "superresolve", help="add super-resolved layers to a zarr store",
        description="Super-resolve a section and write the layers KEY_ADDED and KEY_ADDED_std "
        "into the store. The model is the histology model 'diffst fit' stored in the store's "
        "table, or the folder given with --model (a Diff-ST network is used only that way).")
    s.add_argument("store", type=_zarr_store, help="SpatialData zarr store")
    s.add_argument("--model", default=None,
                   help="folder of a saved model ('diffst fit --model', model.save); default: "
                   "the histology model stored in the store's table by 'diffst fit'")
    s.add_argument("--model-key", default=UNS_KEY, metavar="KEY",
                   help="without --model, the uns key the histology model is stored under, as "
                   "given to 'diffst fit --key-added' (default: %(default)s)")
    s.add_argument("--key-added", "--key", dest="key_added", default="diffst", metavar="KEY",
                   help="name of the new layer: letters, digits, '_', '-' and '.' "
                   "(default: %(default)s)")
    s.add_argument("--pixel-size-um", type=_positive_float, default=None, metavar="UM",
                   help="output pixel size in micrometres (default: the model's, an eighth of the "
                   "spot spacing)")
    s.add_argument("--n-samples", type=_positive_int, default=8,
                   help="samples per tile of a --deep model (default: %(default)s)")
    s.add_argument("--steps", type=_positive_int, default=20,
                   help="denoising steps per sample of a --deep model (default: %(default)s)")
    s.add_argument("--table-key", default=None,
                   help="table of the spots (default: the only one, or 'table')")
    s.add_argument("--coordinate-system", default=None,
                   help="coordinate system shared by the spots and the H&E (default: the only "
                   "one)")
    s.add_argument("--microns-per-pixel", type=_positive_float, default=None, metavar="UM",
                   help="size of one full-resolution H&E pixel in micrometres, as given to "
                   "'diffst fit' (default: read from the store, else guessed from the spots "
                   "with a warning)")
    s.add_argument("--layer", default=None,
                   help="layer of the table holding raw counts (default: 'counts' if present, "
                   "else X)")
    s.add_argument("--device", default="auto",
                   help="with a --deep model: auto (CUDA, then MPS, then CPU), cpu, cuda, ... "
                   "(default: %(default)s)")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the samples of a --deep model: the same seed and model give "
                   "the same maps (default: %(default)s)")
    s.add_argument("--overwrite", action="store_true", help="replace existing layers")
    s.set_defaults(run=_superresolve)
    return p


def _demo(args) -> int:
    import shutil

    import diffst_sc as ds

    out = Path(args.out)
    if out.exists():
        if not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite or choose --out.")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print("Reading the embedded her2st C2 section (Andersson et al., Nat Commun 2021) ...")
    sdata = ds.datasets.her2st_demo()
    genes = ds.pp.select_genes(sdata, n_top=50)
    ds.pl.spots(sdata, "ERBB2", save=out / "spots_ERBB2.png", show=False)
    print(f"Fitting a {'Diff-ST network on a histology' if args.deep else 'histology'} model "
          f"on {len(genes)} genes ...")
    model = ds.tl.fit(sdata, genes=genes, deep=args.deep, max_steps=args.max_steps,
                      device=args.device)
    print(f"Fitted {model}")
    model.save(out / "model")
    deep = not isinstance(model, ds.HistologyModel)
    if deep:
        ds.pl.training_loss(model, save=out / "training_loss.png", show=False)
    print("Super-resolving ...")
    # the histology model is found in the table, where fit stored it; a network is passed
    ds.tl.superresolve(sdata, model if deep else None, n_samples=args.n_samples,
                       device=args.device, add_pixel_table=True)
    show = [g for g in ("ERBB2", "IGKC", "COL1A1") if g in genes] or genes[:2]
    ds.pl.superresolved(sdata, show, save=out / "superresolved.png", show=False)
    sdata.write(out / "her2st_c2.zarr")
    err = sdata.tables["table"].uns["diffst"]["consistency_error"]
    print(f"Consistency with the measured spots: {100 * err:.2f}% relative error.")
    print(f"Wrote {out / 'her2st_c2.zarr'}, {out / 'model'} and figures "
          f"{', '.join(p.name for p in sorted(out.glob('*.png')))} in {out}/")
    return 0


def _read_genes(path):
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"--genes {path}: no such file; pass a text file with one gene "
                                "per line.")
    return [g.strip() for g in Path(path).read_text().splitlines() if g.strip()]


def _one_or_each(values: list[float] | None) -> float | list[float] | None:
    """``--microns-per-pixel`` as ``fit`` takes it: one number for all stores, or a list."""
    if values is None or len(values) > 1:
        return values
    return values[0]


def _read_store(path):
    import spatialdata as sd

    return sd.read_zarr(path)


def _write_images(sdata, names: list[str]) -> None:
    """Write the new image layers ``names`` into the store ``sdata`` was read from.

    One already on disk (only reached with ``--overwrite``) is deleted there first: spatialdata
    does not overwrite inside its own store.
    """
    on_disk = set(sdata.elements_paths_on_disk())
    for name in names:
        if f"images/{name}" in on_disk:
            sdata.delete_element_from_disk(name)
        sdata.write_element(name)


def _write_uns(sdata, table: str, key: str) -> None:
    """Write ``tables[table].uns[key]`` into the store, the rest of the table left as it is.

    Only that entry of ``uns`` is (re)written, so no part of the user's table is ever removed
    from the store, even if the run is interrupted.
    """
    import zarr
    from anndata.io import write_elem

    group = zarr.open_group(Path(sdata.path) / "tables" / table, mode="r+")
    write_elem(group.require_group("uns"), key, sdata.tables[table].uns[key])
    if sdata.has_consolidated_metadata():
        sdata.write_consolidated_metadata()


def _fit(args) -> int:
    import diffst_sc as ds

    from ._core._elements import pick_table

    target = None if args.model is None else Path(args.model)
    if args.deep and target is None:
        raise ValueError("--deep needs --model FOLDER: the Diff-ST network is saved only to a "
                         "folder (the store's table keeps the histology model alone).")
    if target is not None and target.exists() and any(target.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite or choose another --model.")
    genes = _read_genes(args.genes)
    sdatas = [_read_store(p) for p in args.stores]
    tables = [pick_table(s, args.table_key) for s in sdatas]
    model = ds.tl.fit(sdatas if len(sdatas) > 1 else sdatas[0], genes=genes,
                      n_genes=args.n_genes, key_added=args.key_added, deep=args.deep,
                      preset=args.preset, max_steps=args.max_steps,
                      table_key=args.table_key, coordinate_system=args.coordinate_system,
                      layer=args.layer, microns_per_pixel=_one_or_each(args.microns_per_pixel),
                      checkpoint_dir=args.checkpoint_dir, device=args.device, seed=args.seed)
    for path, sdata, table in zip(args.stores, sdatas, tables, strict=True):
        _write_uns(sdata, table, args.key_added)
        print(f"Stored the histology model in {path}: tables[{table!r}].uns[{args.key_added!r}]")
    if target is not None:
        model.save(target, overwrite=args.overwrite)
        print(f"Saved {model} to {target}")
    else:
        print(f"Fitted {model}")
    return 0


def _stored_model(sdata, store, table_key: str | None, key: str):
    """The histology model ``diffst fit`` stored in the store's table under ``uns[key]``."""
    from ._core._elements import pick_table
    from .model import HistologyModel

    table = pick_table(sdata, table_key)
    if key not in sdata.tables[table].uns:
        raise ValueError(f"{store} stores no model: its table {table!r} has no uns[{key!r}]. Run "
                         f"'diffst fit {store}' first (it stores the histology model there), "
                         "pass --model FOLDER (a saved model), or --model-key KEY for a model "
                         "stored with 'diffst fit --key-added KEY'.")
    return HistologyModel.from_uns(sdata.tables[table].uns[key])


def _superresolve(args) -> int:
    import diffst_sc as ds

    from ._core._checks import check_new_names
    from ._core._elements import pick_table

    check_new_names(args.key_added)
    sdata = _read_store(args.store)
    model = (args.model if args.model is not None
             else _stored_model(sdata, args.store, args.table_key, args.model_key))
    names = [args.key_added, args.key_added + "_std"]
    ds.tl.superresolve(sdata, model, key_added=args.key_added, pixel_size_um=args.pixel_size_um,
                       n_samples=args.n_samples, steps=args.steps, seed=args.seed,
                       overwrite=args.overwrite, table_key=args.table_key,
                       coordinate_system=args.coordinate_system, layer=args.layer,
                       microns_per_pixel=args.microns_per_pixel, device=args.device)
    table = pick_table(sdata, args.table_key)
    _write_images(sdata, names)
    _write_uns(sdata, table, args.key_added)  # the run's record
    record = sdata.tables[table].uns[args.key_added]
    print(f"Wrote layers {names} into {args.store} with the {record['model']} (consistency with "
          f"the measured spots: {100 * record['consistency_error']:.2f}% relative error)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
