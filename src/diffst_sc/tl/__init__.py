"""Tools: fit a model, super-resolve sections, evaluate the result, read it out per cell."""

from ._cells import cell_expression
from ._evaluate import evaluate
from ._fit import fit
from ._nuclei import segment_nuclei
from ._superresolve import superresolve

__all__ = ["fit", "superresolve", "evaluate", "segment_nuclei", "cell_expression"]
