"""Pure torch parts of Diff-ST: the network, the diffusion, the samplers and the training loop.

Nothing here knows AnnData or SpatialData; :mod:`diffst_sc.tl` turns data into tensors.
"""

from ._checkpoint import load_state, save_state
from ._config import NetConfig, preset
from ._consistency import FootprintProjection
from ._device import resolve_device
from ._diffusion import DiffusionConfig, GaussianDiffusion
from ._network import ConditionFeatures, DiffSTNet
from ._patches import PatchSampler, SectionArrays
from ._samplers import DDIMSampler, DDPMSampler, make_sampler
from ._trainer import EMA, StepInfo, TrainerConfig, TrainingResult, fit_model, unwrap_module

__all__ = [
    "NetConfig", "preset", "DiffSTNet", "ConditionFeatures", "DiffusionConfig", "GaussianDiffusion", "DDIMSampler",
    "DDPMSampler", "make_sampler", "FootprintProjection", "PatchSampler", "SectionArrays",
    "TrainerConfig", "TrainingResult", "StepInfo", "EMA", "fit_model", "unwrap_module",
    "resolve_device", "save_state", "load_state",
]
