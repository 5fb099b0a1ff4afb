"""DiffSTNet: the cross-modal conditional denoising network of Diff-ST."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ._config import NetConfig
from ._cross_attention import DynamicCellAttention
from ._disentangle import ConcatFusion, CrossModalDisentangle
from ._encoders import ExpressionEncoder, HistologyEncoder
from ._gene_graph import GeneGraphConv
from ._unet import UNet, timestep_embedding


@dataclass
class ConditionFeatures:
    """The encoded condition of a batch, reusable across the steps of a sampler.

    Attributes
    ----------
    lr
        ``(B, G, P, P)`` LR expression on the HR grid.
    lr_mask
        ``(B, 1, P, P)`` LR coverage.
    cond_map
        ``(B, C_cond, P, P)`` conditioning map.
    cond_vec
        ``(B, C_vec)`` pooled condition vector.
    pyramid
        The conditioning map brought to every UNet level.
    aux_loss
        Weighted disentangling loss (a scalar; 0 when disentangling is off).

    Examples
    --------
    >>> feats = net.encode_condition(cond).repeat(8)  # 8 samples of one tile  # doctest: +SKIP
    """

    lr: torch.Tensor
    lr_mask: torch.Tensor
    cond_map: torch.Tensor
    cond_vec: torch.Tensor
    pyramid: list[torch.Tensor]
    aux_loss: torch.Tensor

    @property
    def batch_size(self) -> int:
        """``B``."""
        return self.lr.shape[0]

    def repeat(self, n: int) -> ConditionFeatures:
        """Repeat each patch's features ``n`` times along the batch (e.g. ``n`` samples each).

        Patch ``b``'s copies are rows ``b * n`` to ``b * n + n - 1``, as
        :func:`torch.repeat_interleave`.
        """
        def rep(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(n, dim=0)

        return ConditionFeatures(rep(self.lr), rep(self.lr_mask), rep(self.cond_map),
                                 rep(self.cond_vec), [rep(p) for p in self.pyramid],
                                 self.aux_loss)

    def detach(self) -> ConditionFeatures:
        """Return a copy cut from the autograd graph."""
        return ConditionFeatures(self.lr.detach(), self.lr_mask.detach(),
                                 self.cond_map.detach(), self.cond_vec.detach(),
                                 [p.detach() for p in self.pyramid], self.aux_loss.detach())


class _GeneHead(nn.Module):
    """UNet features -> per-gene features -> (optional gene graph) -> one value per gene."""

    def __init__(self, channels: int, n_genes: int, features: int,
                 graph_conv: GeneGraphConv | None) -> None:
        super().__init__()
        self.n_genes = n_genes
        self.features = features
        self.to_genes = nn.Conv2d(channels, n_genes * features, 1)
        self.graph_conv = graph_conv
        # Zero-initialised projection: the network starts by predicting 0 (standard for eps).
        self.weight = nn.Parameter(torch.zeros(n_genes, features))
        self.bias = nn.Parameter(torch.zeros(n_genes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, _, height, width = h.shape
        z = self.to_genes(h).view(b, self.features, self.n_genes, height, width)
        if self.graph_conv is not None:
            z = self.graph_conv(z)
        out = (z * self.weight.T[None, :, :, None, None]).sum(dim=1)
        return out + self.bias[:, None, None]


class DiffSTNet(nn.Module):
    """Denoiser of HR gene maps conditioned on LR expression and the H&E (tissue and cells).

    Parameters
    ----------
    cfg
        Configuration; see :class:`NetConfig` and :func:`preset`.
    graph
        Optional ``(G, G)`` gene co-expression graph (also settable with :meth:`set_graph`;
        stored in the state dict). Without it the gene-graph layers do not mix genes.

    Notes
    -----
    Tensors, for ``B`` patches of ``G`` genes on ``P x P`` HR pixels (``P`` a multiple of
    ``cfg.patch_multiple``):

    - ``x_t``: ``(B, G, P, P)`` noisy maps; ``t``: ``(B,)`` times in [0, 1];
    - ``cond["lr"]``: ``(B, G, P, P)``; ``cond["lr_mask"]``: ``(B, 1, P, P)``;
    - ``cond["he"]``: ``(B, 3, k P, k P)`` in [0, 1], ``k = cfg.he_upsample``;
    - ``cond["cells"]``: ``(B, K, 3, c, c)`` in [0, 1]; ``cond["cell_xy"]``: ``(B, K, 2)``
      centres ``(x, y)`` in [0, 1]; ``cond["cell_entropy"]``: ``(B, K)`` (non-finite: padding).
      Needed only when ``cfg.use_cell_attention``.

    Examples
    --------
    >>> from diffst_sc.module import DiffSTNet, preset
    >>> net = DiffSTNet(preset("cpu-small", 25))
    >>> feats = net.encode_condition(cond)  # doctest: +SKIP
    >>> pred, aux = net(x_t, t, cond_features=feats)  # doctest: +SKIP
    """

    def __init__(self, cfg: NetConfig, graph=None) -> None:
        super().__init__()
        self.cfg = cfg
        g, cf, groups = cfg.n_genes, cfg.feature_channels, cfg.norm_groups
        self.histology = HistologyEncoder(cfg.he_upsample, cf, groups)
        self.expression = ExpressionEncoder(g, cf, groups)
        self.cell_attention = (
            DynamicCellAttention(cf, cfg.cell_dim, cfg.n_cells, cfg.cell_heads,
                                 selection=cfg.cell_selection, groups=groups)
            if cfg.use_cell_attention else None)
        fusion = CrossModalDisentangle if cfg.use_disentangle else ConcatFusion
        self.fusion = fusion(cf, cfg.cond_channels, cfg.cond_vec_channels, groups)

        self.input_graph = (GeneGraphConv(g, 1, 1, cfg.gene_graph_hidden, graph)
                            if cfg.use_gene_graph else None)
        output_graph = (GeneGraphConv(g, cfg.gene_head_features, 0, cfg.gene_graph_hidden, graph)
                        if cfg.use_gene_graph and cfg.gene_graph_output else None)

        emb = 4 * cfg.channels
        self.time_embed = nn.Sequential(nn.Linear(cfg.channels, emb), nn.SiLU(),
                                        nn.Linear(emb, emb))
        self.cond_embed = nn.Linear(cfg.cond_vec_channels, emb)
        self.unet = UNet(2 * g + 1 + cfg.cond_channels, cfg.channels, cfg.channel_mult,
                         cfg.num_res_blocks, emb, cfg.cond_channels,
                         attn_levels=cfg.attn_levels if cfg.attn_lowest else 0,
                         attn_heads=cfg.attn_heads, dropout=cfg.dropout, groups=groups)
        self.head = _GeneHead(cfg.channels, g, cfg.gene_head_features, output_graph)

    # -- configuration ------------------------------------------------------------------------
    def set_graph(self, adjacency) -> None:
        """Set the ``(G, G)`` gene co-expression graph of every gene-graph layer."""
        for module in (self.input_graph, self.head.graph_conv):
            if module is not None:
                module.set_graph(adjacency)

    def set_active_cells(self, n: int) -> None:
        """Use the ``n`` highest-entropy sub-patches per patch (no-op without cell attention)."""
        if self.cell_attention is not None:
            self.cell_attention.set_active_cells(n)

    @property
    def n_active_cells(self) -> int:
        """Sub-patches currently used per patch (0 without cell attention)."""
        return 0 if self.cell_attention is None else self.cell_attention.n_active

    # -- checks -------------------------------------------------------------------------------
    def _check_condition(self, cond: Mapping[str, torch.Tensor]) -> None:
        cfg = self.cfg
        needed = ["lr", "lr_mask", "he"]
        if cfg.use_cell_attention:
            needed += ["cells", "cell_xy", "cell_entropy"]
        missing = [k for k in needed if k not in cond]
        if missing:
            raise KeyError(f"The condition lacks {missing}; it needs {needed}.")
        lr = cond["lr"]
        if lr.dim() != 4 or lr.shape[1] != cfg.n_genes:
            raise ValueError(f"cond['lr'] must be (B, {cfg.n_genes}, P, P), got "
                             f"{tuple(lr.shape)}.")
        b, _, p, q = lr.shape
        m = cfg.patch_multiple
        if p % m or q % m:
            raise ValueError(f"Patches must be a multiple of {m} pixels wide for this network, "
                             f"got {p} x {q}; crop or pad the patches.")
        if tuple(cond["lr_mask"].shape) != (b, 1, p, q):
            raise ValueError(f"cond['lr_mask'] must be {(b, 1, p, q)}, got "
                             f"{tuple(cond['lr_mask'].shape)}.")
        k = cfg.he_upsample
        if tuple(cond["he"].shape) != (b, 3, k * p, k * q):
            raise ValueError(f"cond['he'] must be {(b, 3, k * p, k * q)} (he_upsample={k}), got "
                             f"{tuple(cond['he'].shape)}.")
        if cfg.use_cell_attention:
            cells, xy, ent = cond["cells"], cond["cell_xy"], cond["cell_entropy"]
            if cells.dim() != 5 or cells.shape[0] != b or cells.shape[2] != 3:
                raise ValueError(f"cond['cells'] must be (B, K, 3, c, c), got "
                                 f"{tuple(cells.shape)}.")
            n = cells.shape[1]
            if tuple(xy.shape) != (b, n, 2) or tuple(ent.shape) != (b, n):
                raise ValueError(f"cond['cell_xy'] and cond['cell_entropy'] must be {(b, n, 2)} "
                                 f"and {(b, n)}, got {tuple(xy.shape)} and {tuple(ent.shape)}.")

    # -- computation --------------------------------------------------------------------------
    def encode_condition(self, cond: Mapping[str, torch.Tensor]) -> ConditionFeatures:
        """Encode the condition once; pass the result to :meth:`forward` at every step.

        Parameters
        ----------
        cond
            The condition dict (see the class notes).

        Returns
        -------
        ConditionFeatures
        """
        self._check_condition(cond)
        lr, lr_mask = cond["lr"], cond["lr_mask"]
        f_h = self.histology(cond["he"])
        if self.cell_attention is not None:
            f_h = self.cell_attention(f_h, cond["cells"], cond["cell_xy"], cond["cell_entropy"])
        f_e = self.expression(lr, lr_mask)
        cond_map, cond_vec, loss = self.fusion(f_h, f_e, lr_mask)
        return ConditionFeatures(lr=lr, lr_mask=lr_mask, cond_map=cond_map, cond_vec=cond_vec,
                                 pyramid=self.unet.condition_pyramid(cond_map),
                                 aux_loss=self.cfg.disentangle_weight * loss)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor,
                cond: Mapping[str, torch.Tensor] | None = None,
                cond_features: ConditionFeatures | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the diffusion target (noise or clean maps) of ``x_t``.

        Parameters
        ----------
        x_t
            ``(B, G, P, P)`` noisy maps.
        t
            ``(B,)`` (or scalar) diffusion times in [0, 1].
        cond
            The condition dict; may be omitted when ``cond_features`` is given.
        cond_features
            :meth:`encode_condition`'s output for this batch, to skip re-encoding.

        Returns
        -------
        tuple
            The ``(B, G, P, P)`` prediction and the scalar weighted disentangling loss.
        """
        if cond_features is None:
            if cond is None:
                raise ValueError("Pass the condition dict `cond` or its encoding "
                                 "`cond_features=net.encode_condition(cond)`.")
            cond_features = self.encode_condition(cond)
        feats = cond_features
        if x_t.shape != feats.lr.shape:
            raise ValueError(f"x_t {tuple(x_t.shape)} must have the shape of the condition's LR "
                             f"maps {tuple(feats.lr.shape)}.")
        b = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device, dtype=x_t.dtype)
        t = t.expand(b) if t.dim() == 0 else t.reshape(b)

        x = x_t if self.input_graph is None else self.input_graph(x_t, feats.lr)
        emb = self.time_embed(timestep_embedding(t, self.cfg.channels).to(x_t.dtype))
        emb = emb + self.cond_embed(feats.cond_vec)
        h = self.unet(torch.cat([x, feats.lr, feats.lr_mask, feats.cond_map], dim=1), emb,
                      feats.pyramid)
        return self.head(h), feats.aux_loss
