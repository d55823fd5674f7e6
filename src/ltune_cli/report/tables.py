"""Text views of a `Report`: Markdown (report.md), LaTeX (tables.tex) and CSV (results.csv).

Scores in [0, 1] (accuracy, MCC, macro-F1, pair accuracy) are shown x100 with two
decimals, as in the paper; losses keep four decimals. The CSV and report.json keep
the raw, unscaled values.

results.csv is one pandas frame: a `kind=run` line per run folder, then a `kind=summary`
line per table cell (row x dataset x model) whose metric columns hold the mean over seeds
and `<metric>_std` the sample std.
"""

from __future__ import annotations

from ltune_cli.report.analysis import Report, Table
from ltune_cli.report.load import row_label

PERCENT_METRICS = ("accuracy", "mcc", "macro_f1", "pair_accuracy")
CSV_KEYS = ("kind", "row", "method", "variant", "settings", "dataset", "model", "seed", "n", "status", "name", "path",
            "eval_examples", "trainable_params")
METRIC_ORDER = ("accuracy", "mcc", "macro_f1", "pair_accuracy", "val_loss")


def fmt_value(v: float | None, metric: str, signed: bool = False) -> str:
    """One number in the table's units (x100 for scores)."""
    if v is None:
        return "–"
    scaled = v * 100 if metric in PERCENT_METRICS else v
    digits = 2 if metric in PERCENT_METRICS else 4
    return f"{scaled:+.{digits}f}" if signed else f"{scaled:.{digits}f}"


def fmt_mean_std(mean: float, std: float | None, metric: str, pm: str = "±") -> str:
    """'81.20 ± 0.50', or just the mean for a single seed."""
    return fmt_value(mean, metric) if std is None else f"{fmt_value(mean, metric)} {pm} {fmt_value(std, metric)}"


def fmt_steps(step: int | None) -> str:
    return "never" if step is None else str(step)


def fmt_params(rec: dict) -> str:
    """'443,906 (1.92%)'; a range when the count differs by dataset (e.g. label count)."""
    lo, hi = rec["trainable_params_min"], rec["trainable_params_max"]
    text = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    if rec["trainable_fraction"] is not None:
        text += f" ({100 * rec['trainable_fraction']:.2f}%)"
    return text


def table_caption(t: Table) -> str:
    """What the cells mean, including which metric each dataset uses."""
    by_metric: dict[str, list[str]] = {}
    for (d, _), m in t.metric.items():
        if d not in by_metric.setdefault(m, []):
            by_metric[m].append(d)
    metrics = "; ".join(
        f"{m}{' (x100)' if m in PERCENT_METRICS else ''}: {', '.join(ds)}" for m, ds in by_metric.items()
    )
    head = "mean ± std over seeds (n = seeds); best per column in bold."
    return f"{head} {metrics}." if metrics else head


def _mixed(t: Table) -> bool:
    return len(set(t.metric.values())) > 1


def column_header(t: Table, col: tuple[str, str]) -> str:
    """'sst2 / minilm', plus the metric when the table mixes metrics (CoLA: mcc)."""
    head = f"{col[0]} / {col[1]}"
    return f"{head} ({t.metric[col]})" if _mixed(t) else head


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_escape, r)) + " |" for r in rows]
    return "\n".join(lines)


def md_cell(t: Table, row, col) -> str:
    cell = t.cells.get((row, col))
    if cell is None:
        return "–"
    text = fmt_mean_std(cell.mean, cell.std, t.metric[col])
    return (f"**{text}**" if cell.best else text) + f" (n={cell.n})"


def markdown_table(t: Table) -> str:
    if not t.rows:
        return "_no completed runs_"
    header = ["method"] + [column_header(t, c) for c in t.columns]
    body = [[row_label(r)] + [md_cell(t, r, c) for c in t.columns] for r in t.rows]
    return md_table(header, body)


def markdown_differences(diffs: list[dict]) -> str:
    if not diffs:
        return "_no L-Tuning / baseline pairs with runs in the same column_"
    header = ["L-Tuning − baseline", "dataset", "model", "metric", "seeds", "mean diff", "95% CI", "excludes 0",
              "pairing"]
    body = []
    for d in diffs:
        ci = "–" if d["lo"] is None else f"[{fmt_value(d['lo'], d['metric'], True)}, {fmt_value(d['hi'], d['metric'], True)}]"
        mark = "**yes**" if d["excludes_zero"] else "no"
        body.append([f"{d['lt']} − {d['baseline']}", d["dataset"], d["model"], d["metric"], str(d["n"]),
                     fmt_value(d["diff"], d["metric"], True), ci, mark, d["pairing"]])
    return md_table(header, body)


