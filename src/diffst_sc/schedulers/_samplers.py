"""Samplers that run the reverse process with any network and schedule (DDIM, DDPM)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._diffusion import GaussianDiffusion

Projection = Callable[[torch.Tensor], torch.Tensor]


class Sampler:
    """Base class: respaced timesteps and a loop that calls ``step``.

    Parameters
    ----------
    diffusion
        The schedule the network was trained with.
    steps
        Number of denoising steps (respaced evenly over the training steps).
    """

    def __init__(self, diffusion: GaussianDiffusion, steps: int = 20):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
        self.diffusion = diffusion
        n = diffusion.num_train_steps
        self.steps = min(steps, n)
        self.timesteps = torch.linspace(n - 1, 0, self.steps).round().long()

    @torch.no_grad()
    def sample(self, net: Callable, shape: tuple, cond: dict, *,
               generator: torch.Generator | None = None, device=None,
               project: Projection | None = None) -> torch.Tensor:
        """Draw samples of ``shape`` ``(N, G, H, W)`` given ``cond`` (batched to ``N``).

        ``net(x_t, t_frac) -> prediction`` has its conditioning bound already. ``project``, if
        given, maps each step's estimate of the clean maps onto the set consistent with the
        measurement before the next step is taken.
        """
        device = device or self.timesteps.device
        d = self.diffusion
        if d.config.deterministic:
            out = net(torch.zeros(shape, device=device),
                      torch.ones(shape[0], device=device))
            return project(out) if project is not None else out
        x = torch.randn(shape, device=device, generator=generator)
        ts = self.timesteps.tolist()
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
            out = net(x, tt.float() / d.num_train_steps)
            x0, eps = d.split(x, tt, out)
            if project is not None:
                x0 = project(x0)
                eps = _eps_from(d, x, tt, x0)
            x = self.step(x, x0, eps, t, t_prev, generator)
        return x

    def step(self, x, x0, eps, t, t_prev, generator):  # pragma: no cover - abstract
        raise NotImplementedError


def _eps_from(d: GaussianDiffusion, x, t, x0):
    a = d.abar(t)
    return (x - a.sqrt() * x0) / (1 - a).sqrt().clamp_min(1e-8)


class DDIMSampler(Sampler):
    """DDIM (Song et al., 2021): deterministic for ``eta=0``, ancestral-like for ``eta=1``.

    Examples
    --------
    >>> from diffst_sc.schedulers import DDIMSampler, GaussianDiffusion
    >>> len(DDIMSampler(GaussianDiffusion(), steps=20).timesteps)
    20
    """

    def __init__(self, diffusion: GaussianDiffusion, steps: int = 20, eta: float = 0.0):
        super().__init__(diffusion, steps)
        self.eta = float(eta)

    def step(self, x, x0, eps, t, t_prev, generator):
        """One DDIM update from level ``t`` to ``t_prev`` (-1: the clean maps)."""
        if t_prev < 0:
            return x0
        a = self.diffusion.alphas_cumprod[t].item()
        a_prev = self.diffusion.alphas_cumprod[t_prev].item()
        sigma = self.eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
        dir_coef = max(1 - a_prev - sigma**2, 0.0) ** 0.5
        x_prev = a_prev**0.5 * x0 + dir_coef * eps
        if sigma > 0:
            x_prev = x_prev + sigma * torch.randn(x.shape, device=x.device, generator=generator)
        return x_prev


class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al., 2020) over the respaced steps.

    Examples
    --------
    >>> from diffst_sc.schedulers import DDPMSampler, GaussianDiffusion
    >>> DDPMSampler(GaussianDiffusion(), steps=50).steps
    50
    """

    def step(self, x, x0, eps, t, t_prev, generator):
        """Sample ``x_{t_prev}`` from the posterior ``q(x_{t_prev} | x_t, x0_hat)``."""
        if t_prev < 0:
            return x0
        a = self.diffusion.alphas_cumprod[t].item()
        a_prev = self.diffusion.alphas_cumprod[t_prev].item()
        beta = 1 - a / a_prev
        c0 = a_prev**0.5 * beta / (1 - a)
        ct = (a / a_prev) ** 0.5 * (1 - a_prev) / (1 - a)
        var = beta * (1 - a_prev) / (1 - a)
        noise = torch.randn(x.shape, device=x.device, generator=generator)
        return c0 * x0 + ct * x + var**0.5 * noise


def make_sampler(name: str, diffusion: GaussianDiffusion, steps: int) -> Sampler:
    """A sampler by name: ``"ddim"`` (default), ``"ddim-eta1"`` or ``"ddpm"``.

    Examples
    --------
    >>> from diffst_sc.schedulers import GaussianDiffusion, make_sampler
    >>> type(make_sampler("ddpm", GaussianDiffusion(), 10)).__name__
    'DDPMSampler'
    """
    if name == "ddim":
        return DDIMSampler(diffusion, steps, eta=0.0)
    if name == "ddim-eta1":
        return DDIMSampler(diffusion, steps, eta=1.0)
    if name == "ddpm":
        return DDPMSampler(diffusion, steps)
    raise ValueError(f"Unknown sampler {name!r}; use 'ddim', 'ddim-eta1' or 'ddpm'.")
