"""Draw the two diagrams of "How the method works" as SVG files in ``docs/_static/``.

Run from the repository root after changing a diagram, and commit the SVGs::

    python docs/make_figures.py

Only matplotlib is needed. The output is deterministic (no date, fixed ids), so an unchanged
diagram gives an unchanged file.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

STATIC = Path(__file__).resolve().parent / "_static"

#: Colours of the kinds of boxes: data held by the user, internal arrays, model parts, outputs.
COLOURS = {
    "data": "#dbe9f6",
    "array": "#fdf0d5",
    "model": "#e3f1e0",
    "output": "#f6dde4",
    "note": "#f2f2f2",
}


def _box(ax, x, y, w, h, title, body="", kind="array", fontsize=10):
    """A rounded box whose centre is ``(x, y)``; returns its ``(left, bottom, right, top)``."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=COLOURS[kind], edgecolor="#444444", linewidth=1.0))
    if body:
        ax.text(x, y + h / 2 - 0.18, title, ha="center", va="top", fontsize=fontsize,
                fontweight="bold")
        ax.text(x, y + h / 2 - 0.48, body, ha="center", va="top", fontsize=fontsize - 1.5,
                linespacing=1.35)
    else:
        ax.text(x, y, title, ha="center", va="center", fontsize=fontsize, fontweight="bold")
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def _arrow(ax, start, end, label="", style="-|>", rad=0.0, fontsize=7.5, offset=(0, 0.12)):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12,
                                 linewidth=1.1, color="#333333",
                                 connectionstyle=f"arc3,rad={rad}"))
    if label:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, label, ha="center", va="bottom", fontsize=fontsize, style="italic",
                color="#222222")


def _canvas(width, height):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    return fig, ax


def _legend(ax, x, y, kinds=("data", "array", "model", "output")):
    labels = {"data": "your data (SpatialData)", "array": "arrays (numpy / torch)",
              "model": "model (ds.model; DiffST: PyTorch)", "output": "written back"}
    for i, kind in enumerate(kinds):
        text = labels[kind]
        ax.add_patch(FancyBboxPatch((x + i * 3.1, y), 0.35, 0.22, boxstyle="round,pad=0.02",
                                    facecolor=COLOURS[kind], edgecolor="#444444", linewidth=0.8))
        ax.text(x + i * 3.1 + 0.5, y + 0.11, text, va="center", fontsize=7.5)


def data_flow():
    """SpatialData -> pairs -> grid -> histology model (-> network) -> maps -> image layers."""
    fig, ax = _canvas(14.6, 7.0)
    ax.text(0.2, 6.7, "Data flow: from a SpatialData to super-resolved image layers",
            fontsize=13, fontweight="bold", va="center")
    xs = [1.25, 3.65, 6.05, 8.45, 10.85, 13.25]
    w, h, top, bottom = 2.15, 1.75, 4.75, 2.0
    ax.text(xs[1] - w / 2, top + h / 2 + 0.25, "ds.tl.fit", fontsize=10.5, fontweight="bold",
            family="monospace", color="#1f4e79")
    ax.text(xs[1] - w / 2, bottom - h / 2 - 0.35, "ds.tl.superresolve", fontsize=10.5,
            fontweight="bold", family="monospace", color="#1f4e79")

    _box(ax, xs[0], (top + bottom) / 2, w, 4.5, "SpatialData", kind="data",
         body="images['he']\nH&E\n\nshapes['spots']\nspot circles\n\ntables['table']\n"
              "raw counts\n\none coordinate\nsystem\n\nread with ds.io\nor spatialdata-io")
    # One row per call: (title, body, kind) of the boxes after the SpatialData.
    fit_row = [
        ("training pairs", "spots summed into\ncoarser pseudo-spots\n(2x2 / hexagons);\n"
         "Xenium: binned\ntranscripts\n(ds.pp.degrade)", "array"),
        ("grid arrays", "pixel = spacing / 8\nLR map + mask\nH&E: tissue & cell\nscale\n"
         "target + weight", "array"),
        ("histology model", "ridge regression:\nH&E descriptors ->\nspots' departures\n"
         "inside pseudo-spots\nnumpy, seconds", "model"),
        ("Diff-ST network", "deep=True only:\nDiffSTNet learns\nwhat the ridge leaves\n"
         "on P x P patches\nEMA of weights", "model"),
        ("fitted model", "HistologyModel, in\nuns['diffst_histology']\nsave: config.json\n"
         "+ arrays.npz\nDiffST (deep=True):\n+ model.pt", "model"),
    ]
    superresolve_row = [
        ("section view", "measured spots\nare the input\n(one scale finer\nthan in training)",
         "array"),
        ("grid arrays", "same grid rules:\nphysical units,\nany spot spacing", "array"),
        ("tiles", "overlapping P x P\ntiles, blended\nband by band\nin memory",
         "array"),
        ("map of each tile", "histology model:\nbase map, corrected:\nfootprint mean =\n"
         "measured spot\nDiffST: N samples x\n20 steps, projected", "model"),
        ("image layers", "images['diffst']\nimages['diffst_std']\ntables['diffst_table']\n"
         "over the H&E", "output"),
    ]
    for row, boxes in ((top, fit_row), (bottom, superresolve_row)):
        for x, (title, body, kind) in zip(xs[1:], boxes, strict=True):
            _box(ax, x, row, w, h, title, body=body, kind=kind)
    _box(ax, xs[4], 6.35, w, 0.55, "co-expression graph", kind="array", fontsize=8)
    _arrow(ax, (xs[4], 6.07), (xs[4], top + h / 2))
    for row in (top, bottom):
        for a, b in zip(xs[1:-1], xs[2:], strict=True):
            _arrow(ax, (a + w / 2, row), (b - w / 2, row))
        _arrow(ax, (xs[0] + w / 2, row), (xs[1] - w / 2, row))
    _arrow(ax, (xs[5] - 0.3, top - h / 2), (xs[4] + 0.5, bottom + h / 2))
    ax.text(xs[5] - 0.05, (top + bottom) / 2 + 0.05, "the model:\nfrom uns, or\npassed",
            fontsize=8, style="italic", va="center")
    _legend(ax, 0.4, 0.2)
    return fig


