"""The user-facing model object: the network, its genes, its settings and its training history."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ._data import GridSpec

_FORMAT = "diffst_sc.model/1"
_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.pt"
_CHECKSUM_KEY = "weights_sha256"
#: Entries of ``config.json`` a model cannot be re-created without.
_REQUIRED = ("genes", "net", "diffusion", "grid")
_FIX = ("restore the file as it was saved, or fit and save the model again "
        "(model.save(path, overwrite=True))")


class DiffST:
    """A fitted (or freshly initialised) Diff-ST model.

    Made by :func:`diffst_sc.tl.fit`; used by :func:`diffst_sc.tl.superresolve`. Holds the torch
    network, the genes it models (in order), its configuration and the training history.

    Parameters
    ----------
    genes
        The modelled genes, in channel order.
    net_config
        :class:`diffst_sc.module.NetConfig` of the denoising network.
    diffusion_config
        :class:`diffst_sc.schedulers.DiffusionConfig` of the noise schedule.
    grid_spec
        How sections are rasterised (pixel size relative to the spot spacing, H&E scales).
    graph
        ``(G, G)`` gene co-expression graph used by the gene-graph convolution.
    training
        Settings the model was trained with (for the record).

    Examples
    --------
    >>> model = ds.tl.fit(sdata)  # doctest: +SKIP
    >>> model.save("her2st_model")  # doctest: +SKIP
    >>> model = ds.DiffST.load("her2st_model")  # doctest: +SKIP
    """

    def __init__(self, genes, net_config, diffusion_config, grid_spec: GridSpec | None = None,
                 graph: np.ndarray | None = None, training: dict | None = None):
        import torch

        from .._core._checks import check_unique_genes
        from ..module import DiffSTNet
        from ..schedulers import GaussianDiffusion

        self.genes = [str(g) for g in genes]
        check_unique_genes(self.genes, where="The model's gene list",
                           fix="The genes of a model must be unique: pass each gene once.")
        if net_config.n_genes != len(self.genes):
            raise ValueError(f"net_config.n_genes={net_config.n_genes} but {len(self.genes)} "
                             "genes were given.")
        self.net_config = net_config
        self.diffusion_config = diffusion_config
        self.grid_spec = grid_spec or GridSpec()
        self.training = dict(training or {})
        self.history: list[dict] = []
        #: Per-gene RMS error (model units) of the mean prediction on the training pairs.
        self.residual_sd: list[float] | None = None
        #: The low-capacity path (``tl._histology_path.HistologyPath``) the network refines.
        self.histology_path = None
        g = None if graph is None else torch.as_tensor(np.asarray(graph, np.float32))
        self.module = DiffSTNet(net_config, g)
        self.diffusion = GaussianDiffusion(diffusion_config)

    @property
    def deep(self) -> bool:
        """Whether the network was trained (``False``: the histology path alone)."""
        return bool(self.training.get("deep", True))

    def __repr__(self) -> str:
        if not self.deep:
            return f"DiffST({len(self.genes)} genes, histology path only)"
        steps = self.history[-1]["step"] if self.history else 0
        return (f"DiffST({len(self.genes)} genes, {self.n_parameters:,} parameters, "
                f"trained {steps} steps)")

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    def check_genes(self, available) -> None:
        """Raise a clear error when data lack any of the model's genes."""
        have = set(map(str, available))
        missing = [g for g in self.genes if g not in have]
        if missing:
            raise KeyError(
                f"The data lack {len(missing)} of the model's {len(self.genes)} genes, e.g. "
                f"{missing[:5]}. A model super-resolves only the genes it was fitted on: fit a "
                "new model on these data (ds.tl.fit) or pass data measuring those genes."
            )

    def config(self) -> dict:
        """The JSON-serialisable description of the model (everything but the weights)."""
        return {
            "format": _FORMAT,
            "genes": self.genes,
            "net": self.net_config.to_dict(),
            "diffusion": self.diffusion_config.to_dict(),
            "grid": asdict(self.grid_spec),
            "training": self.training,
            "history": self.history,
            "residual_sd": self.residual_sd,
            "histology_path": None if self.histology_path is None
            else self.histology_path.to_dict(),
        }

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``config.json`` and a tensor-only ``model.pt`` into folder ``path``.

        The weights load with ``torch.load(path, weights_only=True)``; no code is pickled.
        ``config.json`` records the SHA-256 of ``model.pt``, checked by :meth:`load`. The
        tables the model was fitted on, when still in memory, record the folder in
        ``uns["diffst_model"]``, so that :func:`diffst_sc.tl.superresolve` finds the model again
        after the data are written and read back.
        """
        from ..train._checkpoint import file_sha256, save_state
        from ._saved import record_saved_model

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to "
                                  "replace the model saved there.")
        path.mkdir(parents=True, exist_ok=True)
        save_state(path / _WEIGHTS_FILE, self.module.state_dict())
        config = {**self.config(), _CHECKSUM_KEY: file_sha256(path / _WEIGHTS_FILE)}
        (path / _CONFIG_FILE).write_text(json.dumps(config, indent=1))
        record_saved_model(self, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DiffST:
        """Load a model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            When ``path`` holds no ``config.json`` or no ``model.pt``.
        ValueError
            In one line naming the file and the fix, when ``config.json`` is not valid JSON,
            lacks an entry, does not describe a model or no longer matches the weights, and when
            ``model.pt`` does not match the checksum recorded at saving.
        """
        from ..train._checkpoint import load_state, shape_mismatches

        path = Path(path)
        cfg_file = path / _CONFIG_FILE
        cfg = _read_config(cfg_file)
        model = _from_config(cls, cfg, cfg_file)
        weights = path / _WEIGHTS_FILE
        _check_checksum(weights, cfg.get(_CHECKSUM_KEY))
        state = load_state(weights)
        bad = shape_mismatches(model.module, state)
        if bad:
            raise ValueError(
                f"{cfg_file} does not match the weights in {weights.name} ({len(bad)} tensors "
                f"differ, e.g. {bad[0]}): the file was edited after saving; {_FIX}"
            )
        model.module.load_state_dict(state)
        return model


def _read_config(cfg_file: Path) -> dict:
    """The parsed ``config.json`` of a saved model, with its format and entries checked."""
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: `path` must be a folder written by "
                                "DiffST.save().")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_file} is not valid JSON (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); {_FIX}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != _FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ValueError(f"{cfg_file} is not a diffst_sc model (format {found!r}); pass the "
                         "folder written by DiffST.save().")
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"{cfg_file} lacks the entr{'y' if len(missing) == 1 else 'ies'} "
                         f"{', '.join(map(repr, missing))}; {_FIX}")
    return cfg


def _from_config(cls, cfg: dict, cfg_file: Path) -> DiffST:
    """The model ``cfg`` describes, with fresh weights; bad entries named in one line."""
    from ..module import NetConfig
    from ..schedulers import DiffusionConfig
    from ..train._checkpoint import first_line

    try:
        model = cls(cfg["genes"], NetConfig.from_dict(cfg["net"]),
                    DiffusionConfig(**cfg["diffusion"]), GridSpec(**cfg["grid"]),
                    training=cfg.get("training"))
        model.history = list(cfg.get("history") or [])
        model.residual_sd = cfg.get("residual_sd")
        if cfg.get("histology_path") is not None:
            from ._histology_path import HistologyPath

            model.histology_path = HistologyPath.from_dict(cfg["histology_path"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{cfg_file} does not describe a valid model ({type(err).__name__}: "
                         f"{first_line(err)}); {_FIX}") from None
    return model


def _check_checksum(weights: Path, expected: str | None) -> None:
    """Raise when ``weights`` does not hash to ``expected`` (models saved without one pass)."""
    from ..train._checkpoint import file_sha256

    if expected is None or not weights.is_file():  # load_state names a missing file
        return
    if file_sha256(weights) != expected:
        raise ValueError(f"{weights} does not match the checksum recorded in {_CONFIG_FILE}: the "
                         "file is damaged or was replaced; save the model again "
                         "(model.save(path, overwrite=True)) or copy its folder anew from where "
                         "it was saved.")
