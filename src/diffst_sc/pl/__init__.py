"""Plots of inputs, outputs, uncertainty and training (matplotlib, scanpy's show/save)."""

from ._spots import spots
from ._superresolved import superresolved
from ._training import training_loss

__all__ = ["spots", "superresolved", "training_loss"]
