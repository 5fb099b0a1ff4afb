"""Training: the loop, the denoising loss, its checkpoints, the device and process group, and the patch sampler.

Tensors in, trained modules out; no AnnData. Importing this package imports torch.
"""

from ._checkpoint import load_state, save_state, shape_mismatches
from ._config import StepInfo, StopTraining, TrainerConfig, TrainingResult
from ._device import resolve_device, unwrap_module
from ._ema import EMA
from ._loss import denoising_loss
from ._patches import PatchSampler, SectionArrays, dihedral, dihedral_xy
from ._precision import resolve_precision
from ._trainer import fit_model

__all__ = ["SectionArrays", "PatchSampler", "dihedral", "dihedral_xy", "TrainerConfig",
           "TrainingResult", "StepInfo", "StopTraining", "EMA", "fit_model", "denoising_loss", "resolve_precision",
           "unwrap_module", "resolve_device", "save_state", "load_state", "shape_mismatches"]
