"""Multi-modal disentangling with cross-modal adaptive modulation, and its plain fallback."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._encoders import group_norm

_EPS = 1e-6


def _masked_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``(B, H, W)`` values, weighted per pixel by ``(B, 1, H, W)`` weights if given."""
    if weight is None:
        return values.mean()
    w = weight[:, 0].to(values.dtype)
    total = w.sum()
    # torch.where rather than an `if`: no device synchronisation on GPU.
    weighted = (values * w).sum() / total.clamp(min=_EPS)
    return torch.where(total > _EPS, weighted, values.mean())


def disentangle_loss(common_h: torch.Tensor, common_e: torch.Tensor, distinct_h: torch.Tensor,
                     distinct_e: torch.Tensor, weight: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Pull the two common parts together and push each distinct part off its common part.

    ``mean(1 - cos(c_h, c_e)) + mean(cos(c_h, d_h)^2) + mean(cos(c_e, d_e)^2)``, cosines taken
    over channels per pixel; it lies in [0, 4]. Each part is first centred on its mean over the
    patch, so that the loss is about spatial structure: otherwise constant common parts
    (a 1x1 convolution's bias) would satisfy it without carrying any information.

    Parameters
    ----------
    common_h, common_e, distinct_h, distinct_e
        ``(B, C, H, W)`` feature parts.
    weight
        Optional ``(B, 1, H, W)`` per-pixel weights (e.g. where the LR spots cover the pixel).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    # float32 even under autocast: cosines of half-precision features are too coarse.
    common_h, common_e, distinct_h, distinct_e = (
        x.float() - x.float().mean(dim=(2, 3), keepdim=True)
        for x in (common_h, common_e, distinct_h, distinct_e))
    align = 1.0 - F.cosine_similarity(common_h, common_e, dim=1, eps=_EPS)
    sep_h = F.cosine_similarity(common_h, distinct_h, dim=1, eps=_EPS).square()
    sep_e = F.cosine_similarity(common_e, distinct_e, dim=1, eps=_EPS).square()
    return _masked_mean(align + sep_h + sep_e, weight)


class _ConditionHead(nn.Module):
    """Fused features -> conditioning map ``(B, C_cond, H, W)`` and pooled vector ``(B, C_vec)``."""

    def __init__(self, in_channels: int, cond_channels: int, vec_channels: int,
                 groups: int) -> None:
        super().__init__()
        self.map = nn.Sequential(nn.Conv2d(in_channels, cond_channels, 1),
                                 group_norm(cond_channels, groups), nn.SiLU(),
                                 nn.Conv2d(cond_channels, cond_channels, 3, padding=1))
        self.vec = nn.Sequential(nn.Linear(2 * cond_channels, vec_channels), nn.SiLU(),
                                 nn.Linear(vec_channels, vec_channels))

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond_map = self.map(fused)
        pooled = torch.cat([cond_map.mean(dim=(2, 3)), cond_map.amax(dim=(2, 3))], dim=1)
        return cond_map, self.vec(pooled)


class CrossModalDisentangle(nn.Module):
    """Split histology and expression features into common and distinct parts and fuse them.

    Each modality's features ``f`` are split by 1x1 convolutions into a common part ``c`` and a
    distinct part ``d``. Each distinct part is gated by its affinity with the other modality
    (per pixel, a sigmoid of a 1x1 convolution over ``[d_h, d_e]``), so that histology detail
    is passed on where the expression agrees with it and vice versa. The mean common part and
    the two gated distinct parts form the conditioning map; its pooled summary is the
    condition vector.

    Parameters
    ----------
    in_channels
        ``C_f``, channels of both modalities' features.
    cond_channels
        ``C_cond`` of the output map.
    vec_channels
        ``C_vec`` of the output vector.
    groups
        GroupNorm groups.
    """

    def __init__(self, in_channels: int, cond_channels: int, vec_channels: int,
                 groups: int = 16) -> None:
        super().__init__()
        c = in_channels
        self.split_h = nn.Conv2d(c, 2 * c, 1)
        self.split_e = nn.Conv2d(c, 2 * c, 1)
        self.affinity = nn.Conv2d(2 * c, 2 * c, 1)
        self.head = _ConditionHead(3 * c, cond_channels, vec_channels, groups)

    def parts(self, f_h: torch.Tensor, f_e: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the common and distinct parts ``(c_h, c_e, d_h, d_e)``."""
        c_h, d_h = self.split_h(f_h).chunk(2, dim=1)
        c_e, d_e = self.split_e(f_e).chunk(2, dim=1)
        return c_h, c_e, d_h, d_e

    def forward(self, f_h: torch.Tensor, f_e: torch.Tensor, weight: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fuse ``(B, C_f, H, W)`` histology and expression features.

        Parameters
        ----------
        f_h, f_e
            Histology and expression features.
        weight
            Optional ``(B, 1, H, W)`` per-pixel weights of the loss.

        Returns
        -------
        tuple
            Conditioning map ``(B, C_cond, H, W)``, vector ``(B, C_vec)`` and the (unweighted)
            scalar disentangling loss.
        """
        c_h, c_e, d_h, d_e = self.parts(f_h, f_e)
        gate_h, gate_e = torch.sigmoid(self.affinity(torch.cat([d_h, d_e], 1))).chunk(2, 1)
        fused = torch.cat([(c_h + c_e) / 2, d_h * gate_h, d_e * gate_e], dim=1)
        cond_map, cond_vec = self.head(fused)
        return cond_map, cond_vec, disentangle_loss(c_h, c_e, d_h, d_e, weight)


class ConcatFusion(nn.Module):
    """Fallback of :class:`CrossModalDisentangle`: the two modalities' features concatenated.

    Same inputs and outputs; the loss is always 0.
    """

    def __init__(self, in_channels: int, cond_channels: int, vec_channels: int,
                 groups: int = 16) -> None:
        super().__init__()
        self.head = _ConditionHead(2 * in_channels, cond_channels, vec_channels, groups)

    def forward(self, f_h: torch.Tensor, f_e: torch.Tensor, weight: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fuse by concatenation; see :meth:`CrossModalDisentangle.forward`."""
        cond_map, cond_vec = self.head(torch.cat([f_h, f_e], dim=1))
        return cond_map, cond_vec, f_h.new_zeros(())
