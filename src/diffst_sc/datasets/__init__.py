"""Datasets: a small embedded demo section and public datasets fetched on demand."""

from ._her2st import her2st, her2st_demo

__all__ = ["her2st", "her2st_demo"]
