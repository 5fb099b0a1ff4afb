"""The networks: pure torch modules of Diff-ST, and the ridge of the histology path.

Nothing here knows AnnData or SpatialData: arrays and tensors in, arrays and tensors out.
:mod:`diffst_sc.model` turns sections into them. Importing this package imports torch.
"""

from ._config import NetConfig, preset
from ._network import ConditionFeatures, DiffSTNet
from ._ridge import Ridge

__all__ = ["NetConfig", "preset", "DiffSTNet", "ConditionFeatures", "Ridge"]
