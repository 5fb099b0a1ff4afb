"""Training: the loop, its checkpoints, the device and process group, and the patch sampler.

Tensors in, trained modules out; no AnnData. Importing this package imports torch.
"""

from ._checkpoint import load_state, save_state
from ._device import resolve_device
from ._patches import PatchSampler, SectionArrays, dihedral, dihedral_xy
from ._trainer import (
    EMA,
    StepInfo,
    TrainerConfig,
    TrainingResult,
    derive_seed,
    fit_model,
    lr_factor,
    resolve_precision,
    unwrap_module,
)

__all__ = ["SectionArrays", "PatchSampler", "dihedral", "dihedral_xy", "TrainerConfig",
           "TrainingResult", "StepInfo", "EMA", "fit_model", "lr_factor", "derive_seed",
           "resolve_precision", "unwrap_module", "resolve_device", "save_state", "load_state"]
