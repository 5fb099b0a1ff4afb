import json

import pytest
import torch

from diffst_sc.module import ConditionFeatures, DiffSTNet, NetConfig, preset

G, P, K, C, HE_K = 5, 16, 6, 12, 2


@pytest.fixture(autouse=True)
def _one_thread():
    # These tiny tensors gain nothing from threads, and threads slow down on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_config(**overrides) -> NetConfig:
    values = {
        "n_genes": G,
        "channels": 16,
        "channel_mult": (1, 2, 2),
        "attn_heads": 2,
        "norm_groups": 4,
        "feature_channels": 8,
        "cond_channels": 8,
        "cond_vec_channels": 16,
        "he_upsample": HE_K,
        "n_cells": K,
        "cell_size": C,
        "cell_dim": 16,
        "cell_heads": 2,
        "gene_graph_hidden": 4,
        "gene_head_features": 2,
    }
    return NetConfig(**{**values, **overrides})


def make_cond(b=2, p=P, seed=0, k=K):
    gen = torch.Generator().manual_seed(seed)
    return {
        "lr": torch.randn(b, G, p, p, generator=gen),
        "lr_mask": torch.rand(b, 1, p, p, generator=gen),
        "he": torch.rand(b, 3, HE_K * p, HE_K * p, generator=gen),
        "cells": torch.rand(b, k, 3, C, C, generator=gen),
        "cell_xy": torch.rand(b, k, 2, generator=gen),
        "cell_entropy": torch.rand(b, k, generator=gen),
    }


def graph():
    a = torch.zeros(G, G)
    a[0, 1] = a[1, 0] = a[2, 3] = a[3, 2] = 1.0
    return a


def make_net(seed=0, **overrides) -> DiffSTNet:
    torch.manual_seed(seed)
    net = DiffSTNet(small_config(**overrides), graph=graph())
    # The output projection starts at zero; make it random so outputs and gradients are informative.
    with torch.no_grad():
        net.head.weight.normal_()
    return net.eval()


# -- config -----------------------------------------------------------------------------------
def test_config_round_trips_through_json():
    cfg = preset("gpu-large", 42, dropout=0.2)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert NetConfig.from_dict(d) == cfg
    assert cfg.channels == 128 and cfg.channel_mult == (1, 2, 2, 4) and cfg.attn_levels == 2
    small = preset("cpu-small", 100)
    assert small.channels == 64 and small.channel_mult == (1, 2, 2) and small.attn_lowest


def test_config_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="Unknown NetConfig keys \\['bogus'\\]"):
        NetConfig.from_dict({"n_genes": 3, "bogus": 1})
    with pytest.raises(ValueError, match="n_genes"):
        NetConfig.from_dict({"channels": 8})
    with pytest.raises(ValueError, match="power of two"):
        NetConfig(n_genes=3, he_upsample=3)
    with pytest.raises(ValueError, match="positive integer"):
        NetConfig(n_genes=0)
    with pytest.raises(ValueError, match="cell_selection"):
        NetConfig(n_genes=3, cell_selection="best")
    with pytest.raises(ValueError, match="Unknown preset"):
        preset("huge", 3)


# -- shapes and contracts ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "off",
    [
        None,
        "use_disentangle",
        "use_cell_attention",
        "use_gene_graph",
        "gene_graph_output",
        "attn_lowest",
    ],
)
def test_forward_shapes_with_each_part_off(off):
    net = make_net(**({off: False} if off else {}))
    out, aux = net(torch.randn(2, G, P, P), torch.rand(2), make_cond())
    assert out.shape == (2, G, P, P) and aux.ndim == 0 and torch.isfinite(out).all()
    if off == "use_disentangle":
        assert aux.item() == 0.0
    else:
        assert aux.item() > 0.0
    if off == "use_cell_attention":
        cond = make_cond()
        del cond["cells"], cond["cell_xy"], cond["cell_entropy"]
        assert net(torch.randn(2, G, P, P), torch.rand(2), cond)[0].shape == (2, G, P, P)


def test_output_starts_at_zero():
    torch.manual_seed(0)
    net = DiffSTNet(small_config())
    out, _ = net(torch.randn(2, G, P, P), torch.rand(2), make_cond())
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("p", [16, 40])
def test_network_is_fully_convolutional(p):
    net = make_net()
    out, _ = net(torch.randn(2, G, p, p), torch.rand(2), make_cond(p=p))
    assert out.shape == (2, G, p, p)


