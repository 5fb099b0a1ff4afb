"""The Diff-ST network's presets, written once: its sizes and its training budget.

Plain values, so that the command line and the model read them without importing torch; the
network's sizes become a ``module.NetConfig`` with ``module.preset``.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Trains in minutes on a 2-core laptop CPU (the NetConfig defaults).
    "cpu-small": {
        "net": {},
        "training": {"max_steps": 800, "batch_size": 8, "patch_size": 32, "lr": 1e-3},
    },
    # Close to the paper's 128-channel UNet, for a GPU.
    "gpu-large": {
        "net": {
            "channels": 128,
            "channel_mult": (1, 2, 2, 4),
            "num_res_blocks": 2,
            "attn_levels": 2,
            "dropout": 0.1,
            "norm_groups": 32,
            "feature_channels": 64,
            "cond_channels": 64,
            "cond_vec_channels": 128,
            "cell_dim": 128,
            "gene_graph_hidden": 8,
            "gene_head_features": 4,
        },
        "training": {"max_steps": 30000, "batch_size": 32, "patch_size": 64, "lr": 2e-4},
    },
}


def check_preset(name: str) -> dict[str, dict[str, Any]]:
    """The preset ``name``; a clear error naming the presets for any other."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]
