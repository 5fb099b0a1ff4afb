"""A small overfitting run: the loss falls and samples approach the memorised truth."""

import torch

from diffst_sc.module import DiffSTNet, preset
from diffst_sc.schedulers import DiffusionConfig, GaussianDiffusion, make_sampler
from diffst_sc.train import TrainerConfig, denoising_loss, fit_model


def _batch(g=4, p=16, k=2, n_cells=4, c=8):
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, p), torch.linspace(-1, 1, p), indexing="ij")
    x0 = torch.stack([torch.sin(3 * xx + i) * torch.cos(2 * yy - i) for i in range(g)])[None]
    he = torch.rand(1, 3, p * k, p * k, generator=gen)
    return {
        "x0": x0, "weight": torch.ones(1, 1, p, p),
        "lr": torch.nn.functional.avg_pool2d(x0, 4).repeat_interleave(4, -1).repeat_interleave(4, -2),
        "lr_mask": torch.ones(1, 1, p, p), "he": he,
        "cells": torch.rand(1, n_cells, 3, c, c, generator=gen),
        "cell_xy": torch.rand(1, n_cells, 2, generator=gen),
        "cell_entropy": torch.rand(1, n_cells, generator=gen),
    }


def test_overfit_one_patch_then_sample_it_back():
    torch.set_num_threads(1)
    batch = _batch()
    cfg = preset("cpu-small", 4, channels=16, feature_channels=16, cond_channels=16,
                 cond_vec_channels=16, he_upsample=2, n_cells=4, cell_size=8, cell_dim=16,
                 attn_lowest=False)
    net = DiffSTNet(cfg)
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="x0"))
    cond_keys = ("lr", "lr_mask", "he", "cells", "cell_xy", "cell_entropy")

    def loss_fn(module, b, generator):
        x0 = b["x0"].expand(8, -1, -1, -1)
        cond = {k: b[k].expand(8, *b[k].shape[1:]) for k in cond_keys}
        return denoising_loss(diffusion, module, x0, cond, b["weight"].expand(8, -1, -1, -1),
                              generator)

    result = fit_model(net, loss_fn, lambda step, gen: batch,
                       TrainerConfig(lr=3e-3, max_steps=300, warmup_steps=10, ema_decay=0.9,
                                     progress=False, log_every=10), device="cpu")
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])
    result.ema.copy_to(net)
    net.eval()
    cond = {k: batch[k] for k in cond_keys}
    with torch.no_grad():
        feats = net.encode_condition(cond).repeat(2)
        sample = make_sampler("ddim", diffusion, 10).sample(
            lambda x, t: net(x, t, cond_features=feats)[0], (2, 4, 16, 16), cond,
            generator=torch.Generator().manual_seed(1))
    err = ((sample - batch["x0"]) ** 2).mean()
    assert err < 0.2 * batch["x0"].var(), (float(err), float(batch["x0"].var()))
