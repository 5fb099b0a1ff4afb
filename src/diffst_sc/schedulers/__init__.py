"""Noise schedules, samplers and the projection onto the measured spots.

Separate from the denoising network (:mod:`diffst_sc.module`), so that a sampler can be swapped
without touching the model. Importing this package imports torch.
"""

from ._diffusion import DiffusionConfig, GaussianDiffusion
from ._projection import FootprintProjection, correction_rounds
from ._samplers import DDIMSampler, DDPMSampler, make_sampler

__all__ = ["DiffusionConfig", "GaussianDiffusion", "DDIMSampler", "DDPMSampler", "make_sampler",
           "FootprintProjection", "correction_rounds"]
