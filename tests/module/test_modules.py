import math

import numpy as np
import pytest
import torch

from diffst_sc.module import (
    CellEncoder,
    ColourDeconvolution,
    ConcatFusion,
    CrossModalDisentangle,
    DynamicCellAttention,
    ExpressionEncoder,
    GeneGraphConv,
    HistologyEncoder,
    ModulatedGroupNorm,
    UNet,
    disentangle_loss,
    fourier_position,
    grid_centres,
    normalise_graph,
    timestep_embedding,
)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # These tiny tensors gain nothing from threads, and threads slow down on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


# -- encoders ---------------------------------------------------------------------------------
def test_colour_deconvolution_matches_skimage_rgb2hed():
    from skimage.color import rgb2hed

    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.02, 1.0, size=(5, 7, 3))
    expected = rgb2hed(rgb) * math.log(1e6)
    layer = ColourDeconvolution()
    got = layer.stains(torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1)[None])
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), expected, atol=1e-4)
    out = layer(torch.rand(2, 3, 4, 4))
    assert out.shape == (2, 6, 4, 4)
    assert not list(layer.parameters()) and "hed_from_rgb" not in layer.state_dict()


def test_colour_deconvolution_is_finite_and_differentiable_on_black_and_white():
    rgb = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1).expand(1, 3, 2, 1).clone().requires_grad_()
    out = ColourDeconvolution()(rgb)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(rgb.grad).all()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_histology_encoder_brings_he_to_the_patch_grid(k):
    enc = HistologyEncoder(k, 8, groups=4)
    assert enc(torch.rand(2, 3, 12 * k, 12 * k)).shape == (2, 8, 12, 12)


def test_histology_encoder_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        HistologyEncoder(3, 8)


def test_expression_and_cell_encoders_shapes():
    assert ExpressionEncoder(5, 8, 4)(
        torch.randn(2, 5, 12, 12), torch.rand(2, 1, 12, 12)
    ).shape == (2, 8, 12, 12)
    enc = CellEncoder(16, groups=4)
    assert enc(torch.rand(7, 3, 24, 24)).shape == (7, 16)
    assert enc(torch.rand(7, 3, 10, 10)).shape == (7, 16)


# -- gene graph -------------------------------------------------------------------------------
def _chain_graph(g):
    a = torch.zeros(g, g)
    idx = torch.arange(g - 1)
    a[idx, idx + 1] = a[idx + 1, idx] = 1.0
    return a


def test_normalise_graph_is_symmetric_with_self_loops():
    a = _chain_graph(4) * 2.0
    a[0, 0] = 5.0  # the input's diagonal is replaced by self loops
    n = normalise_graph(a)
    assert torch.allclose(n, n.T)
    d = torch.tensor([3.0, 5.0, 5.0, 3.0])  # |A + I| row sums
    assert torch.allclose(n[0, 1], torch.tensor(2.0) / (d[0] * d[1]).sqrt())
    assert torch.allclose(n.diagonal(), 1.0 / d)
    assert n[0, 2] == 0


@pytest.mark.parametrize(
    ("adj", "match"),
    [
        (torch.ones(3, 4), "square"),
        (torch.tensor([[0.0, 1.0], [0.0, 0.0]]), "symmetric"),
        (torch.tensor([[0.0, float("nan")], [float("nan"), 0.0]]), "NaN"),
    ],
)
def test_normalise_graph_errors(adj, match):
    with pytest.raises(ValueError, match=match):
        normalise_graph(adj)


def test_gene_graph_rejects_graph_of_wrong_size():
    with pytest.raises(ValueError, match="model has 4 genes"):
        GeneGraphConv(4, graph=torch.eye(3))


@pytest.mark.parametrize("g", [1, 3, 17])
def test_gene_graph_conv_shapes(g):
    conv = GeneGraphConv(g, 1, 1, 4, graph=torch.ones(g, g))
    assert conv(torch.randn(2, g, 6, 6), torch.randn(2, g, 6, 6)).shape == (2, g, 6, 6)
    conv = GeneGraphConv(g, 3, 0, 4, graph=torch.ones(g, g))
    assert conv(torch.randn(2, 3, g, 6, 6)).shape == (2, 3, g, 6, 6)


