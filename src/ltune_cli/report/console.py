"""Terminal view of a written report, rendered from report.json with rich."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from ltune_cli.report.tables import PERCENT_METRICS, fmt_value


def _main_table(t: dict):
    """A rich Table of one paper-style table; best cells bold."""
    from rich.table import Table

    mixed = len({c["metric"] for c in t["columns"]}) > 1
    scaled = any(c["metric"] in PERCENT_METRICS for c in t["columns"])
    title = t["title"] + (" (x100, mean ± std, n seeds; bold = best)" if scaled else " (mean ± std, n seeds)")
    table = Table(title=title, title_justify="left")
    table.add_column("method")
    cols = [(c["dataset"], c["model"]) for c in t["columns"]]
    for c in t["columns"]:
        head = f"{c['dataset']} / {c['model']}" + (f" ({c['metric']})" if mixed else "")
        table.add_column(escape(head), justify="right")
    cells = {(c["row"], c["dataset"], c["model"]): c for c in t["cells"]}
    for row in t["rows"]:
        out = [escape(row)]
        for d, m in cols:
            c = cells.get((row, d, m))
            if c is None:
                out.append("–")
                continue
            text = fmt_value(c["mean"], c["metric"])
            if c["std"] is not None:
                text += f" ± {fmt_value(c['std'], c['metric'])}"
            text = f"[bold]{text}[/bold]" if c["best"] else text
            out.append(f"{text} [dim]n={c['n']}[/dim]")
        table.add_row(*out)
    return table


def _diff_table(diffs: list[dict]):
    """L-Tuning minus baseline; intervals that exclude 0 in bold green."""
    from rich.table import Table

    table = Table(title="L-Tuning − baseline (paired bootstrap 95% CI)", title_justify="left")
    for name in ("comparison", "dataset", "model", "metric", "seeds", "diff", "95% CI"):
        table.add_column(name, justify="right" if name in ("seeds", "diff", "95% CI") else "left")
    for d in diffs:
        m = d["metric"]
        ci = "–" if d["lo"] is None else f"[{fmt_value(d['lo'], m, True)}, {fmt_value(d['hi'], m, True)}]"
        ci = f"[bold green]{escape(ci)}[/bold green]" if d["excludes_zero"] else escape(ci)
        table.add_row(escape(f"{d['lt']} − {d['baseline']}"), escape(d["dataset"]), escape(d["model"]), m, str(d["n"]),
                      fmt_value(d["diff"], m, True), ci)
    return table


def render_console(report_paths: dict, console) -> None:
    """Print the report's tables, differences and failed runs to a rich Console."""
    rep = json.loads(Path(report_paths["json"]).read_text(encoding="utf-8"))
    for t in rep["tables"]:
        if t["rows"]:
            console.print(_main_table(t))
        else:
            console.print(f"[yellow]{t['title']}: no completed runs[/yellow]")
    if rep["differences"]:
        console.print(_diff_table(rep["differences"]))
    for f in rep["failed"]:
        console.print(f"[red]failed[/red] {escape(f['name'])}: {escape(f['error'] or f['status'])}", highlight=False)
    for n in rep["notes"]:
        console.print(f"[yellow]note[/yellow] {escape(n)}", highlight=False)
    console.print(f"report: {escape(str(report_paths['html']))}", highlight=False)