def markdown_steps(steps: list[dict]) -> str:
    if not steps:
        return "_no L-Tuning / baseline pairs with runs in the same column_"
    header = ["L-Tuning vs baseline", "dataset", "model", "target val_loss", "steps (baseline)", "steps (L-Tuning)",
              "target metric", "steps (baseline)", "steps (L-Tuning)"]
    body = [[f"{s['lt']} vs {s['baseline']}", s["dataset"], s["model"],
             fmt_value(s["target_val_loss"], "val_loss"), fmt_steps(s["baseline_steps_val_loss"]),
             fmt_steps(s["lt_steps_val_loss"]), f"{s['metric']} {fmt_value(s['target_metric'], s['metric'])}",
             fmt_steps(s["baseline_steps_metric"]), fmt_steps(s["lt_steps_metric"])] for s in steps]
    return md_table(header, body)


def params_grid(params: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """(row labels, models, {(label, model): text}) of the trainable-parameter table."""
    labels = list(dict.fromkeys(p["label"] for p in params))
    models = sorted({p["model"] for p in params})
    return labels, models, {(p["label"], p["model"]): fmt_params(p) for p in params}


def markdown_params(params: list[dict]) -> str:
    if not params:
        return "_no completed runs_"
    labels, models, grid = params_grid(params)
    return md_table(["method"] + models, [[lab] + [grid.get((lab, m), "–") for m in models] for lab in labels])


def markdown_failed(failed: list[dict]) -> str:
    if not failed:
        return "_none_"
    return md_table(["run", "status", "error", "folder"],
                    [[f["name"], f["status"], f["error"] or "–", f["path"]] for f in failed])


def markdown_runs(rep: Report) -> str:
    """Every completed run that fed the main table, with its value in that table's metric."""
    recs = [r for r in rep.to_json()["runs"] if r["status"] == "completed"]
    if not recs or not rep.tables:
        return "_no completed runs_"
    metric = rep.tables[0].metric
    body = []
    for r in recs:
        m = metric.get((r["dataset"], r["model"]))
        body.append([r["row"], r["dataset"], r["model"], "–" if r["seed"] is None else str(r["seed"]),
                     f"{m} {fmt_value(r.get(m), m)}" if m else "–", r["path"]])
    return md_table(["row", "dataset", "model", "seed", "score", "folder"], body)


def to_markdown(rep: Report, curves_png: str | None = "curves.png") -> str:
    """The whole report as one Markdown document (report.md)."""
    n_done = sum(r.completed for r in rep.runs)
    parts = [
        "# ltune compare",
        f"{n_done} completed run(s), {len(rep.failed)} failed; inputs: {', '.join(rep.inputs)}. Created {rep.created}.",
    ]
    for t in rep.tables:
        parts += [f"## {t.title}", table_caption(t), markdown_table(t)]
    parts += [
        "## L-Tuning minus baseline",
        f"Differences in the table's units; {rep.settings['n_boot']} bootstrap replicates, seed "
        f"{rep.settings['seed']}. Method: {rep.settings['bootstrap']}",
        markdown_differences(rep.differences),
        "## Steps to reach the baseline's final value",
        "First eval step of the seed-mean curve with val_loss <= the baseline's final val_loss, and with the "
        "metric reaching the baseline's final value; `never` if not reached.",
        markdown_steps(rep.steps_to_target),
        "## Trainable parameters",
        markdown_params(rep.params),
    ]
    if curves_png:
        parts += ["## Convergence (validation loss)",
                  "Seed-mean val_loss per eval step; baselines solid, L-Tuning dashed, one colour per model.",
                  f"![convergence curves]({curves_png})"]
    parts += ["## Runs", "One line per completed run folder (results.csv has every score of each).",
              markdown_runs(rep)]
    parts += ["## Failed runs", "Excluded from every number above.", markdown_failed(rep.failed)]
    if rep.notes:
        parts += ["## Notes"] + [f"- {_md_escape(n)}" for n in rep.notes]
    return "\n\n".join(parts) + "\n"


def run_frame(rep: Report):
    """One line per run folder (completed and failed), final scores as columns."""
    import pandas as pd

    return pd.DataFrame(rep.to_json()["runs"]).assign(kind="run")


def summary_frame(rep: Report):
    """One line per table cell: metric columns hold the seed mean, `<metric>_std` the sample std."""
    import pandas as pd

    long = pd.DataFrame(rep.summary)
    if long.empty:
        return pd.DataFrame(columns=["kind"])
    keys = ["row", "method", "variant", "settings", "dataset", "model"]
    wide = long.pivot(index=keys, columns="metric", values=["mean", "std"])
    wide.columns = [m if stat == "mean" else f"{m}_std" for stat, m in wide.columns]
    cells = long.groupby(keys, sort=False).agg(n=("n", "max"), trainable_params=("trainable_params", "first"))
    order = long[keys].drop_duplicates()  # the report's row/column order, not pandas' sort
    return order.merge(cells.join(wide).reset_index(), on=keys).assign(kind="summary")


def _metric_columns(columns) -> list[str]:
    names = sorted({c.removesuffix("_std") for c in columns if c not in CSV_KEYS},
                   key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER), m))
    return [c for m in names for c in (m, f"{m}_std") if c in columns]


