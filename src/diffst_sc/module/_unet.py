"""The denoising UNet: residual blocks with FiLM (time + condition vector) and SPADE modulation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._encoders import group_norm


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of diffusion times ``t`` in [0, 1] (scaled by 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.cos(), angles.sin()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ModulatedGroupNorm(nn.Module):
    """GroupNorm whose scale and shift come from a vector (FiLM) and a spatial map (SPADE).

    ``GN(h) * (1 + s_emb + s_map(x, y)) + b_emb + b_map(x, y)``.

    Parameters
    ----------
    channels
        Channels of ``h``.
    emb_channels
        Size of the modulating vector.
    map_channels
        Channels of the modulating map (at ``h``'s resolution).
    groups
        GroupNorm groups.
    """

    def __init__(self, channels: int, emb_channels: int, map_channels: int,
                 groups: int = 16) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(channels, groups), channels, affine=False)
        self.from_emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * channels))
        self.from_map = nn.Conv2d(map_channels, 2 * channels, 1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond_map: torch.Tensor
                ) -> torch.Tensor:
        """Normalise and modulate ``h`` (B, C, H, W) by ``emb`` (B, E) and ``cond_map``."""
        scale_e, shift_e = self.from_emb(emb)[:, :, None, None].chunk(2, dim=1)
        scale_m, shift_m = self.from_map(cond_map).chunk(2, dim=1)
        return self.norm(h) * (1 + scale_e + scale_m) + (shift_e + shift_m)


class ResBlock(nn.Module):
    """Pre-activation residual block; its second normalisation is modulated."""

    def __init__(self, cin: int, cout: int, emb_channels: int, map_channels: int,
                 dropout: float = 0.0, groups: int = 16) -> None:
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = ModulatedGroupNorm(cout, emb_channels, map_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond_map: torch.Tensor
                ) -> torch.Tensor:
        """Apply to ``x`` given the embedding and the conditioning map at ``x``'s resolution."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, emb, cond_map))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int, heads: int, groups: int = 16) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the ``H * W`` pixels of ``x`` (B, C, H, W)."""
        b, c, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, height * width)
        q, k, v = qkv.transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(y.transpose(-1, -2).reshape(b, c, height, width))


class _Level(nn.Module):
    """The residual blocks (and optional attention) of one UNet level on one path."""

    def __init__(self, cin: int, cout: int, n_blocks: int, attention: bool, emb_channels: int,
                 map_channels: int, dropout: float, heads: int, groups: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(cin if i == 0 else cout, cout, emb_channels, map_channels, dropout, groups)
            for i in range(n_blocks))
        self.attention = SelfAttention(cout, heads, groups) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond_map: torch.Tensor
                ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, emb, cond_map)
        if self.attention is not None:
            x = self.attention(x)
        return x


class UNet(nn.Module):
    """Denoising UNet, fully convolutional.

    Level ``i`` runs at ``P / 2**i`` with ``channels * channel_mult[i]`` channels; each level's
    output is a skip into the same level of the up path. Every residual block's normalisation is
    modulated by the embedding (time + condition vector) and by the conditioning map brought to
    its resolution (:meth:`condition_pyramid`, computable once per condition).

    Parameters
    ----------
    in_channels
        Channels of the input (noisy maps, LR, mask and conditioning map stacked).
    channels
        Base width ``C``.
    channel_mult
        Width multiplier of each level.
    num_res_blocks
        Residual blocks per level and path.
    emb_channels
        Size of the modulating embedding.
    cond_channels
        Channels of the conditioning map.
    attn_levels
        Number of the lowest levels with self-attention (0: none, and none in the middle).
    attn_heads
        Self-attention heads.
    dropout
        Dropout rate in the residual blocks.
    groups
        GroupNorm groups.
    """

    def __init__(self, in_channels: int, channels: int, channel_mult: tuple[int, ...],
                 num_res_blocks: int, emb_channels: int, cond_channels: int,
                 attn_levels: int = 1, attn_heads: int = 4, dropout: float = 0.0,
                 groups: int = 16) -> None:
        super().__init__()
        n_levels = len(channel_mult)
        widths = [channels * m for m in channel_mult]
        attn = [i >= n_levels - attn_levels for i in range(n_levels)]
        common = {"emb_channels": emb_channels, "map_channels": cond_channels,
                  "dropout": dropout, "heads": attn_heads, "groups": groups}
        # 1x1: the input has ~2G channels and a 3x3 over them would dominate the cost.
        self.conv_in = nn.Conv2d(in_channels, channels, 1)
        self.pyramid = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cond_channels, cond_channels, 3, padding=1), nn.SiLU())
            for _ in range(n_levels))

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = channels
        for i, w in enumerate(widths):
            self.down.append(_Level(cin, w, num_res_blocks, attn[i], **common))
            if i < n_levels - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
            cin = w
        self.middle = _Level(cin, cin, 2, attn_levels > 0, **common)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(n_levels)):
            self.up.append(_Level(cin + widths[i], widths[i], num_res_blocks, attn[i], **common))
            cin = widths[i]
            if i > 0:
                # Channels change at the low resolution, by a 1x1; the next level's residual
                # blocks do the spatial work (a 3x3 here would cost as much as a block).
                self.upsample.append(nn.Conv2d(cin, widths[i - 1], 1))
                cin = widths[i - 1]
        self.norm_out = group_norm(channels, groups)

    @property
    def n_levels(self) -> int:
        """Number of resolution levels."""
        return len(self.down)

    def condition_pyramid(self, cond_map: torch.Tensor) -> list[torch.Tensor]:
        """Bring the ``(B, C_cond, P, P)`` conditioning map to every level's resolution."""
        maps = []
        for i, layer in enumerate(self.pyramid):
            m = cond_map if i == 0 else F.avg_pool2d(cond_map, 2 ** i)
            maps.append(layer(m))
        return maps

    def forward(self, x: torch.Tensor, emb: torch.Tensor, pyramid: list[torch.Tensor]
                ) -> torch.Tensor:
        """Return ``(B, C, P, P)`` features (normalised and activated) for an output head.

        Parameters
        ----------
        x
            ``(B, in_channels, P, P)`` input, ``P`` divisible by ``2 ** (n_levels - 1)``.
        emb
            ``(B, emb_channels)`` modulating embedding.
        pyramid
            :meth:`condition_pyramid` of the conditioning map.
        """
        h = self.conv_in(x)
        skips = []
        for i, level in enumerate(self.down):
            h = level(h, emb, pyramid[i])
            skips.append(h)
            if i < self.n_levels - 1:
                h = self.downsample[i](h)
        h = self.middle(h, emb, pyramid[-1])
        for j, level in enumerate(self.up):
            i = self.n_levels - 1 - j
            h = level(torch.cat([h, skips[i]], dim=1), emb, pyramid[i])
            if i > 0:
                h = F.interpolate(self.upsample[j](h), scale_factor=2.0, mode="nearest")
        return F.silu(self.norm_out(h))
