"""The denoising loss: a noise level and noise per example, the network's prediction, its error."""

from __future__ import annotations

import torch


def denoising_loss(diffusion, net, x0: torch.Tensor, cond: dict, weight: torch.Tensor,
                   generator: torch.Generator | None = None, aux_weight: float = 1.0):
    """Weighted denoising loss of ``net`` on a batch, under ``diffusion``'s schedule.

    Each example gets a random level ``t`` and noise, ``x_t = diffusion.q_sample(x0, t, noise)``,
    and the squared error of ``net``'s prediction against ``diffusion.target(x0, noise, t)``,
    averaged over genes, weighted per pixel. With a deterministic schedule (the regression
    ablation) the network sees no noise and predicts ``x0``.

    Parameters
    ----------
    diffusion
        A :class:`diffst_sc.schedulers.GaussianDiffusion`.
    net
        Callable ``net(x_t, t_frac, cond) -> (prediction, aux_loss)``.
    x0
        ``(B, G, H, W)`` clean target maps.
    cond
        Conditioning tensors passed through to ``net``.
    weight
        ``(B, 1, H, W)`` confidence of the target per pixel (0 where nothing is known).
    generator
        Source of the levels and noise (on ``x0``'s device).
    aux_weight
        Factor on the network's auxiliary (disentangling) loss, which the network has already
        weighted by its own configuration.

    Returns
    -------
    tuple[torch.Tensor, dict[str, torch.Tensor]]
        The scalar loss and its parts.

    Examples
    --------
    >>> import torch
    >>> from diffst_sc.schedulers import DiffusionConfig, GaussianDiffusion
    >>> from diffst_sc.train import denoising_loss
    >>> d = GaussianDiffusion(DiffusionConfig(prediction="x0"))
    >>> perfect = lambda x_t, t, cond: (torch.zeros_like(x_t), 0.0)
    >>> loss, parts = denoising_loss(d, perfect, torch.zeros(2, 3, 4, 4), {},
    ...                              torch.ones(2, 1, 4, 4))
    >>> float(loss)
    0.0
    """
    b = x0.shape[0]
    steps = diffusion.num_train_steps
    if diffusion.config.deterministic:
        out, aux = net(torch.zeros_like(x0), torch.ones(b, device=x0.device), cond)
        target = x0
    else:
        t = torch.randint(0, steps, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        out, aux = net(diffusion.q_sample(x0, t, noise), t.float() / steps, cond)
        target = diffusion.target(x0, noise, t)
    err = ((out.float() - target) ** 2).mean(dim=1, keepdim=True)
    mse = (err * weight).sum() / weight.sum().clamp_min(1e-6)
    total = mse + aux_weight * aux
    return total, {"mse": mse.detach(), "aux": aux.detach() if torch.is_tensor(aux) else aux}
