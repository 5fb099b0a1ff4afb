"""Super-resolved spatial transcriptomics from spot expression and the H&E of the same section.

The rooms (``ds.pp``, ``ds.tl``, ``ds.pl``, ``ds.io``, ``ds.datasets``, ``ds.metrics``,
``ds.model`` and the torch rooms ``ds.module``, ``ds.schedulers``, ``ds.train``) are imported
on first use, so that ``import diffst_sc`` is quick and imports neither AnnData nor torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffst-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

#: The rooms, loaded on first attribute access.
_ROOMS = ("datasets", "io", "metrics", "pl", "pp", "tl", "model", "module", "schedulers",
          "train")
#: The model classes, also reachable as ``ds.HistologyModel`` and ``ds.DiffST``.
_MODELS = ("HistologyModel", "DiffST")

__all__ = [*_ROOMS, *_MODELS, "__version__"]


def __getattr__(name: str):
    if name in _ROOMS:
        return import_module(f".{name}", __name__)
    if name in _MODELS:
        return getattr(import_module(".model", __name__), name)
    raise AttributeError(f"module 'diffst_sc' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_ROOMS, *_MODELS])
