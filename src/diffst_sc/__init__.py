"""Super-resolved spatial transcriptomics with a histology-guided cross-modal diffusion model."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, metrics, pl, pp, tl

try:
    __version__ = version("diffst-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["datasets", "io", "metrics", "pl", "pp", "tl", "DiffST", "__version__"]

#: Rooms that import torch, loaded on first use (``ds.model``, ``ds.module``, ...).
_TORCH_ROOMS = ("model", "module", "schedulers", "train")


def __getattr__(name: str):
    # torch is imported only when the model class is first used, to keep `import diffst_sc` fast.
    if name == "DiffST":
        from .model._diffst import DiffST

        return DiffST
    if name in _TORCH_ROOMS:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'diffst_sc' has no attribute {name!r}")