def to_csv(rep: Report) -> str:
    """results.csv: the per-run lines, then the per-cell summary lines; raw unscaled values."""
    import pandas as pd

    frame = pd.concat([run_frame(rep), summary_frame(rep)], ignore_index=True)
    for col in CSV_KEYS:
        if col not in frame:
            frame[col] = None
    for col in ("seed", "n", "eval_examples", "trainable_params"):
        frame[col] = frame[col].astype("Int64")  # integers stay integers next to blanks
    return frame[list(CSV_KEYS) + _metric_columns(frame.columns)].to_csv(index=False, lineterminator="\n")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))


def latex_cell(t: Table, row, col) -> str:
    cell = t.cells.get((row, col))
    if cell is None:
        return "--"
    m = t.metric[col]
    text = fmt_value(cell.mean, m) if cell.std is None else f"{fmt_value(cell.mean, m)} $\\pm$ {fmt_value(cell.std, m)}"
    if cell.best:
        text = f"\\textbf{{{text}}}"
    return f"{text} {{\\scriptsize ({cell.n})}}"


def latex_table(t: Table) -> str:
    """booktabs tabular: datasets as spanning headers over their models, methods as rows."""
    datasets = list(dict.fromkeys(d for d, _ in t.columns))
    spans = [(d, [c for c in t.columns if c[0] == d]) for d in datasets]
    lines = [f"% {latex_escape(t.title)}: {latex_escape(table_caption(t))}",
             f"\\begin{{tabular}}{{l{'c' * len(t.columns)}}}", r"\toprule"]
    head, rules, start = [""], [], 2
    for d, cols in spans:
        label = latex_escape(d + (f" ({t.metric[cols[0]]})" if _mixed(t) else ""))
        head.append(f"\\multicolumn{{{len(cols)}}}{{c}}{{{label}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
        start += len(cols)
    lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines.append(" & ".join(["Method"] + [latex_escape(m) for _, m in t.columns]) + r" \\")
    lines.append(r"\midrule")
    for r in t.rows:
        lines.append(" & ".join([latex_escape(row_label(r))] + [latex_cell(t, r, c) for c in t.columns]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def latex_differences(diffs: list[dict]) -> str:
    """booktabs tabular of L-Tuning minus baseline with the bootstrap interval."""
    lines = ["% L-Tuning minus baseline, paired bootstrap 95% interval; bold: interval excludes 0",
             r"\begin{tabular}{lllcrc}", r"\toprule",
             r"Comparison & Dataset & Model & Seeds & $\Delta$ & 95\% CI \\", r"\midrule"]
    for d in diffs:
        m = d["metric"]
        delta = fmt_value(d["diff"], m, True)
        ci = "--" if d["lo"] is None else f"[{fmt_value(d['lo'], m, True)}, {fmt_value(d['hi'], m, True)}]"
        if d["excludes_zero"]:
            delta, ci = f"\\textbf{{{delta}}}", f"\\textbf{{{ci}}}"
        lines.append(" & ".join([latex_escape(f"{d['lt']} - {d['baseline']}"), latex_escape(d["dataset"]),
                                 latex_escape(d["model"]), str(d["n"]), delta, ci]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def to_latex(rep: Report) -> str:
    """tables.tex: every table of the report plus the differences; needs \\usepackage{booktabs}."""
    parts = ["% generated by ltune compare; requires \\usepackage{booktabs}"]
    parts += [latex_table(t) for t in rep.tables if t.rows]
    if rep.differences:
        parts.append(latex_differences(rep.differences))
    return "\n\n".join(parts) + "\n"
