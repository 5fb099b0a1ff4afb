"""The noise schedule, the samplers and the consistency projection, apart from any network."""

import numpy as np
import pytest
import torch

from diffst_sc.schedulers import (
    DDIMSampler,
    DDPMSampler,
    DiffusionConfig,
    FootprintProjection,
    GaussianDiffusion,
    correction_rounds,
    make_sampler,
)


def test_linear_schedule_matches_ddpm():
    d = GaussianDiffusion(DiffusionConfig(num_train_steps=1000))
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-5)
    assert d.alphas_cumprod[-1] < 1e-4  # the last level is (almost) pure noise


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_split_inverts_each_parameterisation(prediction):
    d = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g)
    noise = torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([10, 500, 990])
    x_t = d.q_sample(x0, t, noise)
    target = d.target(x0, noise, t)
    x0_hat, eps_hat = d.split(x_t, t, target)
    torch.testing.assert_close(x0_hat, x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(eps_hat, noise, atol=2e-3, rtol=1e-3)


def _oracle(d, x0):
    """A perfect x0-predicting network for a point mass at ``x0``."""
    return lambda x, t: x0.expand_as(x)


@pytest.mark.parametrize("name", ["ddim", "ddim-eta1", "ddpm"])
def test_samplers_recover_a_point_mass(name):
    d = GaussianDiffusion(DiffusionConfig(prediction="x0"))
    x0 = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    sampler = make_sampler(name, d, steps=10)
    out = sampler.sample(_oracle(d, x0), (4, 2, 5, 5), {},
                         generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, x0.expand(4, -1, -1, -1), atol=1e-4, rtol=1e-4)


def test_ddim_respacing_and_determinism():
    d = GaussianDiffusion()
    s = DDIMSampler(d, steps=20)
    assert len(s.timesteps) == 20 and s.timesteps[0] == 999 and s.timesteps[-1] == 0
    net = lambda x, t: 0.5 * x  # noqa: E731
    a = s.sample(net, (2, 1, 3, 3), {}, generator=torch.Generator().manual_seed(0))
    b = s.sample(net, (2, 1, 3, 3), {}, generator=torch.Generator().manual_seed(0))
    c = s.sample(net, (2, 1, 3, 3), {}, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert isinstance(make_sampler("ddpm", d, 5), DDPMSampler)
    with pytest.raises(ValueError, match="Unknown sampler"):
        make_sampler("euler", d, 5)


def test_projection_makes_footprint_means_match():
    # 2 spots on a 1 x 4 strip: spot 0 covers pixels 0-1, spot 1 covers pixels 2-3.
    cov = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    spread = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    target = torch.tensor([[4.0], [10.0]])
    mu, sd = torch.tensor([1.0]), torch.tensor([0.5])
    proj = FootprintProjection(cov, spread, target, mu, sd, iters=3)
    z = torch.randn(3, 1, 1, 4, generator=torch.Generator().manual_seed(0))
    before = proj.relative_error(z)
    after = proj.relative_error(proj(z))
    assert (before > 0.05).all() and (after < 1e-3).all()
    v = proj.to_density(proj(z).reshape(3, 1, 4)) + proj.pseudo
    # the shape within each spot is kept: ratios between its pixels (plus the pseudo-count)
    v0 = proj.to_density(z.reshape(3, 1, 4)) + proj.pseudo
    torch.testing.assert_close(v[..., 0] / v[..., 1], v0[..., 0] / v0[..., 1], rtol=1e-3,
                               atol=1e-3)


def test_a_spot_without_counts_does_not_wipe_out_its_neighbours_pixels():
    # spot 0 measured nothing (pixels 0-1); pixel 2 lies in its cell but outside its footprint,
    # in a region the neighbouring spot 1 (pixels 3-4, 40 counts) predicts high
    # pixel 5 lies on the border of the two cells (half of each spot's correction)
    cov = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    spread = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0],
                           [0.5, 0.5]])
    target = torch.tensor([[0.0], [40.0]])
    mu, sd = torch.tensor([0.0]), torch.tensor([1.0])
    z = torch.log1p(torch.tensor([[[[2.0, 2.0, 30.0, 40.0, 40.0, 30.0]]]]))
    one_count = FootprintProjection(cov, spread, target, mu, sd, iters=8, pseudo=1.0)
    literal = FootprintProjection(cov, spread, target, mu, sd, iters=8, pseudo=1e-3)
    v1 = one_count.to_density(one_count(z).reshape(1, 1, 6))[0, 0]
    v0 = literal.to_density(literal(z).reshape(1, 1, 6))[0, 0]
    for v in (v0, v1):  # both reproduce the spots
        assert float(v[:2].mean()) < 0.05 and abs(float(v[3:5].mean()) - 40) < 0.5
    # the literal ratio (0 / 2 counts) scales the bordering pixel to almost nothing too
    assert float(v0[2]) < 0.1 < 5.0 < float(v1[2])
    # on the border the spots' factors (1/3 and 1) are blended, not their logs: (30 + 1) * 2/3 - 1
    # (a blend in log space would give (30 + 1) * 3 ** -0.5 - 1 = 16.9)
    assert float(v1[5]) == pytest.approx(31 * 2 / 3 - 1, rel=0.02)


