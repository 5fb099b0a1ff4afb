"""Where a model's parameters are kept: a folder on disk, or a table's ``uns``.

A model describes itself as a nested dict of JSON values and numpy arrays. Saved, the arrays
go to ``arrays.npz`` (read back without pickle) and the rest to ``config.json``, which records
the format and the SHA-256 of every other file of the folder, checked before anything is read.
Stored in ``uns``, the same dict is written with ``None`` left out and lists as arrays, the
types AnnData writes to zarr and h5ad, as scanpy stores its PCA loadings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

CONFIG_FILE = "config.json"
ARRAYS_FILE = "arrays.npz"
CHECKSUMS_KEY = "sha256"


def _fix(cls_name: str) -> str:
    return (f"restore the folder as it was saved, or fit and save the model again "
            f"({cls_name}.save(path, overwrite=True))")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def split_arrays(d: dict, prefix: str = "") -> tuple[dict, dict]:
    """``d`` without its numpy arrays, and the arrays by their ``/``-joined keys."""
    plain, arrays = {}, {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, np.ndarray):
            arrays[key] = v
        elif isinstance(v, dict):
            p, a = split_arrays(v, key + "/")
            plain[k] = p
            arrays.update(a)
        else:
            plain[k] = v
    return plain, arrays


def join_arrays(plain: dict, arrays: dict) -> dict:
    """The inverse of :func:`split_arrays`."""
    out = json.loads(json.dumps(plain))  # a deep copy
    for key, v in arrays.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def prepare_folder(path: str | Path, overwrite: bool) -> Path:
    """``path`` as an empty folder to save into; refuses to replace a model unless asked."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file; pass the folder to save the model in.")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to "
                                  "replace the model saved there, or choose another folder.")
        if not (path / CONFIG_FILE).is_file():
            raise FileExistsError(f"{path} holds files that are not a saved model; refusing to "
                                  "overwrite them. Choose another folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_folder(path: Path, config: dict, extra_files: tuple[str, ...] = ()) -> Path:
    """Write ``config`` (its arrays to ``arrays.npz``) and record the checksums of the files.

    ``extra_files`` are files the caller wrote into ``path`` already (a network's weights).
    """
    plain, arrays = split_arrays(config)
    np.savez(path / ARRAYS_FILE, **arrays)
    files = (ARRAYS_FILE, *extra_files)
    plain[CHECKSUMS_KEY] = {f: file_sha256(path / f) for f in files}
    (path / CONFIG_FILE).write_text(json.dumps(plain, indent=1))
    return path


def read_folder(path: str | Path, fmt: str, cls_name: str, required: tuple[str, ...]) -> dict:
    """The config of a folder written by :func:`write_folder`, with every file checked.

    Raises
    ------
    FileNotFoundError
        When ``path`` holds no ``config.json`` or lacks a file it records.
    ValueError
        In one line naming the file and the fix, when ``config.json`` is not valid JSON, is of
        another format or lacks an entry, or a file does not match its recorded checksum.
    """
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: `path` must be a folder written by "
                                f"{cls_name}.save().")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_file} is not valid JSON (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); {_fix(cls_name)}") from None
    found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
    if found != fmt:
        raise ValueError(f"{cfg_file} is not a {cls_name} of this version of diffst_sc (format "
                         f"{found!r}, expected {fmt!r}); pass the folder written by "
                         f"{cls_name}.save(), or fit the model again with this version.")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(f"{cfg_file} lacks the entr{'y' if len(missing) == 1 else 'ies'} "
                         f"{', '.join(map(repr, missing))}; {_fix(cls_name)}")
    sums = cfg.pop(CHECKSUMS_KEY, None)
    if not isinstance(sums, dict) or ARRAYS_FILE not in sums:
        raise ValueError(f"{cfg_file} records no checksums; {_fix(cls_name)}")
    for name, digest in sums.items():
        f = path / name
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found, though {CONFIG_FILE} records it; "
                                    f"{_fix(cls_name)}")
        if file_sha256(f) != digest:
            raise ValueError(f"{f} does not match the checksum recorded in {CONFIG_FILE}: the "
                             f"file is damaged or was replaced; {_fix(cls_name)}")
    with np.load(path / ARRAYS_FILE, allow_pickle=False) as arrays:
        return join_arrays(cfg, {k: arrays[k] for k in arrays.files})


def to_uns(d: dict) -> dict:
    """``d`` in the types AnnData writes: ``None`` left out, lists of numbers as arrays."""
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            out[k] = to_uns(v)
        elif isinstance(v, list | tuple):
            out[k] = np.asarray(v) if v else np.zeros(0)
        else:
            out[k] = v
    return out


def from_uns(d) -> dict:
    """The inverse of :func:`to_uns`: plain Python values (numpy arrays of numbers kept)."""
    out = {}
    for k, v in dict(d).items():
        if isinstance(v, dict) or hasattr(v, "keys"):
            out[k] = from_uns(v)
        elif isinstance(v, np.ndarray) and v.dtype.kind in "OUS":
            out[k] = [str(x) for x in v.tolist()]
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out
