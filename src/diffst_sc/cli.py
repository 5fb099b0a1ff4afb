"""The ``diffst`` command: run the demo, fit a model, super-resolve a SpatialData store."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import __version__

_EPILOG = "Run 'diffst COMMAND --help' for the options of one command."

#: Options whose Python argument has another name, to say errors in the command's words.
_API_NAMES = {"key": "key_added"}
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
        name = _API_NAMES.get(dest, dest)
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
    from .tl._fit import TRAINING_PRESETS

    steps = ", ".join(f"{k}: {v['max_steps']}" for k, v in TRAINING_PRESETS.items())
    p = argparse.ArgumentParser(
        prog="diffst",
        description="Super-resolve spatial transcriptomics with the H&E image (Diff-ST).",
        epilog=_EPILOG)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                   help="print the version of diffst_sc and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="fit and super-resolve the embedded her2st demo section",
                       description="Fit a model on the embedded HER2+ breast cancer section, "
                       "super-resolve it, and write a zarr store and PNG figures.")
    d.add_argument("--out", default="diffst_output", help="output folder (default: %(default)s)")
    d.add_argument("--deep", action="store_true",
                   help="also train the diffusion network on what the histology path leaves "
                   "(off by default: on the benchmark it does not improve the maps)")
    d.add_argument("--max-steps", type=_positive_int, default=None,
                   help=f"training steps with --deep (default: the preset's; {steps})")
    d.add_argument("--n-samples", type=_positive_int, default=8,
                   help="samples per tile with --deep (default: %(default)s)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    d.add_argument("--device", default="auto",
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, ... (default: %(default)s)")
    d.set_defaults(run=_demo)

    f = sub.add_parser("fit", help="fit a model on one or more SpatialData zarr stores",
                       description="Fit a Diff-ST model on the spots and H&E of each store and "
                       "save it to a folder (config.json + model.pt).")
    f.add_argument("stores", nargs="+", type=_zarr_store,
                   help="SpatialData zarr stores (one per section)")
    f.add_argument("--model", required=True, help="folder to save the model into")
    f.add_argument("--genes", help="text file with one gene per line (default: the --n-genes "
                   "most expressed)")
    f.add_argument("--n-genes", type=_positive_int, default=100,
                   help="genes to pick if --genes is not given (default: %(default)s)")
    f.add_argument("--deep", action="store_true",
                   help="also train the diffusion network on what the histology path leaves")
    f.add_argument("--preset", default="cpu-small", choices=sorted(TRAINING_PRESETS),
                   help="network size and training budget: cpu-small (minutes on a laptop) or "
                   "gpu-large (default: %(default)s)")
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
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, ... (default: %(default)s)")
    f.add_argument("--seed", type=int, default=0,
                   help="seed of the weights and the patches: the same seed gives the same model "
                   "(default: %(default)s)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    f.set_defaults(run=_fit)

    s = sub.add_parser("superresolve", help="add super-resolved layers to a zarr store",
                       description="Super-resolve a section with a saved model and write the "
                       "layers KEY and KEY_std into the store.")
    s.add_argument("store", type=_zarr_store, help="SpatialData zarr store")
    s.add_argument("--model", required=True, help="folder written by 'diffst fit'")
    s.add_argument("--key", default="diffst",
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
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, ... (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the samples: the same seed and model give the same maps "
                   "(default: %(default)s)")
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
    print(f"Fitting a model on {len(genes)} genes ...")
    model = ds.tl.fit(sdata, genes=genes, deep=args.deep, max_steps=args.max_steps,
                      device=args.device)
    model.save(out / "model")
    if model.deep:
        ds.pl.training_loss(model, save=out / "training_loss.png", show=False)
    print("Super-resolving ...")
    ds.tl.superresolve(sdata, n_samples=args.n_samples, device=args.device, add_pixel_table=True)
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


def _fit(args) -> int:
    import spatialdata as sd

    import diffst_sc as ds

    target = Path(args.model)
    if target.exists() and any(target.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite or choose another --model.")
    genes = _read_genes(args.genes)
    sdatas = [sd.read_zarr(p) for p in args.stores]
    model = ds.tl.fit(sdatas if len(sdatas) > 1 else sdatas[0], genes=genes,
                      n_genes=args.n_genes, deep=args.deep, preset=args.preset,
                      max_steps=args.max_steps,
                      table_key=args.table_key, coordinate_system=args.coordinate_system,
                      layer=args.layer, microns_per_pixel=_one_or_each(args.microns_per_pixel),
                      checkpoint_dir=args.checkpoint_dir, device=args.device, seed=args.seed)
    model.save(target, overwrite=args.overwrite)
    print(f"Saved {model} to {target}")
    return 0


def _superresolve(args) -> int:
    import spatialdata as sd

    import diffst_sc as ds

    from ._core._checks import check_new_names

    check_new_names(args.key)
    model = ds.DiffST.load(args.model)
    sdata = sd.read_zarr(args.store)
    names = [args.key, args.key + "_std"]
    ds.tl.superresolve(sdata, model, key_added=args.key, pixel_size_um=args.pixel_size_um,
                       n_samples=args.n_samples, steps=args.steps, seed=args.seed,
                       overwrite=args.overwrite, table_key=args.table_key,
                       coordinate_system=args.coordinate_system, layer=args.layer,
                       microns_per_pixel=args.microns_per_pixel, device=args.device)
    on_disk = set(sdata.elements_paths_on_disk())
    for name in names:
        if f"images/{name}" in on_disk:  # only reached with --overwrite
            sdata.delete_element_from_disk(name)
        sdata.write_element(name)
    record = next(t.uns[args.key] for t in sdata.tables.values() if args.key in t.uns)
    print(f"Wrote layers {names} into {args.store} (consistency with the measured spots: "
          f"{100 * record['consistency_error']:.2f}% relative error)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