def test_projection_lifts_empty_footprints_without_blowing_up_neighbours():
    # spot 0 measured 50 but predicted as exactly zero; pixel 4 lies outside every footprint
    cov = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0]])
    spread = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    target = torch.tensor([[50.0], [5.0]])
    mu, sd = torch.tensor([0.0]), torch.tensor([1.0])
    # pseudo: one count over a footprint (density units here), as superresolve passes it
    proj = FootprintProjection(cov, spread, target, mu, sd, iters=2, pseudo=1.0)
    z = torch.tensor([[[[-50.0, -50.0, 1.0, 1.0, 1.0]]]])  # expm1(-50) = -1 -> density 0
    out = z
    for _ in range(10):  # as over the steps of a sampler
        out = proj(out)
    v = proj.to_density(out.reshape(1, 1, 5))
    assert torch.isfinite(v).all() and v.max() < 1e3
    assert float(proj.relative_error(out)) < 0.05


def test_the_tiles_and_the_whole_map_are_corrected_by_the_same_rounds():
    """superresolve corrects the whole map on numpy (sparse) as the samplers do each tile on
    torch: one algorithm, the same numbers."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n_spots, n_genes = 5, 3
    n_px = 12 * n_spots  # a strip; spot k covers pixels 12k .. 12k + 11
    own = np.arange(n_px) // 12
    cov = (own[None] == np.arange(n_spots)[:, None]) / 12.0
    spread = (own[:, None] == np.arange(n_spots)[None]).astype(float)
    for k in range(1, n_spots):  # where two cells meet, pixels take a blend of both factors
        spread[12 * k - 1, [k - 1, k]] = spread[12 * k, [k - 1, k]] = 0.5
    v = rng.gamma(1.0, 2.0, (n_px, n_genes))
    log_target = np.log(rng.gamma(1.0, 2.0, (n_spots, n_genes)) + 0.5)
    on_numpy, carried = correction_rounds(v, sp.csc_matrix(cov), sp.csr_matrix(spread),
                                          log_target, 0.5, 20, floor=1e-6, carry=np.ones_like(v))
    t = torch.from_numpy
    on_torch, _ = correction_rounds(t(v), t(cov), t(spread), t(log_target), 0.5, 20, floor=1e-6)
    np.testing.assert_allclose(on_numpy, on_torch.numpy(), rtol=1e-12)
    assert carried.shape == v.shape and (carried > 0).all()  # factors above 0 scale the spread
    # and the footprints' means reach their targets
    np.testing.assert_allclose(np.log(cov @ on_numpy + 0.5), log_target, atol=1e-3)
