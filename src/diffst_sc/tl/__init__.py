"""Tools: fit the model, super-resolve sections, evaluate the result."""

from ._evaluate import evaluate
from ._fit import fit
from ._superresolve import superresolve

__all__ = ["fit", "superresolve", "evaluate", "DiffST"]


def __getattr__(name: str):
    if name == "DiffST":
        from ..model._diffst import DiffST

        return DiffST
    raise AttributeError(f"module 'diffst_sc.tl' has no attribute {name!r}")