def test_condition_is_checked():
    net = make_net()
    cond = make_cond()
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.randn(2, G, 18, 18), torch.rand(2), make_cond(p=18))
    bad = {**cond, "he": torch.rand(2, 3, P, P)}
    with pytest.raises(ValueError, match="he_upsample=2"):
        net(torch.randn(2, G, P, P), torch.rand(2), bad)
    with pytest.raises(KeyError, match="cells"):
        net(torch.randn(2, G, P, P), torch.rand(2), {k: cond[k] for k in ("lr", "lr_mask", "he")})
    with pytest.raises(ValueError, match="cond_features"):
        net(torch.randn(2, G, P, P), torch.rand(2))
    with pytest.raises(ValueError, match="x_t"):
        net(torch.randn(2, G, 8, 8), torch.rand(2), cond)


def test_precomputed_condition_gives_the_same_output():
    net = make_net()
    cond, x, t = make_cond(), torch.randn(2, G, P, P), torch.rand(2)
    with torch.no_grad():
        direct, aux = net(x, t, cond)
        feats = net.encode_condition(cond)
        cached, aux2 = net(x, t, cond_features=feats)
        again, _ = net(x, torch.rand(2), cond_features=feats)
    assert torch.equal(direct, cached) and torch.equal(aux, aux2)
    assert not torch.allclose(again, direct)  # the time matters
    assert torch.allclose(net(x, t[0], cond)[0], net(x, t[0].expand(2), cond)[0])


def test_repeated_condition_features_match_a_repeated_batch():
    net = make_net()
    cond = make_cond()
    with torch.no_grad():
        feats = net.encode_condition(cond).repeat(3)
        assert isinstance(feats, ConditionFeatures) and feats.batch_size == 6
        x, t = torch.randn(6, G, P, P), torch.rand(6)
        big = {k: v.repeat_interleave(3, dim=0) for k, v in cond.items()}
        assert torch.allclose(net(x, t, cond_features=feats)[0], net(x, t, big)[0], atol=1e-5)


def test_output_depends_on_every_condition():
    net = make_net()
    cond, x, t = make_cond(), torch.randn(2, G, P, P), torch.rand(2)
    with torch.no_grad():
        base = net(x, t, cond)[0]
        for key in cond:
            changed = {**cond, key: cond[key] + 0.5 * torch.rand_like(cond[key])}
            assert not torch.allclose(net(x, t, changed)[0], base), key


def test_active_cells_reach_the_cell_attention():
    net = make_net()
    net.set_active_cells(2)
    assert net.n_active_cells == 2
    cond, x, t = make_cond(), torch.randn(2, G, P, P), torch.rand(2)
    low = cond["cell_entropy"].argsort(dim=1)[:, : K - 2]
    changed = {**cond, "cells": cond["cells"].clone()}
    changed["cells"][torch.arange(2)[:, None], low] = 0.0
    with torch.no_grad():
        assert torch.equal(net(x, t, cond)[0], net(x, t, changed)[0])
    assert make_net(use_cell_attention=False).n_active_cells == 0


# -- training ---------------------------------------------------------------------------------
def test_gradient_reaches_every_parameter():
    net = make_net().train()
    out, aux = net(torch.randn(2, G, P, P), torch.rand(2), make_cond())
    (out.square().mean() + aux).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    encoders = [
        n
        for n, _ in net.named_parameters()
        if n.startswith(("histology.", "expression.", "cell_attention.cell_encoder."))
    ]
    assert len(encoders) > 10


def test_state_dict_round_trip_through_config_gives_identical_outputs():
    net = make_net(seed=1)
    cfg = NetConfig.from_dict(json.loads(json.dumps(net.cfg.to_dict())))
    clone = DiffSTNet(cfg).eval()  # no graph given: it comes from the state dict
    state = {k: v.clone() for k, v in net.state_dict().items()}
    clone.load_state_dict(state)
    assert torch.equal(clone.input_graph.adjacency, net.input_graph.adjacency)
    cond, x, t = make_cond(), torch.randn(2, G, P, P), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(clone(x, t, cond)[0], net(x, t, cond)[0])


def test_set_graph_changes_the_output():
    net = make_net()
    cond, x, t = make_cond(), torch.randn(2, G, P, P), torch.rand(2)
    with torch.no_grad():
        before = net(x, t, cond)[0]
        net.set_graph(torch.ones(G, G))
        assert not torch.allclose(net(x, t, cond)[0], before)


def test_tiny_overfit():
    torch.manual_seed(0)
    net = DiffSTNet(small_config(), graph=graph()).train()
    cond = make_cond(b=2, seed=3)
    target = torch.randn(2, G, P, P, generator=torch.Generator().manual_seed(4))
    x, t = torch.zeros(2, G, P, P), torch.full((2,), 0.5)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        out, aux = net(x, t, cond)
        loss = (out - target).square().mean()
        opt.zero_grad()
        (loss + aux).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
