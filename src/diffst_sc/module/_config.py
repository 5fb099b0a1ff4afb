"""Configuration of the Diff-ST denoising network: one JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._core._presets import check_preset

_CELL_SELECTIONS = ("entropy", "random")


@dataclass
class NetConfig:
    """Hyper-parameters of :class:`~diffst_sc.module.DiffSTNet`.

    Saved next to the weights as JSON (:meth:`to_dict`) and read back with :meth:`from_dict`, so
    a fitted model is re-created without pickling code.

    Parameters
    ----------
    n_genes
        Number of genes ``G`` (channels of the gene maps); fixed per model.
    channels
        Base width ``C`` of the UNet.
    channel_mult
        Width multiplier of each UNet level; level ``i`` runs at ``P / 2**i`` pixels, so patches
        must be a multiple of ``2 ** (len(channel_mult) - 1)`` (and of 4) pixels wide.
    num_res_blocks
        Residual blocks per UNet level (on each of the down and up paths).
    attn_lowest
        Self-attention in the UNet's lowest resolution level(s) and middle.
    attn_levels
        How many of the lowest UNet levels get self-attention when ``attn_lowest`` is set.
    attn_heads
        Heads of the UNet self-attention.
    dropout
        Dropout rate inside the UNet residual blocks.
    norm_groups
        Groups of the GroupNorm layers (reduced to a divisor of each layer's width).
    feature_channels
        Width of the histology and expression encoders' feature maps (and of the disentangled
        common and distinct parts).
    cond_channels
        Channels of the conditioning map fed to the UNet input and its spatial modulation.
    cond_vec_channels
        Size of the pooled condition vector that modulates the UNet normalisation layers.
    he_upsample
        ``k``: the tissue-scale H&E patch is ``k * P`` pixels wide (a power of two).
    n_cells
        ``K``: cell-scale sub-patches per patch.
    cell_size
        ``c``: width in pixels of each cell-scale sub-patch.
    cell_dim
        Token width of the cell-to-tissue cross-attention.
    cell_heads
        Heads of the cell-to-tissue cross-attention.
    cell_selection
        How the active sub-patches are chosen while training: ``"entropy"`` (the ``n`` with
        the highest image entropy) or ``"random"`` (a random subset of ``n``; evaluation always
        uses entropy).
    gene_graph_hidden
        Hidden width per gene of the gene-graph convolutions.
    gene_head_features
        Features per gene in the output head (mixed by the gene graph before the projection).
    gene_graph_output
        Also mix genes with the graph in the output head (not only at the input).
    disentangle_weight
        Weight already applied to the disentangling loss returned by the network.
    use_disentangle
        Cross-modal disentangling; off: the encoders' features are concatenated.
    use_cell_attention
        Cell-to-tissue cross-attention; off: no cell-scale branch.
    use_gene_graph
        Gene co-expression graph convolutions; off: genes are not mixed by a graph.

    Examples
    --------
    >>> from diffst_sc.module import NetConfig
    >>> cfg = NetConfig(n_genes=50, use_gene_graph=False)
    >>> NetConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    n_genes: int
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_lowest: bool = True
    attn_levels: int = 1
    attn_heads: int = 4
    dropout: float = 0.0
    norm_groups: int = 16
    feature_channels: int = 32
    cond_channels: int = 32
    cond_vec_channels: int = 64
    he_upsample: int = 4
    n_cells: int = 16
    cell_size: int = 24
    cell_dim: int = 64
    cell_heads: int = 4
    cell_selection: str = "entropy"
    gene_graph_hidden: int = 4
    gene_head_features: int = 2
    gene_graph_output: bool = True
    disentangle_weight: float = 0.1
    use_disentangle: bool = True
    use_cell_attention: bool = True
    use_gene_graph: bool = True

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self._check()

    # -- validation ---------------------------------------------------------------------------
    def _check(self) -> None:
        positive = ("n_genes", "channels", "num_res_blocks", "attn_heads", "norm_groups",
                    "feature_channels", "cond_channels", "cond_vec_channels", "he_upsample",
                    "n_cells", "cell_size", "cell_dim", "cell_heads", "gene_graph_hidden",
                    "gene_head_features")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NetConfig.{name} must be a positive integer, got {value!r}.")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"NetConfig.channel_mult must be a non-empty tuple of positive "
                             f"integers such as (1, 2, 2), got {self.channel_mult!r}.")
        if self.he_upsample & (self.he_upsample - 1):
            raise ValueError(f"NetConfig.he_upsample must be a power of two (1, 2, 4, 8, ...), "
                             f"got {self.he_upsample}; resample the H&E patch accordingly.")
        if not 0 <= self.attn_levels <= len(self.channel_mult):
            raise ValueError(f"NetConfig.attn_levels must lie in [0, len(channel_mult)] = "
                             f"[0, {len(self.channel_mult)}], got {self.attn_levels}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"NetConfig.dropout must lie in [0, 1), got {self.dropout}.")
        if self.disentangle_weight < 0:
            raise ValueError(f"NetConfig.disentangle_weight must be >= 0, got "
                             f"{self.disentangle_weight}.")
        if self.cell_selection not in _CELL_SELECTIONS:
            raise ValueError(f"NetConfig.cell_selection must be one of {_CELL_SELECTIONS}, got "
                             f"{self.cell_selection!r}.")
        if self.cell_dim % self.cell_heads:
            raise ValueError(f"NetConfig.cell_dim ({self.cell_dim}) must be divisible by "
                             f"cell_heads ({self.cell_heads}).")
        for mult in self.channel_mult:
            if (self.channels * mult) % self.attn_heads:
                raise ValueError(f"Every UNet width channels * mult must be divisible by "
                                 f"attn_heads ({self.attn_heads}); got {self.channels} * {mult}.")

    @property
    def patch_multiple(self) -> int:
        """Patch widths ``P`` the network accepts are multiples of this number."""
        return max(4, 2 ** (len(self.channel_mult) - 1))

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["channel_mult"] = list(self.channel_mult)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        """Re-create a configuration from :meth:`to_dict`'s output.

        Raises
        ------
        ValueError
            When ``d`` has keys this version does not know, or lacks ``n_genes``.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown NetConfig keys {unknown}: the saved model was written by "
                             f"another version of diffst_sc. Known keys: {sorted(known)}; remove "
                             "the unknown ones or install the version that wrote the model.")
        if "n_genes" not in d:
            raise ValueError("NetConfig needs 'n_genes' (the number of genes of the model).")
        return cls(**d)


def preset(name: str, n_genes: int, **overrides: Any) -> NetConfig:
    """Return a named configuration.

    Parameters
    ----------
    name
        ``"cpu-small"`` (64 channels, levels (1, 2, 2), attention at the lowest level) or
        ``"gpu-large"`` (128 channels, levels (1, 2, 2, 4), attention at the two lowest).
    n_genes
        Number of genes of the model.
    **overrides
        Any other :class:`NetConfig` field, e.g. ``dropout=0.1``.

    Returns
    -------
    NetConfig

    Examples
    --------
    >>> from diffst_sc.module import preset
    >>> preset("cpu-small", 100).channels
    64
    """
    return NetConfig.from_dict({**check_preset(name)["net"], "n_genes": n_genes, **overrides})
