"""Tensor-only files: what ``diffst_sc`` writes for weights and training checkpoints.

Everything saved here loads with ``torch.load(weights_only=True)``: tensors, and numbers,
strings, booleans and ``None`` inside dicts, lists and tuples. No pickled code, so a file from
an untrusted source cannot run anything when loaded.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

# Exact types: numpy scalars subclass float/int but are refused by weights_only loading.
_PLAIN_TYPES = frozenset({bool, int, float, str, type(None), torch.dtype})


def save_state(path: str | os.PathLike, state_dict: Mapping) -> Path:
    """Write a tensor-only mapping to ``path`` atomically.

    The payload is written to a temporary file in the same folder, flushed to disk and then
    moved over ``path`` with :func:`os.replace`, so ``path`` always holds either the previous
    complete file or the new complete file, never a torn one.

    Parameters
    ----------
    path
        Destination file; its parent folders are created.
    state_dict
        Mapping with string keys whose values are tensors or plain data (numbers, strings,
        booleans, ``None``, and dicts, lists and tuples of them), nested at any depth.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    TypeError
        If a value could not be loaded back with ``torch.load(weights_only=True)``.

    Examples
    --------
    >>> import torch
    >>> from diffst_sc.train import load_state, save_state
    >>> path = save_state("weights.pt", torch.nn.Linear(2, 2).state_dict())  # doctest: +SKIP
    >>> sorted(load_state(path))  # doctest: +SKIP
    ['bias', 'weight']
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"save_state expects a mapping (e.g. module.state_dict()), got {type(state_dict).__name__}."
        )
    check_plain(state_dict)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state_dict), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a file written by :func:`save_state` with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path
        File to read.
    map_location
        Where to put the tensors; the CPU by default, so a file written on a GPU loads anywhere.

    Returns
    -------
    dict
        The saved mapping.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a tensor-only mapping (for example a pickled module), or is damaged
        (truncated, overwritten).

    Examples
    --------
    >>> state = load_state("model/model.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No state file at {path}; check the path, or train/save first.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} is not a tensor-only state file: it holds pickled objects, which "
            "torch.load(weights_only=True) refuses. diffst_sc only loads files written by "
            "save_state; re-save the weights as a state dict with it."
        ) from err
    except Exception as err:
        raise ValueError(
            f"{path} is damaged or incomplete ({type(err).__name__}: {first_line(err)}): it was "
            "truncated or overwritten after it was written; write it again (model.save(...) for a "
            "model) or copy it anew from where it was saved."
        ) from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a mapping of tensors.")
    return state


def check_plain(value: object, where: str = "state") -> None:
    """Raise if ``value`` holds anything ``torch.load(weights_only=True)`` would refuse.

    Parameters
    ----------
    value
        Tensor, plain scalar, or dict/list/tuple of those.
    where
        Name of ``value`` used in the error message.

    Raises
    ------
    TypeError
        Naming the offending entry and how to make it plain.
    """
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_TYPES:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str keys.")
            check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple, torch.Size):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, which "
        "torch.load(weights_only=True) cannot read back; convert it to a tensor or to plain "
        "Python data (float(x), int(x), str(x), list(x)) before saving."
    )


def shape_mismatches(module: torch.nn.Module, state: Mapping) -> list[str]:
    """How ``state`` fails to fit ``module``: one short description per differing tensor.

    Parameters
    ----------
    module
        The module the weights are meant for.
    state
        A state dict, e.g. from :func:`load_state`.

    Returns
    -------
    list of str
        Missing, unexpected and differently shaped tensors (empty when ``state`` fits).
    """
    expected = module.state_dict()
    out = [f"{k!r} missing" for k in expected if k not in state]
    out += [f"{k!r} unexpected" for k in state if k not in expected]
    for key, tensor in expected.items():
        have = state.get(key)
        if isinstance(have, torch.Tensor) and have.shape != tensor.shape:
            out.append(f"{key!r} is {tuple(have.shape)} in the file, {tuple(tensor.shape)} in the "
                       "configuration")
    return out


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
