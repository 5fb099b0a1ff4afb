"""Derive the embedded demo dataset from the public HER2+ ST section C2.

Usage: python scripts/make_demo_dataset.py ../shared/data/her2st/C2 src/diffst_sc/datasets/data/her2st_c2

Keeps the in-tissue spots, the 500 genes with the highest mean expression (mitochondrial and
ribosomal genes left out) and the H&E at half resolution (spot pixel positions halved to match).
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

Image.MAX_IMAGE_PIXELS = None


def main(src: str, dst: str, n_genes: int = 500, shrink: int = 2) -> None:
    src_p, dst_p = Path(src), Path(dst)
    dst_p.mkdir(parents=True, exist_ok=True)
    spots = pd.read_csv(src_p / "spots.tsv", sep="\t")
    spots = spots[spots["selected"] == 1].copy()
    counts = pd.read_csv(src_p / "counts.tsv.gz", sep="\t", index_col=0)
    names = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)]
    counts = counts.loc[counts.index.intersection(names)]
    genes = [g for g in counts.columns if not g.startswith(("MT-", "RPL", "RPS"))]
    lib = counts.sum(1).to_numpy()[:, None]
    score = np.log1p(counts[genes].to_numpy() / np.maximum(lib, 1) * 1e4).mean(0)
    keep = [genes[i] for i in np.argsort(-score)[:n_genes]]
    counts[keep].to_csv(dst_p / "counts.tsv.gz", sep="\t", compression="gzip")
    spots[["pixel_x", "pixel_y"]] = (spots[["pixel_x", "pixel_y"]] / shrink).round(2)
    spots.to_csv(dst_p / "spots.tsv", sep="\t", index=False)
    im = Image.open(src_p / "he.jpg").convert("RGB")
    im = im.resize((im.width // shrink, im.height // shrink), Image.LANCZOS)
    im.save(dst_p / "he.jpg", quality=80)


if __name__ == "__main__":
    main(*sys.argv[1:3])