def test_gene_graph_conv_mixes_exactly_the_neighbours():
    g = 6
    adj = _chain_graph(g)
    adj[0, 5] = adj[5, 0] = 0.5
    conv = GeneGraphConv(g, 1, 1, 4, graph=adj).double()
    state = torch.randn(1, g, 3, 3, dtype=torch.float64)
    context = torch.randn(1, g, 3, 3, dtype=torch.float64)
    base = conv(state, context)
    for j in range(g):
        for which in ("state", "context"):
            s, c = state.clone(), context.clone()
            (s if which == "state" else c)[0, j] += 1.0
            changed = (conv(s, c) - base).abs().amax(dim=(0, 2, 3)) > 1e-9
            expected = adj[:, j] != 0
            expected[j] = True
            assert torch.equal(changed, expected), (j, which)


def test_gene_graph_identity_without_graph_and_set_graph_is_in_the_state_dict():
    conv = GeneGraphConv(3, 1, 0, 4)
    assert torch.equal(conv.adjacency, torch.eye(3))
    x = torch.randn(1, 3, 2, 2)
    y = conv(x)
    x2 = x.clone()
    x2[0, 1] += 1
    assert torch.equal(conv(x2)[0, [0, 2]], y[0, [0, 2]])
    conv.set_graph(torch.ones(3, 3))
    assert torch.allclose(conv.state_dict()["adjacency"], torch.full((3, 3), 1 / 3))


def test_gene_graph_conv_requires_context_when_built_with_it():
    with pytest.raises(ValueError, match="context_features=1"):
        GeneGraphConv(3, 1, 1, 4)(torch.randn(1, 3, 2, 2))


# -- disentangling ----------------------------------------------------------------------------
def test_disentangle_shapes_and_positive_loss():
    mod = CrossModalDisentangle(8, 6, 10, groups=4)
    cond_map, vec, loss = mod(torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5))
    assert cond_map.shape == (2, 6, 5, 5) and vec.shape == (2, 10)
    assert loss.ndim == 0 and 0 < loss.item() <= 4


def test_concat_fusion_has_the_same_outputs_and_zero_loss():
    mod = ConcatFusion(8, 6, 10, groups=4)
    cond_map, vec, loss = mod(torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5))
    assert cond_map.shape == (2, 6, 5, 5) and vec.shape == (2, 10)
    assert loss.item() == 0.0


