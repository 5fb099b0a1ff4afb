"""Gaussian diffusion: the noise schedule and the training objective, apart from any network."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass
class DiffusionConfig:
    """Settings of the forward (noising) process and of what the network predicts.

    Attributes
    ----------
    num_train_steps
        Number of discrete noise levels during training (1000 as in DDPM and Diff-ST).
    schedule
        ``"linear"`` (betas from ``beta_start`` to ``beta_end``) or ``"cosine"``.
    prediction
        What the network outputs: ``"eps"`` (the noise), ``"x0"`` (the clean maps) or ``"v"``.
    deterministic
        Train a plain regression network instead of a diffusion model (the non-diffusion
        ablation): the network sees no noisy input and predicts ``x0`` directly.

    Examples
    --------
    >>> from diffst_sc.schedulers import DiffusionConfig
    >>> DiffusionConfig(prediction="eps").num_train_steps
    1000
    """

    num_train_steps: int = 1000
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "x0"
    deterministic: bool = False

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


class GaussianDiffusion:
    """Noise schedule, ``q(x_t | x_0)`` and what the network predicts at each level.

    Parameters
    ----------
    config
        The schedule's settings.

    Examples
    --------
    >>> import torch
    >>> from diffst_sc.schedulers import GaussianDiffusion
    >>> d = GaussianDiffusion()
    >>> x0 = torch.zeros(1, 3, 8, 8)
    >>> d.q_sample(x0, torch.tensor([999]), torch.randn(1, 3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """

    def __init__(self, config: DiffusionConfig | None = None):
        self.config = config or DiffusionConfig()
        c = self.config
        if c.prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', not {c.prediction!r}.")
        betas = _betas(c.schedule, c.num_train_steps, c.beta_start, c.beta_end)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float()

    @property
    def num_train_steps(self) -> int:
        """Number of training noise levels."""
        return self.config.num_train_steps

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """Cumulative signal fraction at integer steps ``t``, shaped for broadcasting."""
        a = self.alphas_cumprod.to(t.device)[t.long().clamp(0, self.num_train_steps - 1)]
        return a.view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean maps ``x0`` to level ``t``."""
        a = self.abar(t)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def split(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor):
        """Turn the network's output into estimates ``(x0_hat, eps_hat)``."""
        a = self.abar(t)
        if self.config.prediction == "x0":
            x0 = out
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt().clamp_min(1e-8)
        elif self.config.prediction == "eps":
            eps = out
            x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        else:  # v = sqrt(a) eps - sqrt(1 - a) x0
            x0 = a.sqrt() * x_t - (1 - a).sqrt() * out
            eps = (1 - a).sqrt() * x_t + a.sqrt() * out
        return x0, eps

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to predict at ``x_t = q_sample(x0, t, noise)``.

        ``x0`` itself, the ``noise``, or the velocity ``sqrt(abar) noise - sqrt(1 - abar) x0``,
        as the configuration's ``prediction`` says; :meth:`split` inverts it.
        """
        if self.config.prediction == "x0":
            return x0
        if self.config.prediction == "eps":
            return noise
        a = self.abar(t)
        return a.sqrt() * noise - (1 - a).sqrt() * x0


def _betas(schedule: str, n: int, start: float, end: float) -> torch.Tensor:
    if schedule == "linear":
        return torch.linspace(start, end, n, dtype=torch.float64)
    if schedule == "cosine":
        s = 0.008
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"Unknown schedule {schedule!r}; use 'linear' or 'cosine'.")
