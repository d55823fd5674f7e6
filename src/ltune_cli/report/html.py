"""report.html: one self-contained page (inline CSS, curves PNG as base64), readable offline.

The tables are report/tables.py's frames rendered by pandas' `Styler.to_html`: cells escaped,
CSS classes for the best cell (`best`) and for intervals that exclude 0 (`sig`).
"""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

import pandas as pd

from ltune_cli.report.analysis import Report, Table
from ltune_cli.report.tables import (
    N_SUFFIX,
    NO_PAIRS,
    STEPS_CAPTION,
    differences_frame,
    failed_frame,
    main_frame,
    params_frame,
    steps_frame,
    table_caption,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:80rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .7rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #444}thead th[colspan]{text-align:center;border-bottom:1px solid #999}
.best{font-weight:700}.sig{font-weight:700;color:#0a6}.n{color:#888;font-size:.8em;font-weight:400}
.caption{color:#555;font-size:.9em}img{max-width:100%}code{background:#f4f4f4;padding:0 .2em}
"""


def _html(frame: pd.DataFrame, uid: str, classes: pd.DataFrame | None = None, formatter=None,
          index: bool = False) -> str:
    """One table through pandas' Styler: escaped cells, optional per-cell CSS classes."""
    styler = frame.style.set_uuid(uid)
    if not index:
        styler = styler.hide(axis="index")
    if classes is not None:
        styler = styler.set_td_classes(classes)
    styler = styler.format(escape="html", formatter=formatter).format_index(escape="html", axis=1)
    html = styler.format_index(escape="html", axis=0).to_html(cell_ids=False)
    return re.sub(r"<style type=\"text/css\">\s*</style>\s*", "", html)  # classes only, no inline styles


def _n_small(text: str) -> str:
    """'81.20 ± 0.50 <span class="n">n=3</span>'. The text arrives escaped as markupsafe's Markup, whose
    own methods would escape the span again: work on a plain str."""
    return N_SUFFIX.sub(r'\1 <span class="n">n=\2</span>', str(text))


def html_main_table(t: Table, uid: str) -> str:
    if not t.rows:
        return "<p><em>no completed runs</em></p>"
    cells, best = main_frame(t)
    table = _html(cells.rename_axis(index=None), uid, best.replace({True: "best", False: ""}), _n_small, index=True)
    return f'<p class="caption">{escape(table_caption(t))}</p>' + table


def html_differences(diffs: list[dict]) -> str:
    if not diffs:
        return f"<p><em>{NO_PAIRS}</em></p>"
    frame = differences_frame(diffs)
    classes = pd.DataFrame("", index=frame.index, columns=frame.columns)
    classes.loc[frame["excludes 0"], "95% CI"] = "sig"
    frame["excludes 0"] = frame["excludes 0"].map({True: "yes", False: "no"})
    return _html(frame, "differences", classes)


def html_frame(frame: pd.DataFrame, uid: str, empty: str) -> str:
    return f"<p><em>{escape(empty)}</em></p>" if frame.empty else _html(frame, uid)


def to_html(rep: Report, curves: dict[str, Path] | None = None) -> str:
    """The full report page; the PNG is embedded so the file can be mailed or archived alone, the SVG
    and PDF linked by file name (they sit next to report.html). `curves`: {"png"/"svg"/"pdf": path}."""
    n_done = sum(r.completed for r in rep.runs)
    parts = [f"<h1>ltune compare</h1><p>{n_done} completed run(s), {len(rep.failed)} failed; "
             f"inputs: {escape(', '.join(rep.inputs))}. Created {escape(rep.created)}.</p>"]
    for i, t in enumerate(rep.tables):
        parts.append(f"<h2>{escape(t.title)}</h2>" + html_main_table(t, f"main{i}"))
    parts.append("<h2>L-Tuning minus baseline</h2>"
                 f'<p class="caption">{rep.settings["n_boot"]} replicates, seed {rep.settings["seed"]}. '
                 f'{escape(rep.settings["bootstrap"])} Green: the 95% interval excludes 0.</p>'
                 + html_differences(rep.differences))
    parts.append(f'<h2>Steps to target</h2><p class="caption">{escape(STEPS_CAPTION)}</p>'
                 + html_frame(steps_frame(rep.steps_to_target), "steps", NO_PAIRS))
    parts.append("<h2>Trainable parameters</h2>" + html_frame(params_frame(rep.params), "params", "no completed runs"))
    png = (curves or {}).get("png")
    if png is not None and Path(png).is_file():
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        links = [f'<a href="{escape(Path(p).name)}">{k.upper()}</a>' for k in ("svg", "pdf")
                 if (p := curves.get(k)) is not None and Path(p).is_file()]
        parts.append("<h2>Convergence (validation loss and accuracy)</h2>"
                     '<p class="caption">Seed-mean validation loss (top) and accuracy (bottom; a dataset judged by '
                     "another metric, such as CoLA's MCC, shows that one, named on its axis) per eval step; one "
                     "colour per method, one line style per model."
                     + (f" Also as {' and '.join(links)} (editable text)." if links else "") + "</p>"
                     f'<img alt="validation loss and accuracy vs step" src="data:image/png;base64,{data}">')
    parts.append("<h2>Failed runs</h2><p class=\"caption\">Excluded from every number above.</p>"
                 + html_frame(failed_frame(rep.failed), "failed", "none"))
    if rep.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in rep.notes) + "</ul>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ltune compare</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
