"""The denoising loss, apart from any real network."""

import torch

from diffst_sc.schedulers import DiffusionConfig, GaussianDiffusion
from diffst_sc.train import denoising_loss


def test_loss_ignores_pixels_of_zero_weight():
    d = GaussianDiffusion(DiffusionConfig(prediction="x0"))
    x0 = torch.zeros(2, 3, 4, 4)
    weight = torch.zeros(2, 1, 4, 4)
    weight[..., :2, :] = 1

    def net(x_t, t, cond):
        out = torch.zeros_like(x_t)
        out[..., 2:, :] = 100.0  # wrong only where nothing is known
        return out, torch.tensor(0.0)

    loss, parts = denoising_loss(d, net, x0, {}, weight, torch.Generator().manual_seed(0))
    assert float(loss) == 0.0 and float(parts["mse"]) == 0.0
