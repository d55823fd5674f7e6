"""Convergence curves in the style of the paper's Fig. 2 (curves.png / curves.svg).

matplotlib is imported inside the function and drawn on an explicit Agg canvas, without
pyplot: importing the report stays cheap, no global backend is switched, and it works
headless (CI, SSH, a compute node).
"""

from __future__ import annotations

import math
from pathlib import Path

from ltune_cli.report.analysis import BASELINE_OF

MARKERS = {"prefix": "o", "lt_prefix": "o", "prompt": "s", "lt_prompt": "s"}


def line_style(method: str, variant: str) -> str:
    """Baselines solid, L-Tuning dashed (a non-default L-Tuning variant dotted), others dash-dot."""
    if method in BASELINE_OF:
        return ":" if variant else "--"
    if method in BASELINE_OF.values():
        return "-"
    return "-."


def plot_curves(curves: list[dict], png: str | Path, svg: str | Path) -> None:
    """One panel per dataset: seed-mean val_loss vs step per (method, model), one colour per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = sorted({c["dataset"] for c in curves})
    models = sorted({c["model"] for c in curves})
    ncols = max(1, min(3, len(datasets)))
    nrows = max(1, math.ceil(len(datasets) / ncols))
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    palette = _palette(len(models))
    for ax, dataset in zip(axes, datasets, strict=False):
        for c in (c for c in curves if c["dataset"] == dataset):
            n = len(c["steps"])
            ax.plot(c["steps"], c["val_loss"], linestyle=line_style(c["method"], c["variant"]),
                    color=palette[models.index(c["model"])], marker=MARKERS.get(c["method"]),
                    markersize=3, markevery=max(1, n // 8), linewidth=1.4, label=f"{c['model']} · {c['label']}")
        ax.set_title(dataset)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(datasets):]:
        ax.set_axis_off()
    if not datasets:
        axes[0].text(0.5, 0.5, "no eval records in metrics.jsonl", ha="center", va="center")
    # Two lines, so a one-panel figure (4.6 in wide) keeps the whole title.
    fig.suptitle("Validation loss, mean over seeds\nbaseline solid, L-Tuning dashed", fontsize=10)
    fig.savefig(png, dpi=130)
    fig.savefig(svg)


def _palette(n: int) -> list:
    """tab10 colours, cycling past ten models."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(max(n, 1))]
