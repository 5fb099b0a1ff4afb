"""Graph convolution across genes over the gene x gene co-expression graph."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def normalise_graph(adjacency, n_genes: int | None = None) -> torch.Tensor:
    """Symmetric-normalise a gene x gene graph with self loops: ``D^-1/2 (A + I) D^-1/2``.

    The input's diagonal is replaced by ones; degrees are sums of absolute weights, so signed
    (anti-correlation) edges are allowed.

    Parameters
    ----------
    adjacency
        ``(G, G)`` symmetric array-like of finite edge weights.
    n_genes
        Expected ``G``, checked when given.

    Returns
    -------
    torch.Tensor
        ``(G, G)`` float32 normalised adjacency.
    """
    a = torch.as_tensor(adjacency).detach().to(device="cpu", dtype=torch.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"The gene graph must be a square (G, G) matrix, got shape "
                         f"{tuple(a.shape)}.")
    if n_genes is not None and a.shape[0] != n_genes:
        raise ValueError(f"The gene graph is {a.shape[0]} x {a.shape[0]} but the model has "
                         f"{n_genes} genes: build the graph on the model's genes, in its order.")
    if not torch.isfinite(a).all():
        raise ValueError("The gene graph has NaN or infinite weights; replace them (e.g. with 0) "
                         "before passing it.")
    scale = max(float(a.abs().max()), 1e-12)
    if not torch.allclose(a, a.T, atol=1e-6 * scale, rtol=0):
        raise ValueError("The gene graph is not symmetric; pass (A + A.T) / 2.")
    a = (a + a.T) / 2
    a.fill_diagonal_(1.0)
    d = a.abs().sum(dim=1).rsqrt()
    return (d[:, None] * a * d[None, :]).float()


class GeneGraphConv(nn.Module):
    """Residual graph convolution along the gene axis, applied at every pixel.

    For per-gene features ``h`` (the ``state``, optionally with extra ``context`` features),
    ``state' = state + gain_g * W2 act(W1 (A_hat h) + b_g)``, where ``A_hat`` is the normalised
    co-expression graph, ``W1`` and ``W2`` are shared by all genes and ``gain_g`` and ``b_g``
    are learned per gene. One layer lets gene ``i`` see gene ``j`` exactly when ``A[i, j] != 0``.
    The cost is one ``(G, G)`` matrix product per pixel and feature.

    Parameters
    ----------
    n_genes
        ``G``.
    state_features
        Features per gene that are updated (and returned).
    context_features
        Extra features per gene that are read but not returned.
    hidden
        Hidden width per gene.
    graph
        ``(G, G)`` co-expression graph; ``None`` gives the identity (no mixing) until
        :meth:`set_graph` is called.
    """

    def __init__(self, n_genes: int, state_features: int = 1, context_features: int = 0,
                 hidden: int = 8, graph=None) -> None:
        super().__init__()
        self.n_genes = n_genes
        self.state_features = state_features
        self.context_features = context_features
        adjacency = torch.eye(n_genes) if graph is None else normalise_graph(graph, n_genes)
        self.register_buffer("adjacency", adjacency)
        n_in = state_features + context_features
        self.w_in = nn.Parameter(torch.empty(hidden, n_in))
        self.b_in = nn.Parameter(torch.zeros(hidden))
        self.gene_bias = nn.Parameter(torch.zeros(n_genes, hidden))
        self.w_out = nn.Parameter(torch.empty(state_features, hidden))
        self.b_out = nn.Parameter(torch.zeros(state_features))
        self.gain = nn.Parameter(torch.ones(n_genes))
        nn.init.kaiming_uniform_(self.w_in, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.w_out, a=math.sqrt(5))

    @torch.no_grad()
    def set_graph(self, adjacency) -> None:
        """Replace the graph with the normalised ``(G, G)`` ``adjacency``."""
        a = normalise_graph(adjacency, self.n_genes)
        self.adjacency.copy_(a.to(self.adjacency.device))

    def forward(self, state: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Mix genes.

        Parameters
        ----------
        state
            ``(B, F, G, H, W)`` (features first, so that every step is one large matrix
            product), or ``(B, G, H, W)`` for one feature per gene.
        context
            ``(B, F_c, G, H, W)`` or ``(B, G, H, W)``; required iff ``context_features > 0``.

        Returns
        -------
        torch.Tensor
            Same shape as ``state``.
        """
        squeeze = state.dim() == 4
        if squeeze:
            state = state.unsqueeze(1)
        if (context is None) != (self.context_features == 0):
            raise ValueError(f"This GeneGraphConv was built with context_features="
                             f"{self.context_features}; pass context accordingly.")
        h = state
        if context is not None:
            h = torch.cat([state, context.unsqueeze(1) if context.dim() == 4 else context], 1)
        b, f, g, y, x = h.shape
        if g != self.n_genes or f != self.w_in.shape[1]:
            raise ValueError(f"Expected {self.w_in.shape[1]} features x {self.n_genes} genes, "
                             f"got {f} x {g}.")
        k, n = self.w_in.shape[0], g * y * x
        # A_hat first: the graph product runs on the few input features, not the hidden ones.
        mixed = torch.matmul(self.adjacency, h.reshape(b, f, g, y * x))
        z = torch.matmul(self.w_in, mixed.reshape(b, f, n)).view(b, k, g, y * x)
        z = F.silu(z + (self.b_in[:, None] + self.gene_bias.T)[None, :, :, None])
        message = torch.matmul(self.w_out, z.reshape(b, k, n)).view(b, -1, g, y * x)
        message = (message + self.b_out[None, :, None, None]) * self.gain[None, None, :, None]
        out = state + message.view(b, self.state_features, g, y, x)
        return out.squeeze(1) if squeeze else out
