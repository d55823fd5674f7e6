"""report.html: one self-contained page (inline CSS, curves PNG as base64), readable offline."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from ltune_cli.report.analysis import Report, Table
from ltune_cli.report.load import row_label
from ltune_cli.report.tables import (
    column_header,
    fmt_mean_std,
    fmt_steps,
    fmt_value,
    params_grid,
    table_caption,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:80rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .7rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #444}
.best{font-weight:700}.sig{font-weight:700;color:#0a6}.n{color:#888;font-size:.8em}
.caption{color:#555;font-size:.9em}img{max-width:100%}code{background:#f4f4f4;padding:0 .2em}
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table from already-escaped cell markup."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(t: Table, row, col) -> str:
    cell = t.cells.get((row, col))
    if cell is None:
        return "–"
    text = escape(fmt_mean_std(cell.mean, cell.std, t.metric[col]))
    cls = ' class="best"' if cell.best else ""
    return f'<span{cls}>{text}</span> <span class="n">n={cell.n}</span>'


def html_main_table(t: Table) -> str:
    if not t.rows:
        return "<p><em>no completed runs</em></p>"
    header = ["method"] + [escape(column_header(t, c)) for c in t.columns]
    rows = [[escape(row_label(r))] + [_cell(t, r, c) for c in t.columns] for r in t.rows]
    return f'<p class="caption">{escape(table_caption(t))}</p>' + _table(header, rows)


def html_differences(diffs: list[dict]) -> str:
    if not diffs:
        return "<p><em>no L-Tuning / baseline pairs with runs in the same column</em></p>"
    rows = []
    for d in diffs:
        m = d["metric"]
        ci = "–" if d["lo"] is None else f"[{fmt_value(d['lo'], m, True)}, {fmt_value(d['hi'], m, True)}]"
        ci = f'<span class="sig">{escape(ci)}</span>' if d["excludes_zero"] else escape(ci)
        rows.append([escape(f"{d['lt']} − {d['baseline']}"), escape(d["dataset"]), escape(d["model"]), escape(m),
                     str(d["n"]), escape(fmt_value(d["diff"], m, True)), ci,
                     "yes" if d["excludes_zero"] else "no", escape(d["pairing"])])
    return _table(["comparison", "dataset", "model", "metric", "seeds", "mean diff", "95% CI", "excludes 0",
                   "pairing"], rows)


def html_steps(steps: list[dict]) -> str:
    if not steps:
        return "<p><em>no L-Tuning / baseline pairs with runs in the same column</em></p>"
    rows = [[escape(f"{s['lt']} vs {s['baseline']}"), escape(s["dataset"]), escape(s["model"]),
             fmt_value(s["target_val_loss"], "val_loss"), fmt_steps(s["baseline_steps_val_loss"]),
             fmt_steps(s["lt_steps_val_loss"]), escape(f"{s['metric']} {fmt_value(s['target_metric'], s['metric'])}"),
             fmt_steps(s["baseline_steps_metric"]), fmt_steps(s["lt_steps_metric"])] for s in steps]
    return _table(["comparison", "dataset", "model", "target val_loss", "steps (baseline)", "steps (L-Tuning)",
                   "target metric", "steps (baseline)", "steps (L-Tuning)"], rows)


def html_params(params: list[dict]) -> str:
    if not params:
        return "<p><em>no completed runs</em></p>"
    labels, models, grid = params_grid(params)
    return _table(["method"] + [escape(m) for m in models],
                  [[escape(lab)] + [escape(grid.get((lab, m), "–")) for m in models] for lab in labels])


def html_failed(failed: list[dict]) -> str:
    if not failed:
        return "<p><em>none</em></p>"
    return _table(["run", "status", "error", "folder"],
                  [[escape(f["name"]), escape(f["status"]), escape(f["error"] or "–"), f"<code>{escape(f['path'])}</code>"]
                   for f in failed])


def to_html(rep: Report, png: str | Path | None) -> str:
    """The full report page; the PNG is embedded so the file can be mailed or archived alone."""
    n_done = sum(r.completed for r in rep.runs)
    parts = [f"<h1>ltune compare</h1><p>{n_done} completed run(s), {len(rep.failed)} failed; "
             f"inputs: {escape(', '.join(rep.inputs))}. Created {escape(rep.created)}.</p>"]
    for t in rep.tables:
        parts.append(f"<h2>{escape(t.title)}</h2>" + html_main_table(t))
    parts.append("<h2>L-Tuning minus baseline</h2>"
                 f'<p class="caption">{rep.settings["n_boot"]} replicates, seed {rep.settings["seed"]}. '
                 f'{escape(rep.settings["bootstrap"])} Green: the 95% interval excludes 0.</p>'
                 + html_differences(rep.differences))
    parts.append("<h2>Steps to reach the baseline's final value</h2>" + html_steps(rep.steps_to_target))
    parts.append("<h2>Trainable parameters</h2>" + html_params(rep.params))
    if png is not None and Path(png).is_file():
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        parts.append("<h2>Convergence (validation loss)</h2>"
                     f'<img alt="validation loss vs step" src="data:image/png;base64,{data}">')
    parts.append("<h2>Failed runs</h2><p class=\"caption\">Excluded from every number above.</p>"
                 + html_failed(rep.failed))
    if rep.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in rep.notes) + "</ul>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ltune compare</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
