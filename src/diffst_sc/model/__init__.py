"""The user object: :class:`DiffST`, fitted by ``ds.tl.fit``, saved and loaded from a folder.

It holds the trained parts (:mod:`diffst_sc.module`) and what it needs to apply them to a new
section; this package also turns sections into the arrays those parts take.
"""

from ._diffst import DiffST

__all__ = ["DiffST"]
