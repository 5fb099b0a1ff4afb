"""Training: the loop, its checkpoints, the device and process group, and the patch sampler.

Tensors in, trained modules out; no AnnData. Importing this package imports torch.
"""

from ._checkpoint import load_state, save_state
from ._device import resolve_device
from ._patches import PatchSampler, SectionArrays
from ._trainer import EMA, StepInfo, TrainerConfig, TrainingResult, fit_model, unwrap_module

__all__ = ["SectionArrays", "PatchSampler", "TrainerConfig", "TrainingResult", "StepInfo", "EMA",
           "fit_model", "unwrap_module", "resolve_device", "save_state", "load_state"]