def test_disentangle_loss_falls_when_optimised():
    mod = CrossModalDisentangle(8, 6, 10, groups=4)
    # The modalities share a spatial signal, in different channels, plus their own noise.
    shared = torch.randn(4, 4, 6, 6)
    f_h = torch.cat([shared, torch.randn(4, 4, 6, 6)], dim=1)
    f_e = torch.cat([torch.randn(4, 4, 6, 6), shared.flip(1)], dim=1)
    opt = torch.optim.Adam(mod.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        loss = mod(f_h, f_e)[2]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_disentangle_loss_values_and_pixel_weights():
    # Parts are centred over the patch first: build them centred, c and d in disjoint channels.
    pattern = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    c = torch.zeros(1, 4, 2, 2)
    d = torch.zeros(1, 4, 2, 2)
    c[0, 0], c[0, 1] = pattern, 2 * pattern
    d[0, 2], d[0, 3] = pattern, -pattern
    assert disentangle_loss(c, c, d, d).item() == pytest.approx(0.0, abs=1e-5)
    assert disentangle_loss(c, -c, c, c).item() == pytest.approx(4.0, abs=1e-5)
    assert disentangle_loss(c + 3.0, c, d, d + 1.0).item() == pytest.approx(0.0, abs=1e-5)
    bad = c.clone()
    bad[0, 0, 1] = -pattern[1]  # the modalities disagree in the second row only
    weight = torch.ones(1, 1, 2, 2)
    weight[..., 1, :] = 0
    assert disentangle_loss(c, bad, d, d, weight).item() == pytest.approx(0.0, abs=1e-5)
    assert disentangle_loss(c, bad, d, d).item() > 0.1


def test_disentangle_loss_is_not_fooled_by_constant_parts():
    const = torch.ones(1, 4, 3, 3)
    assert disentangle_loss(const, const, torch.randn(1, 4, 3, 3),
                            torch.randn(1, 4, 3, 3)).item() >= 1.0 - 1e-5


# -- cell attention ---------------------------------------------------------------------------
def _cells(b=2, k=8, c=12):
    return torch.rand(b, k, 3, c, c), torch.rand(b, k, 2), torch.rand(b, k)


def test_positional_helpers():
    xy = grid_centres(2, 3)
    assert torch.allclose(xy[1], torch.tensor([0.5, 0.25]))
    assert fourier_position(xy, 3).shape == (6, 12)


def test_cell_attention_shape_and_active_cells_validation():
    att = DynamicCellAttention(8, 16, 8, heads=2, groups=4).eval()
    f_h = torch.randn(2, 8, 12, 12)
    assert att(f_h, *_cells()).shape == (2, 8, 12, 12)
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        att.set_active_cells(9)
    with pytest.raises(ValueError, match="divisible"):
        att(torch.randn(2, 8, 10, 10), *_cells())


def test_cell_attention_ignores_cells_not_selected():
    att = DynamicCellAttention(8, 16, 8, heads=2, groups=4).eval()
    att.set_active_cells(4)
    f_h = torch.randn(2, 8, 8, 8)
    cells, xy, ent = _cells()
    out = att(f_h, cells, xy, ent)
    top = ent.topk(4, dim=1).indices
    keep = torch.zeros(2, 8, dtype=torch.bool)
    keep[torch.arange(2)[:, None], top] = True
    cells2, xy2 = cells.clone(), xy.clone()
    cells2[~keep] = torch.rand_like(cells2[~keep])
    xy2[~keep] = torch.rand_like(xy2[~keep])
    assert torch.equal(att(f_h, cells2, xy2, ent), out)
    cells2[keep] = torch.rand_like(cells2[keep])  # the selected ones do matter
    assert not torch.allclose(att(f_h, cells2, xy2, ent), out)


def test_cell_attention_random_selection_only_while_training():
    att = DynamicCellAttention(8, 16, 8, heads=2, selection="random", groups=4)
    att.set_active_cells(2)
    cells, xy, ent = _cells(b=1)
    picks = {tuple(sorted(att.select(cells, xy, ent)[1][0, :, 0].tolist())) for _ in range(20)}
    assert len(picks) > 1
    att.eval()
    top = tuple(sorted(xy[0, ent[0].topk(2).indices, 0].tolist()))
    assert tuple(sorted(att.select(cells, xy, ent)[1][0, :, 0].tolist())) == top


def test_cell_attention_skips_padding_cells():
    att = DynamicCellAttention(8, 16, 8, heads=2, groups=4).eval()
    f_h = torch.randn(2, 8, 8, 8)
    cells, xy, ent = _cells()
    ent[:, 3:] = -math.inf
    out = att(f_h, cells, xy, ent)
    cells2 = cells.clone()
    cells2[:, 3:] = 0.0
    assert torch.allclose(att(f_h, cells2, xy, ent), out)
    ent[0] = -math.inf  # a patch without any cell: features pass unchanged
    out = att(f_h, cells, xy, ent)
    assert torch.equal(out[0], f_h[0]) and torch.isfinite(out).all()


# -- UNet -------------------------------------------------------------------------------------
def test_timestep_embedding_distinguishes_times():
    e = timestep_embedding(torch.tensor([0.0, 0.001, 1.0]), 16)
    assert e.shape == (3, 16)
    assert (e[0] - e[1]).abs().max() > 0.1 and (e[1] - e[2]).abs().max() > 0.1


def test_modulated_group_norm_uses_vector_and_map():
    norm = ModulatedGroupNorm(8, 6, 4, groups=4)
    h, emb, m = torch.randn(2, 8, 5, 5), torch.randn(2, 6), torch.randn(2, 4, 5, 5)
    out = norm(h, emb, m)
    assert out.shape == h.shape
    assert not torch.allclose(norm(h, emb + 1, m), out)
    assert not torch.allclose(norm(h, emb, m + 1), out)


@pytest.mark.parametrize("p", [16, 40])
@pytest.mark.parametrize("attn_levels", [0, 2])
def test_unet_is_fully_convolutional(p, attn_levels):
    unet = UNet(7, 16, (1, 2, 2), 1, 32, 4, attn_levels=attn_levels, attn_heads=2, groups=4)
    cond_map = torch.randn(2, 4, p, p)
    out = unet(torch.randn(2, 7, p, p), torch.randn(2, 32), unet.condition_pyramid(cond_map))
    assert out.shape == (2, 16, p, p)
