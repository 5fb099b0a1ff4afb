"""Diff-ST: the cross-modal diffusion network, as a refinement of a fitted histology model.

Built only when asked for (``ds.tl.fit(..., deep=True)``). It holds its base, a
:class:`~diffst_sc.model.HistologyModel`, and samples what the base map leaves: a residual in
model units, added to the base and corrected to the spots like the base alone would be. Torch is
imported when one is made or loaded, never by ``import diffst_sc``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._core._view import SectionView
from ._calibration import Calibration
from ._histology import HistologyModel
from ._maps import SectionMaps
from ._store import prepare_folder, read_folder, write_folder

FORMAT = "diffst_sc.diffst/2"
WEIGHTS_FILE = "model.pt"


class DiffST:
    """A Diff-ST network trained on what its histology model leaves.

    Parameters
    ----------
    base
        The fitted histology model whose map the network refines; ``None`` for the ablation of
        the network alone (its condition is then the interpolated spots).
    net_config
        :class:`diffst_sc.module.NetConfig` of the denoising network.
    diffusion_config
        :class:`diffst_sc.schedulers.DiffusionConfig` of the noise schedule.
    genes
        The modelled genes (the base's when there is one).
    graph
        ``(G, G)`` gene co-expression graph for the gene-graph convolution, or ``None``.
    training
        Settings the network was trained with (for the record).

    Attributes
    ----------
    residual_scale
        Factor on the network's residual before it is added to the base map: the gate that
        decides how much of the refinement a map takes (1: all of it; 0: the map is the base
        model's, and the network is not run). :func:`~diffst_sc.model.train_diffst` sets it
        from held-out tiles of the training pairs, in ``[0, 1]``.
    held_out
        What the held-out tiles said (``None`` for a network trained without them): the number
        of held-out target spots (``n_spots``), the squared error of the base map, of the map
        with the whole residual and of the gated one there (``mse_base``, ``mse_network``,
        ``mse_gated``, standardised log units), ``gain`` (``mse_base - mse_gated``), the
        checkpoint kept (``best_step``, ``best_loss``) and the held-out loss along training
        (``losses``, ``[step, loss]`` pairs).
    history
        The training log, one entry per logged step.
    residual_sd
        ``(G,)`` RMS error of the mean prediction on the training pairs (model units).

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.datasets.her2st_demo()  # the embedded her2st section
    >>> deep = ds.tl.fit(sdata, n_genes=8, deep=True, max_steps=2, progress=False)
    >>> deep.base
    HistologyModel(8 genes, fitted on 1 section, held-out error ...)
    """

    def __init__(self, base: HistologyModel | None, net_config, diffusion_config,
                 genes=None, graph: np.ndarray | None = None, training: dict | None = None):
        import torch

        from ..module import DiffSTNet
        from ..schedulers import GaussianDiffusion

        self.base = base
        self.genes = list(base.genes) if base is not None else [str(g) for g in genes]
        if net_config.n_genes != len(self.genes):
            raise ValueError(f"net_config.n_genes={net_config.n_genes} but {len(self.genes)} "
                             "genes were given.")
        self.net_config = net_config
        self.diffusion_config = diffusion_config
        self.graph = None if graph is None else np.asarray(graph, np.float32)
        self.training = dict(training or {})
        self.history: list[dict] = []
        self.residual_sd: list[float] | None = None
        self.residual_scale = 1.0
        self.held_out: dict | None = None
        g = None if self.graph is None else torch.as_tensor(self.graph)
        self.module = DiffSTNet(net_config, g)
        self.diffusion = GaussianDiffusion(diffusion_config)

    @property
    def grid_spec(self):
        """How sections are rasterised (the base's)."""
        from ._conditions import GridSpec

        return self.base.grid_spec if self.base is not None else GridSpec()

    def __repr__(self) -> str:
        steps = self.history[-1]["step"] if self.history else 0
        on = "on its histology model" if self.base is not None else "without a histology model"
        return (f"DiffST({len(self.genes)} genes, {self.n_parameters:,} parameters, trained "
                f"{steps} steps {on})")

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    def check_genes(self, available) -> None:
        """Raise a clear error when data lack any of the model's genes."""
        if self.base is not None:
            return self.base.check_genes(available)
        missing = [g for g in self.genes if g not in set(map(str, available))]
        if missing:
            raise KeyError(f"The data lack {len(missing)} of the model's genes, e.g. "
                           f"{missing[:5]}; fit a new model on these data (ds.tl.fit).")

    def predict(self, view: SectionView, *, missing=None, pixel_px: float | None = None,
                outside: float = 0.0, n_samples: int = 8, steps: int = 20,
                sampler: str = "ddim-eta1", seed: int = 0, device="auto", tile_size: int = 64,
                progress: bool = True, calibration: Calibration | None = None) -> SectionMaps:
        """The section's maps: the mean and spread of ``n_samples`` samples per tile.

        Each sample is the base map plus ``residual_scale`` times the network's residual, every
        denoising step projected onto the spots. The base map is the histology model's on this
        section: its departures weighed as the section's own pairs say (``calibration``,
        measured unless given: ``HistologyModel.calibrate``). With ``residual_scale=0`` the
        network is not run and the maps are the histology model's. The same ``seed`` gives the
        same maps.
        """
        from ._histology import warn_uninformative
        from ._maps import MapSection

        self.check_genes(view.genes)
        scale = float(self.residual_scale)
        network = scale != 0.0
        if self.base is not None:
            section, cal = self.base.prepare(view, missing, cells=network,
                                             calibration=calibration)
            if calibration is None:
                warn_uninformative(cal, self.genes, section.view)
        else:
            section = MapSection.prepare(view, self.genes, self.grid_spec, missing,
                                         cells=network)
            cal = None
        if network:
            mean, std = self._sample(section, scale, n_samples, steps, sampler, seed, device,
                                     tile_size, progress)
            error = self.residual_sd
        else:  # the gate is closed: the base's map, as the histology model makes it
            mean, std = section.corrected_base(tile_size, progress), None
            error = self.base.residual_sd if self.base is not None else self.residual_sd
        if error is None:
            error = np.zeros(len(self.genes))
        ratio = None if self.base is None else self.base.path.radius_ratio
        return section.finish(mean, std, error, pixel_px=pixel_px, outside=outside,
                              calibration=cal, resolved_ratio=ratio)

    def _sample(self, section, scale: float, n_samples: int, steps: int, sampler: str,
                seed: int, device, tile_size: int, progress: bool):
        """Blended mean and spread (counts) of the samples of base + ``scale`` x residual."""
        import torch

        from .._core._conditions import patch_condition
        from ..schedulers import make_sampler
        from ..train import resolve_device

        dev = resolve_device(device)
        cfg, net = self.net_config, self.module.to(dev).eval()
        net.set_active_cells(cfg.n_cells)
        size = section.tile_size(tile_size, cfg.patch_multiple)
        smp = make_sampler(sampler, self.diffusion, steps)
        g = len(self.genes)
        to_dev = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731

        def predict(n, i, j):
            rng = np.random.default_rng([seed, n])
            proj = section.tile_projection(i, j, size, to=to_dev)
            cond = patch_condition(section.arrays, i, j, size, cfg.n_cells, cfg.cell_size, rng)
            cond = {k: to_dev(np.ascontiguousarray(v))[None] for k, v in cond.items()}
            base = cond["lr"] if self.base is not None else torch.zeros_like(cond["lr"])
            gen = torch.Generator(device=dev).manual_seed(int(rng.integers(2**62)))
            with torch.no_grad():
                feats = net.encode_condition(cond).repeat(n_samples)

                def fn(x, t, feats=feats):
                    return net(x, t, cond_features=feats)[0].float()

                r = smp.sample(fn, (n_samples, g, size, size), cond, generator=gen, device=dev,
                               project=lambda r: proj(r + base) - base)
            # a scaled residual is projected again, so that the map keeps the spots' totals
            z = base + r if scale == 1.0 else proj(base + scale * r)
            return section.scaler.to_counts(z.cpu().numpy(), section.area, gene_axis=1)

        return section.blend(predict, size, progress, desc="super-resolving")

    # -- storage --------------------------------------------------------------------------------

    def config(self) -> dict:
        """The model as a dict of JSON values and numpy arrays (everything but the weights)."""
        return {"format": FORMAT, "genes": self.genes, "net": self.net_config.to_dict(),
                "diffusion": self.diffusion_config.to_dict(), "training": self.training,
                "history": self.history, "residual_sd": self.residual_sd,
                "residual_scale": self.residual_scale, "held_out": self.held_out,
                "graph": self.graph,
                "base": None if self.base is None else self.base.config()}

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``config.json``, ``arrays.npz`` (the base, the gene graph) and ``model.pt``.

        The weights load with ``torch.load(path, weights_only=True)``; no code is pickled.
        ``config.json`` records the checksum of every file, checked by :meth:`load`.
        """
        from ..train import save_state

        folder = prepare_folder(path, overwrite)
        save_state(folder / WEIGHTS_FILE, self.module.state_dict())
        return write_folder(folder, self.config(), extra_files=(WEIGHTS_FILE,))

    @classmethod
    def load(cls, path: str | Path) -> DiffST:
        """Load a model written by :meth:`save`; damaged or edited files are refused."""
        from ..module import NetConfig
        from ..schedulers import DiffusionConfig
        from ..train import load_state, shape_mismatches

        path = Path(path)
        cfg = read_folder(path, FORMAT, cls.__name__, ("genes", "net", "diffusion"))
        fix = "fit and save the model again (model.save(path, overwrite=True))"
        try:
            base = None if cfg.get("base") is None else HistologyModel.from_config(cfg["base"])
            model = cls(base, NetConfig.from_dict(cfg["net"]),
                        DiffusionConfig(**cfg["diffusion"]), genes=cfg["genes"],
                        graph=cfg.get("graph"), training=cfg.get("training"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path / 'config.json'} does not describe a valid model "
                             f"({type(err).__name__}: {err}); {fix}.") from None
        model.history = list(cfg.get("history") or [])
        model.residual_sd = cfg.get("residual_sd")
        model.residual_scale = float(cfg.get("residual_scale", 1.0))
        model.held_out = cfg.get("held_out")
        state = load_state(path / WEIGHTS_FILE)
        bad = shape_mismatches(model.module, state)
        if bad:
            raise ValueError(f"{path / 'config.json'} does not match the weights in "
                             f"{WEIGHTS_FILE} ({len(bad)} tensors differ, e.g. {bad[0]}); {fix}.")
        model.module.load_state_dict(state)
        return model
