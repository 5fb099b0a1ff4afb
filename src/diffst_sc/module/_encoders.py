"""Encoders of the conditions: tissue-scale H&E, LR spot expression and cell-scale sub-patches."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# skimage.color's ``rgb_from_hed`` (Ruifrok & Johnston): rows are the RGB optical densities of
# haematoxylin, eosin and DAB.
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
# Darkest intensity an 8-bit image can hold: keeps optical densities finite and bounded.
_OD_FLOOR = 1.0 / 255.0


def group_norm(channels: int, groups: int = 16) -> nn.GroupNorm:
    """GroupNorm with the largest group count dividing ``channels`` and not above ``groups``."""
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class ColourDeconvolution(nn.Module):
    """Fixed RGB -> haematoxylin / eosin / DAB stain densities, plus the centred RGB.

    The stains are skimage's :func:`~skimage.color.rgb2hed` multiplied by ``ln(1e6)``, i.e.
    stain concentrations in natural optical-density units, with intensities floored at
    ``1/255`` instead of ``1e-6`` so that black pixels give bounded values. It has no
    parameters and is differentiable, an inductive bias for H&E rather than a learned layer.
    """

    out_channels = 6

    def __init__(self) -> None:
        super().__init__()
        rgb_from_hed = torch.tensor(RGB_FROM_HED, dtype=torch.float64)
        self.register_buffer("hed_from_rgb", torch.linalg.inv(rgb_from_hed).float(),
                             persistent=False)

    def stains(self, rgb: torch.Tensor) -> torch.Tensor:
        """Return the ``(N, 3, H, W)`` H, E, D densities of ``(N, 3, H, W)`` RGB in [0, 1]."""
        od = -torch.log(rgb.clamp(min=_OD_FLOOR))
        return F.relu(torch.einsum("nchw,cd->ndhw", od, self.hed_from_rgb))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Return ``(N, 6, H, W)``: RGB scaled to [-1, 1] then the H, E, D densities."""
        return torch.cat([rgb * 2.0 - 1.0, self.stains(rgb)], dim=1)


def _conv_norm_act(cin: int, cout: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                         group_norm(cout, groups), nn.SiLU())


class _ResidualConv(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                  group_norm(channels, groups), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HistologyEncoder(nn.Module):
    """Tissue-scale H&E ``(B, 3, k P, k P)`` in [0, 1] -> features ``(B, C_f, P, P)``.

    Colour deconvolution, then ``log2(k)`` stride-2 convolutions and a residual convolution.

    Parameters
    ----------
    upsample
        ``k``, a power of two: how many H&E pixels span one output pixel.
    out_channels
        ``C_f``.
    groups
        GroupNorm groups.
    """

    def __init__(self, upsample: int, out_channels: int, groups: int = 16) -> None:
        super().__init__()
        if upsample < 1 or upsample & (upsample - 1):
            raise ValueError(f"upsample must be a power of two, got {upsample}.")
        self.upsample = upsample
        self.deconvolution = ColourDeconvolution()
        n_down = int(math.log2(upsample))
        # Widths double up to out_channels at the last stride-2 stage.
        widths = [max(8, out_channels // 2 ** (n_down - i)) for i in range(1, n_down + 1)]
        layers, cin = [], ColourDeconvolution.out_channels
        for w in widths:
            layers.append(_conv_norm_act(cin, w, 2, groups))
            cin = w
        if not n_down:
            layers.append(_conv_norm_act(cin, out_channels, 1, groups))
        layers.append(_ResidualConv(out_channels, groups))
        self.body = nn.Sequential(*layers)

    def forward(self, he: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, 3, k P, k P)`` H&E into ``(B, C_f, P, P)`` features."""
        return self.body(self.deconvolution(he))


class ExpressionEncoder(nn.Module):
    """LR expression on the HR grid and its coverage mask -> features ``(B, C_f, P, P)``.

    Parameters
    ----------
    n_genes
        ``G``.
    out_channels
        ``C_f``.
    groups
        GroupNorm groups.
    """

    def __init__(self, n_genes: int, out_channels: int, groups: int = 16) -> None:
        super().__init__()
        # 1x1 first: G can be large, and a 3x3 over G channels would dominate the cost.
        self.project = nn.Sequential(nn.Conv2d(n_genes + 1, out_channels, 1),
                                     group_norm(out_channels, groups), nn.SiLU())
        self.body = nn.Sequential(_ResidualConv(out_channels, groups),
                                  _ResidualConv(out_channels, groups))

    def forward(self, lr: torch.Tensor, lr_mask: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, G, P, P)`` LR expression and its ``(B, 1, P, P)`` mask."""
        return self.body(self.project(torch.cat([lr, lr_mask], dim=1)))


class CellEncoder(nn.Module):
    """Tiny CNN: each ``(3, c, c)`` cell-scale sub-patch in [0, 1] -> a vector of ``out_dim``.

    Works for any ``c >= 4`` (global average pooling at the end).

    Parameters
    ----------
    out_dim
        Size of each sub-patch's vector.
    groups
        GroupNorm groups.
    """

    def __init__(self, out_dim: int, groups: int = 16) -> None:
        super().__init__()
        self.deconvolution = ColourDeconvolution()
        self.body = nn.Sequential(
            _conv_norm_act(ColourDeconvolution.out_channels, 16, 2, groups),
            _conv_norm_act(16, 32, 2, groups),
            _conv_norm_act(32, 32, 1, groups),
        )
        self.head = nn.Linear(32, out_dim)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, 3, c, c)`` sub-patches into ``(N, out_dim)`` vectors."""
        h = self.body(self.deconvolution(cells))
        return self.head(h.mean(dim=(2, 3)))
