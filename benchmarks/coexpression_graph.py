"""Speed of ``ds.pp.coexpression_graph`` on a real section resampled to 5,000 spots x 2,000 genes.

The spots of her2st C2 (Andersson et al., Nat Commun 2021) are drawn with replacement and their
counts Poisson-resampled (each new spot ~ Poisson(counts of a real spot)) until there are
``--spots`` of them; the ``--genes`` most expressed genes are kept. Writes a markdown table.

Usage (from the repository root)::

    python benchmarks/coexpression_graph.py [--data ../shared/data] [--spots 5000] [--genes 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import diffst_sc as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def resampled_section(data: Path, n_spots: int, n_genes: int, seed: int = 0) -> ad.AnnData:
    """C2's in-tissue spots, Poisson-resampled to ``n_spots`` x its ``n_genes`` top genes."""
    sec = data / "her2st" / "C2"
    spots = pd.read_csv(sec / "spots.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    counts = pd.read_csv(sec / "counts.tsv.gz", sep="\t", index_col=0)
    keep = pd.Index([f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)])
    counts = counts.loc[keep.intersection(counts.index)]
    real = ad.AnnData(sp.csr_matrix(counts.to_numpy(np.float32)),
                      var=pd.DataFrame(index=counts.columns.astype(str)))
    genes = ds.pp.select_genes(real, n_top=n_genes)
    x = real[:, genes].X.toarray()
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, x.shape[0], n_spots)
    new = rng.poisson(x[rows]).astype(np.float32)
    return ad.AnnData(sp.csr_matrix(new), var=pd.DataFrame(index=genes),
                      obs=pd.DataFrame(index=[f"s{i}" for i in range(n_spots)]))


def time_call(fn, repeats: int) -> list[float]:
    fn()  # warm-up (imports, BLAS threads)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--spots", type=int, default=5000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "coexpression_graph.md")
    a = ap.parse_args(argv)
    if not (a.data / "her2st" / "C2").exists():
        print(f"her2st/C2 not found under {a.data}: pass --data", file=sys.stderr)
        return 2
    adata = resampled_section(a.data, a.spots, a.genes)
    settings = [
        ("pearson, all edges", {"method": "pearson"}),
        ("pearson, top-10 per gene", {"method": "pearson", "k": 10}),
        ("spearman, all edges", {"method": "spearman"}),
    ]
    rows = []
    for label, kw in settings:
        times = time_call(lambda kw=kw: ds.pp.coexpression_graph(adata, **kw), a.repeats)
        nnz = adata.varp["diffst_coexpr"].nnz
        rows.append((label, statistics.median(times), min(times), nnz))
        print(f"{label:28s} median {statistics.median(times):.3f} s  min {min(times):.3f} s  "
              f"edges {nnz}")
    x = adata.X.toarray()
    times = time_call(lambda: ds.pp.coexpression_matrix(np.log1p(x)), a.repeats)
    rows.append(("coexpression_matrix only (pearson)", statistics.median(times), min(times),
                 a.genes * (a.genes - 1)))

    cmd = "python benchmarks/coexpression_graph.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Co-expression graph: speed",
        "",
        f"{a.spots:,} spots x {a.genes:,} genes: her2st C2's in-tissue spots drawn with "
        "replacement and Poisson-resampled, its most expressed genes "
        "(`ds.pp.select_genes`). Time of `ds.pp.coexpression_graph(adata, ...)` on an AnnData "
        "(log1p normalisation, correlation, storing the CSR graph in `varp`), "
        f"median and best of {a.repeats} runs after a warm-up.",
        "",
        "| setting | median (s) | best (s) | edges stored |",
        "| --- | --- | --- | --- |",
        *[f"| {label} | {med:.3f} | {best:.3f} | {nnz:,} |" for label, med, best, nnz in rows],
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {machine()}",
        "",
        f"Date: {dt.date.today().isoformat()}",
        "",
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
