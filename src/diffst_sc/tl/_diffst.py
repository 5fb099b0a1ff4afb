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


class DiffST:
    """A fitted (or freshly initialised) Diff-ST model.

    Made by :func:`diffst_sc.tl.fit`; used by :func:`diffst_sc.tl.superresolve`. Holds the torch
    network, the genes it models (in order), its configuration and the training history.

    Parameters
    ----------
    genes
        The modelled genes, in channel order.
    net_config
        :class:`diffst_sc.model.NetConfig` of the denoising network.
    diffusion_config
        :class:`diffst_sc.model.DiffusionConfig` of the noise schedule.
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

        from ..model import DiffSTNet, GaussianDiffusion

        self.genes = [str(g) for g in genes]
        if len(set(self.genes)) != len(self.genes):
            raise ValueError("The genes of a model must be unique.")
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
        """
        from ..model._checkpoint import save_state

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to "
                                  "replace the model saved there.")
        path.mkdir(parents=True, exist_ok=True)
        save_state(path / _WEIGHTS_FILE, self.module.state_dict())
        (path / _CONFIG_FILE).write_text(json.dumps(self.config(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> DiffST:
        """Load a model written by :meth:`save`."""
        from ..model import DiffusionConfig, NetConfig
        from ..model._checkpoint import load_state

        path = Path(path)
        cfg_file = path / _CONFIG_FILE
        if not cfg_file.exists():
            raise FileNotFoundError(f"{cfg_file} not found: `path` must be a folder written by "
                                    "DiffST.save().")
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("format") != _FORMAT:
            raise ValueError(f"{cfg_file} is not a diffst_sc model (format {cfg.get('format')!r}).")
        model = cls(cfg["genes"], NetConfig.from_dict(cfg["net"]),
                    DiffusionConfig(**cfg["diffusion"]), GridSpec(**cfg["grid"]),
                    training=cfg.get("training"))
        model.module.load_state_dict(load_state(path / _WEIGHTS_FILE))
        model.history = list(cfg.get("history", []))
        model.residual_sd = cfg.get("residual_sd")
        if cfg.get("histology_path") is not None:
            from ._histology_path import HistologyPath

            model.histology_path = HistologyPath.from_dict(cfg["histology_path"])
        return model
