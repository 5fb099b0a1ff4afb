"""The networks: pure torch modules of Diff-ST.

Nothing here knows AnnData or SpatialData: arrays and tensors in, arrays and tensors out.
:mod:`diffst_sc.model` turns sections into them. Importing this package imports torch.
``DiffSTNet`` wires the parts; each part is a module of its own, to reuse or to replace.
"""

from ._config import NetConfig, preset
from ._cross_attention import DynamicCellAttention, fourier_position, grid_centres
from ._disentangle import ConcatFusion, CrossModalDisentangle, disentangle_loss
from ._encoders import CellEncoder, ColourDeconvolution, ExpressionEncoder, HistologyEncoder
from ._gene_graph import GeneGraphConv, normalise_graph
from ._network import ConditionFeatures, DiffSTNet
from ._unet import ModulatedGroupNorm, UNet, timestep_embedding

__all__ = [
    "NetConfig", "preset", "DiffSTNet", "ConditionFeatures",
    "HistologyEncoder", "ExpressionEncoder", "CellEncoder", "ColourDeconvolution",
    "CrossModalDisentangle", "ConcatFusion", "disentangle_loss",
    "DynamicCellAttention", "fourier_position", "grid_centres",
    "GeneGraphConv", "normalise_graph",
    "UNet", "ModulatedGroupNorm", "timestep_embedding",
]
