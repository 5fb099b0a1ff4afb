"""Tools: fit a model, super-resolve sections, evaluate the result."""

from ._evaluate import evaluate
from ._fit import fit
from ._superresolve import superresolve

__all__ = ["fit", "superresolve", "evaluate"]