def network():
    """The four parts of Diff-ST and how the condition reaches the denoiser."""
    fig, ax = _canvas(13.0, 8.2)
    ax.text(0.3, 7.9, "The Diff-ST network (deep=True) and its sampler (one patch of P x P "
            "pixels, G genes)",
            fontsize=12, fontweight="bold", va="center")

    _box(ax, 1.4, 6.6, 2.4, 1.0, "H&E, tissue scale", body="3 x 4P x 4P")
    _box(ax, 1.4, 5.0, 2.4, 1.0, "H&E, cell scale", body="K sub-patches, ranked\nby image entropy")
    _box(ax, 1.4, 3.0, 2.4, 1.0, "LR expression", body="G x P x P + footprint mask")
    _box(ax, 1.4, 1.3, 2.4, 1.0, "noisy maps x_t", body="G x P x P, noise level t")

    _box(ax, 4.4, 6.6, 2.3, 0.9, "histology encoder", kind="model")
    _box(ax, 4.4, 5.0, 2.3, 1.25, "(2) cell-to-tissue\ncross-attention", kind="model")
    _box(ax, 4.4, 3.0, 2.3, 0.9, "expression encoder", kind="model")
    _arrow(ax, (2.6, 6.6), (3.25, 6.6))
    _arrow(ax, (2.6, 5.0), (3.25, 5.0), label="K' of K", offset=(0, 0.05))
    _arrow(ax, (4.4, 6.15), (4.4, 5.63))
    ax.text(4.5, 5.87, "tissue tokens", fontsize=7.5, style="italic", va="center")
    _arrow(ax, (2.6, 3.0), (3.25, 3.0))

    _box(ax, 7.75, 4.3, 2.9, 2.7, "(1) disentangling +\nadaptive modulation", kind="model",
         body="\ncommon parts c_h, c_e\n(pulled together by a loss)\n"
              "distinct parts d_h, d_e\ngated by their cross-modal\naffinity\n"
              "-> condition map + vector")
    _arrow(ax, (5.55, 5.0), (6.3, 4.7), label="f_h")
    _arrow(ax, (5.55, 3.0), (6.3, 3.7), label="f_e")

    _box(ax, 10.9, 4.7, 3.1, 1.9, "UNet denoiser", kind="model",
         body="input: [x_t, LR, mask, cond map]\nGroupNorm scale and shift\n"
              "from time + condition vector;\ncondition map at every level")
    _box(ax, 10.9, 6.75, 3.1, 1.05, "(3) gene-graph convolution", kind="model",
         body="genes mixed over the\nco-expression graph (in and out)")
    _arrow(ax, (9.2, 4.7), (9.35, 4.7))
    _arrow(ax, (10.9, 5.65), (10.9, 6.22), style="<|-|>")
    _arrow(ax, (2.6, 1.3), (10.0, 3.75), rad=0.1)

    _box(ax, 10.9, 1.6, 3.1, 1.9, "(4) few-step sampler", kind="model",
         body="DDIM, 20 respaced steps;\neach step's estimate of x0 is\n"
              "projected so that spot footprints\nmatch the measurement;\n"
              "N samples -> mean + std")
    _arrow(ax, (10.9, 3.75), (10.9, 2.55))
    ax.text(11.0, 3.15, "estimate of x0", fontsize=7.5, style="italic", va="center")
    _arrow(ax, (9.35, 1.1), (2.6, 1.0), rad=0.0, label="x_(t-1): repeat until t = 0",
           offset=(0, -0.35))

    _legend(ax, 0.4, 0.15, kinds=("array", "model"))
    return fig


def main() -> None:
    """Write both figures into ``docs/_static`` as SVG."""
    plt.rcParams["svg.hashsalt"] = "diffst_sc-docs"
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["font.family"] = "DejaVu Sans"
    STATIC.mkdir(exist_ok=True)
    for name, draw in (("diffst_data_flow", data_flow), ("diffst_network", network)):
        fig = draw()
        path = STATIC / f"{name}.svg"
        fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(fig)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
