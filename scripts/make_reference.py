"""Fit the shipped her2st reference model on the measured spots of sections B4, C2 and C3.

Usage: python scripts/make_reference.py ../shared/data/her2st src/diffst_sc/model/references/her2st

The genes are the 500 that ``ds.pp.select_genes`` picks over the three sections together, with
the benchmark panel (``genes_bench.txt``) added, so that every benchmark gene has weights. The
model is the default histology model of ``ds.tl.fit`` on the three sections jointly (2 x 2
pseudo-spot pairs of each); it is written with ``model.save`` and a README with its provenance.
"""

import sys
from pathlib import Path

import diffst_sc as ds

README = """# her2st reference model

The histology model of diffst_sc (`ds.model.HistologyModel`) fitted by
`scripts/make_reference.py` on the measured spots of three sections of the HER2-positive breast
cancer legacy Spatial Transcriptomics cohort (B4, C2 and C3; each section's spots summed 2 x 2
into pseudo-spots as inputs, its spots the targets):

Andersson A, Larsson L, Stenbeck L, et al. *Spatial deconvolution of HER2-positive breast cancer
delineates tumor-associated cell type interactions.* Nat Commun 12, 6012 (2021).
https://doi.org/10.1038/s41467-021-26271-2 (data: Zenodo record 3957257, published openly with
the article for reuse; cite the article where this model is used).

It holds {n} genes: the 500 that `ds.pp.select_genes` picks over the three sections, and the
benchmark panel. What it is for, and when not to use it: `docs/method.md`, "A reference model".
Load it with `ds.model.HistologyModel.reference("her2st")`; use it with
`ds.tl.fit(sdata, reference="her2st")`.
"""


def main(data: str, out: str) -> None:
    """Fit the reference on the sections in ``data`` and save it into ``out``."""
    data_dir = Path(data)
    sections = [ds.io.read_legacy_st(data_dir / name) for name in ("B4", "C2", "C3")]
    tables = [s.tables["table"] for s in sections]
    genes = list(ds.pp.select_genes(tables, n_top=500))
    bench = [g.strip() for g in (data_dir / "genes_bench.txt").read_text().splitlines()
             if g.strip()]
    genes += [g for g in bench if g not in genes and all(g in t.var_names for t in tables)]
    model = ds.tl.fit(sections, genes=genes, progress=False)
    model.training["name"] = "her2st"
    folder = model.save(out, overwrite=True)
    (folder / "README.md").write_text(README.format(n=len(genes)))
    print(model, "->", folder)


if __name__ == "__main__":
    main(*sys.argv[1:3])
