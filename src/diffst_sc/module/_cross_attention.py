"""Dynamic cell-to-tissue cross-attention over an entropy-ranked set of cell-scale sub-patches."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._encoders import CellEncoder


def fourier_position(xy: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Encode ``(..., 2)`` positions in [0, 1] as ``(..., 4 n_freqs)`` sines and cosines."""
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, device=xy.device, dtype=xy.dtype)
    angles = (xy[..., None] * freqs).flatten(-2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_centres(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """Return ``(height * width, 2)`` cell centres ``(x, y)`` in [0, 1] of a grid, row-major."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


class DynamicCellAttention(nn.Module):
    """Tissue-level tokens attend to cell-level sub-patch tokens; adds the result to the features.

    Tissue tokens are the histology features average-pooled by ``token_stride`` plus a Fourier
    encoding of their position; cell tokens are a small CNN's vector of each sub-patch plus the
    same encoding of its centre, so attention can relate nearby cells and tissue. Only the
    ``n_active`` sub-patches with the highest ``cell_entropy`` take part (the training
    curriculum raises ``n_active`` with :meth:`set_active_cells`); with ``selection="random"``
    training uses a random subset of that size instead. Sub-patches whose entropy is not finite
    (padding) are never attended to. The tokens' update is upsampled back and added to the
    histology features.

    Parameters
    ----------
    feature_channels
        ``C_f`` of the histology features.
    cell_dim
        Token width ``D``.
    n_cells
        ``K``, sub-patches per patch (the default ``n_active``).
    heads
        Attention heads.
    token_stride
        Pooling of the histology features into tissue tokens.
    selection
        ``"entropy"`` or ``"random"`` (training only).
    groups
        GroupNorm groups of the cell encoder.
    n_freqs
        Frequencies of the positional encoding.
    """

    def __init__(self, feature_channels: int, cell_dim: int, n_cells: int, heads: int = 4,
                 token_stride: int = 4, selection: str = "entropy", groups: int = 16,
                 n_freqs: int = 6) -> None:
        super().__init__()
        if selection not in ("entropy", "random"):
            raise ValueError(f"selection must be 'entropy' or 'random', got {selection!r}.")
        self.n_cells = n_cells
        self.n_active = n_cells
        self.token_stride = token_stride
        self.selection = selection
        self.n_freqs = n_freqs
        self.cell_encoder = CellEncoder(cell_dim, groups)
        self.position = nn.Linear(4 * n_freqs, cell_dim)
        self.tissue_in = nn.Linear(feature_channels, cell_dim)
        self.norm_q = nn.LayerNorm(cell_dim)
        self.norm_kv = nn.LayerNorm(cell_dim)
        self.attention = nn.MultiheadAttention(cell_dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(cell_dim)
        self.mlp = nn.Sequential(nn.Linear(cell_dim, 2 * cell_dim), nn.GELU(),
                                 nn.Linear(2 * cell_dim, cell_dim))
        self.out = nn.Linear(cell_dim, feature_channels)

    def set_active_cells(self, n: int) -> None:
        """Use the ``n`` (1 to ``n_cells``) highest-entropy sub-patches from now on."""
        n = int(n)
        if not 1 <= n <= self.n_cells:
            raise ValueError(f"The number of active cells must lie in [1, {self.n_cells}], "
                             f"got {n}.")
        self.n_active = n

    def select(self, cells: torch.Tensor, cell_xy: torch.Tensor, cell_entropy: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pick the active sub-patches.

        Parameters
        ----------
        cells
            ``(B, K, 3, c, c)`` sub-patches.
        cell_xy
            ``(B, K, 2)`` centres.
        cell_entropy
            ``(B, K)`` entropy scores.

        Returns
        -------
        tuple
            The selected ``(B, n, 3, c, c)`` cells, ``(B, n, 2)`` centres and ``(B, n)`` bool
            validity, with ``n = min(n_active, K)``.
        """
        b, k = cell_entropy.shape
        n = min(self.n_active, k)
        entropy = cell_entropy.float()
        valid = torch.isfinite(entropy)
        if self.training and self.selection == "random":
            score = torch.where(valid, torch.rand_like(entropy), -1.0)
        else:
            score = torch.where(valid, entropy, -math.inf)
        idx = score.topk(n, dim=1).indices
        rows = torch.arange(b, device=idx.device)[:, None]
        return cells[rows, idx], cell_xy[rows, idx], valid[rows, idx]

    def forward(self, f_h: torch.Tensor, cells: torch.Tensor, cell_xy: torch.Tensor,
                cell_entropy: torch.Tensor) -> torch.Tensor:
        """Return ``f_h`` plus the cell-informed update, ``(B, C_f, P, P)``.

        Parameters
        ----------
        f_h
            ``(B, C_f, P, P)`` histology features, ``P`` divisible by ``token_stride``.
        cells, cell_xy, cell_entropy
            See :meth:`select`.
        """
        b, _, height, width = f_h.shape
        s = self.token_stride
        if height % s or width % s:
            raise ValueError(f"The feature map ({height} x {width}) must be divisible by the "
                             f"token stride {s}; use patches whose size is a multiple of {s}.")
        sel_cells, sel_xy, valid = self.select(cells, cell_xy, cell_entropy)
        n = sel_cells.shape[1]
        cell_vec = self.cell_encoder(sel_cells.flatten(0, 1)).view(b, n, -1)
        kv = self.norm_kv(cell_vec + self.position(fourier_position(sel_xy.to(f_h.dtype),
                                                                     self.n_freqs)))

        pooled = F.avg_pool2d(f_h, s)
        ht, wt = pooled.shape[2:]
        tissue_xy = grid_centres(ht, wt, device=f_h.device, dtype=f_h.dtype)
        q = self.tissue_in(pooled.flatten(2).transpose(1, 2))
        q = self.norm_q(q + self.position(fourier_position(tissue_xy, self.n_freqs)))

        any_valid = valid.any(dim=1)
        # A patch without any valid sub-patch attends to all (finite values) and is zeroed below.
        ignore = ~valid & any_valid[:, None]
        y, _ = self.attention(q, kv, kv, key_padding_mask=ignore, need_weights=False)
        y = y + self.mlp(self.norm_mlp(y))
        y = self.out(y) * any_valid[:, None, None].to(y.dtype)
        delta = y.transpose(1, 2).reshape(b, -1, ht, wt)
        return f_h + F.interpolate(delta, size=(height, width), mode="bilinear",
                                   align_corners=False)
