"""Convergence curves in the style of the paper's Fig. 2: curves.png, curves.svg and curves.pdf.

Each dataset gets two panels, validation loss above accuracy, against the training step; each
method row (`prefix`, `lt_prefix (paper)`, ...) has its own colour, each model its own line style
and marker, and one legend per encoding sits beside the panels. The SVG keeps its text as text
(`svg.fonttype: none`) and the PDF embeds TrueType fonts (`pdf.fonttype: 42`), so labels stay
editable in Inkscape or Illustrator.

matplotlib is imported inside the function and drawn on an explicit Agg canvas, without
pyplot: importing the report stays cheap, no global backend is switched, and it works
headless (CI, SSH, a compute node).
"""

from __future__ import annotations

import math
from pathlib import Path

# (report key of the steps, of the values, axis label) per panel, top to bottom.
PANELS = (("steps", "val_loss", "validation loss"), ("accuracy_steps", "accuracy", "accuracy"))
METRIC_NAMES = {"mcc": "MCC", "macro_f1": "macro F1"}  # how a metric other than accuracy is named
MODEL_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"))
EDITABLE_TEXT = {"svg.fonttype": "none", "pdf.fonttype": 42}


def plot_curves(curves: list[dict], png: str | Path, svg: str | Path, pdf: str | Path | None = None,
                order: list[str] = ()):
    """Write the figure; returns it (its axes: two per dataset, loss then accuracy). Datasets in
    `order` come first, in that order (a study's tables), the rest by name."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rank = {d: i for i, d in enumerate(order)}
    datasets = sorted({c["dataset"] for c in curves}, key=lambda d: (rank.get(d, len(rank)), d)) or [""]
    labels = list(dict.fromkeys(c["label"] for c in curves))  # the report's row order
    models = list(dict.fromkeys(c["model"] for c in curves))
    colour = dict(zip(labels, _palette(len(labels))))
    style = {m: MODEL_STYLES[i % len(MODEL_STYLES)] for i, m in enumerate(models)}
    ncols = min(3, len(datasets))
    blocks = math.ceil(len(datasets) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 2.2, 5.4 * blocks), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(2 * blocks, ncols, squeeze=False)
    others = {}  # dataset -> the lower panel's metric where it is not accuracy
    for i, dataset in enumerate(datasets):
        pair = [grid[2 * (i // ncols) + p][i % ncols] for p in range(2)]
        # One step axis per dataset, shared by its two panels only: datasets run different budgets,
        # and each accuracy panel carries its own step labels.
        pair[1].sharex(pair[0])
        pair[0].tick_params(labelbottom=False)
        mine = [c for c in curves if c["dataset"] == dataset]
        score = next((c["score_key"] for c in mine if c.get("score_key")), None)  # not accuracy: CoLA's MCC
        panels = PANELS
        if score:
            others[dataset] = METRIC_NAMES.get(score, score)
            panels = (PANELS[0], ("score_steps", "score", others[dataset]))
        for ax, (step_key, key, name) in zip(pair, panels):
            for c in (c for c in mine if c.get(key)):
                line, marker = style[c["model"]]
                ax.plot(c[step_key], c[key], color=colour[c["label"]], linestyle=line, marker=marker,
                        markersize=3.5, markevery=max(1, len(c[key]) // 8), linewidth=1.6)
            ax.set_ylabel(name)
            shown = score if key == "score" else key  # the metric's own key, not the record's field
            ax.set_label(f"{dataset}:{shown}")  # an Artist label, not drawn: says which panel this is
            ax.grid(alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, f"no {shown} in metrics.jsonl", ha="center", va="center", transform=ax.transAxes)
        pair[0].set_title(dataset or "no eval records")
        pair[1].set_xlabel("step")
    for j in range(len(datasets), blocks * ncols):  # empty slots of the last row of panels
        for p in range(2):
            grid[2 * (j // ncols) + p][j % ncols].set_axis_off()
    handles = [Line2D([], [], color=colour[lab], linewidth=2.5, label=lab) for lab in labels]
    if len(models) > 1:  # a header entry, then one grey line per model in its style
        handles += [Line2D([], [], linestyle="none", label=" "), Line2D([], [], linestyle="none", label="model")]
        handles += [Line2D([], [], color="0.3", linestyle=style[m][0], marker=style[m][1], label=m) for m in models]
    fig.legend(handles=handles, title="method", loc="outside right upper", fontsize=9, title_fontsize=9,
               frameon=False, handlelength=2.6)
    notes = ([models[0]] if len(models) == 1 else []) + [f"{d}: {name}" for d, name in others.items()]
    one = f" ({'; '.join(notes)})" if notes else ""
    # One column of panels is narrower than the title: two lines, clear of the legend beside them.
    fig.suptitle(f"Validation loss and accuracy{one},{' ' if ncols > 1 else chr(10)}mean over seeds", fontsize=11)
    # No creation dates and a fixed SVG id salt: the same curves give the same bytes (figures in git).
    with matplotlib.rc_context({**EDITABLE_TEXT, "svg.hashsalt": "ltune"}):
        fig.savefig(png, dpi=130)
        fig.savefig(svg, metadata={"Date": None})
        if pdf is not None:
            fig.savefig(pdf, metadata={"CreationDate": None})
    return fig


def _palette(n: int) -> list:
    """tab10 colours (tab20 past ten method rows)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]
