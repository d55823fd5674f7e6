"""The report's tables as pandas frames, and their text views: Markdown (report.md), LaTeX
(tables.tex) and CSV (results.csv). report.html renders the same frames (report/html.py).

Each table is built once as a frame of display strings (`main_frame`, `differences_frame`,
`steps_frame`, `params_frame`, `runs_frame`, `failed_frame`) and rendered by pandas:
`to_markdown` (tabulate), `Styler.to_latex` and `Styler.to_html` (jinja2), `to_csv`.
Scores in [0, 1] (accuracy, MCC, macro-F1, pair accuracy) are shown x100 with two
decimals, as in the paper; losses keep four decimals. The CSV and report.json keep
the raw, unscaled values.

results.csv is one frame: a `kind=run` line per run folder (`run_frame`), then a
`kind=summary` line per table cell (row x dataset x model, `summary_frame`) whose metric
columns hold the mean over seeds and `<metric>_std` the sample std.
"""

from __future__ import annotations

import re

import pandas as pd

from ltune_cli.report.analysis import Report, Table
from ltune_cli.report.load import row_label

PERCENT_METRICS = ("accuracy", "mcc", "macro_f1", "pair_accuracy")
CSV_KEYS = ("kind", "row", "method", "variant", "settings", "dataset", "model", "seed", "n", "status", "name", "path",
            "eval_examples", "trainable_params")
METRIC_ORDER = ("accuracy", "mcc", "macro_f1", "pair_accuracy", "val_loss")
NO_PAIRS = "no L-Tuning / baseline pairs with runs in the same column"
N_SUFFIX = re.compile(r"^(.*) \(n=(\d+)\)$")  # a main-table cell: '81.20 ± 0.50 (n=3)'


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


def fmt_ci(d: dict) -> str:
    """'[+1.20, +4.80]' in the metric's units, '–' without an interval."""
    m = d["metric"]
    return "–" if d["lo"] is None else f"[{fmt_value(d['lo'], m, True)}, {fmt_value(d['hi'], m, True)}]"


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


# ----------------------------------------------------------------------------- frames


def main_frame(t: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, best) of a paper-style table: index = method rows, columns = (dataset, model).

    A cell reads '81.20 ± 0.50 (n=3)' ('–' when the row has no run there); `best` is True
    where the cell holds its column's best mean. The dataset level names the metric when
    the table mixes metrics ('cola (mcc)').
    """
    columns = pd.MultiIndex.from_tuples(
        [(d + (f" ({t.metric[(d, m)]})" if _mixed(t) else ""), m) for d, m in t.columns], names=["dataset", "model"])
    index = pd.Index([row_label(r) for r in t.rows], name="method")
    cells = [[t.cells.get((r, c)) for c in t.columns] for r in t.rows]
    text = [["–" if x is None else f"{fmt_mean_std(x.mean, x.std, t.metric[c])} (n={x.n})"
             for x, c in zip(row, t.columns)] for row in cells]
    best = [[x is not None and x.best for x in row] for row in cells]
    return pd.DataFrame(text, index, columns), pd.DataFrame(best, index, columns, dtype=bool)


def differences_frame(diffs: list[dict]) -> pd.DataFrame:
    """L-Tuning minus baseline per column; `excludes 0` stays a bool for the views to mark."""
    return pd.DataFrame(
        [{"comparison": f"{d['lt']} − {d['baseline']}", "dataset": d["dataset"], "model": d["model"],
          "metric": d["metric"], "seeds": str(d["n"]), "mean diff": fmt_value(d["diff"], d["metric"], True),
          "95% CI": fmt_ci(d), "excludes 0": bool(d["excludes_zero"]), "pairing": d["pairing"]} for d in diffs],
        columns=["comparison", "dataset", "model", "metric", "seeds", "mean diff", "95% CI", "excludes 0", "pairing"])


def steps_frame(steps: list[dict]) -> pd.DataFrame:
    """Steps each method needs to reach the baseline's final val_loss (where both train one loss; the
    columns are left out when no pair does) and metric, and the common target (the worse of the two
    final metrics)."""
    def reached(s: dict, name: str, who: str) -> str:
        return fmt_steps(s[f"{who}_steps_{name}"]) if s[f"target_{name}"] is not None else "–"

    def target(s: dict, name: str) -> str:
        if name == "val_loss":
            return fmt_value(s["target_val_loss"], "val_loss") if s["same_loss"] else "losses differ"
        value = s[f"target_{name}"]
        return "–" if value is None else f"{s['metric']} {fmt_value(value, s['metric'])}"

    names = {"val_loss": "baseline's final val_loss", "metric": "baseline's final metric", "common": "common target"}
    if not any(s["same_loss"] for s in steps):
        del names["val_loss"]
    rows = [[f"{s['lt']} vs {s['baseline']}", s["dataset"], s["model"]]
            + [cell for name in names for cell in (target(s, name), reached(s, name, "baseline"), reached(s, name, "lt"))]
            for s in steps]
    columns = pd.MultiIndex.from_tuples(
        [("", "comparison"), ("", "dataset"), ("", "model")]
        + [(group, c) for group in names.values() for c in ("target", "steps: baseline", "steps: L-Tuning")])
    return pd.DataFrame(rows, columns=columns)


def params_frame(params: list[dict]) -> pd.DataFrame:
    """Trainable parameters: one row per method row, one column per model, '–' where none ran."""
    if not params:
        return pd.DataFrame()
    long = pd.DataFrame({"method": [p["label"] for p in params], "model": [p["model"] for p in params],
                         "text": [fmt_params(p) for p in params]})
    wide = long.pivot(index="method", columns="model", values="text").fillna("–")
    wide = wide.reindex(index=list(dict.fromkeys(long["method"])), columns=sorted(set(long["model"])))
    return wide.reset_index().rename_axis(columns=None)


def runs_frame(rep: Report) -> pd.DataFrame:
    """Every completed run that fed the main table, with its value in that table's metric."""
    runs = run_frame(rep)
    if runs.empty or not rep.tables:
        return pd.DataFrame()
    runs = runs[runs["status"] == "completed"]
    metric = rep.tables[0].metric
    score = [f"{m} {fmt_value(r.get(m), m)}" if (m := metric.get((r["dataset"], r["model"]))) else "–"
             for r in runs.to_dict("records")]
    seed = ["–" if pd.isna(s) else str(int(s)) for s in runs["seed"]]
    return pd.DataFrame({"row": runs["row"], "dataset": runs["dataset"], "model": runs["model"], "seed": seed,
                         "score": score, "folder": runs["path"]})


def failed_frame(failed: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"run": f["name"], "status": f["status"], "error": f["error"] or "–", "folder": f["path"]}
                         for f in failed], columns=["run", "status", "error", "folder"])


# ----------------------------------------------------------------------------- Markdown


def _md_escape(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown(frame: pd.DataFrame, empty: str, right: tuple[str, ...] = ()) -> str:
    """A GitHub pipe table (tabulate); numbers kept exactly as formatted; `right` columns right-aligned."""
    if frame.empty:
        return f"_{empty}_"
    frame = frame.map(_md_escape).rename(columns=_md_escape)
    align = ["right" if c in right else "left" for c in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def _md_best(text: str) -> str:
    """'**81.20 ± 0.50** (n=3)'."""
    m = N_SUFFIX.match(text)
    return f"**{m[1]}** (n={m[2]})" if m else f"**{text}**"


def markdown_table(t: Table) -> str:
    if not t.rows:
        return "_no completed runs_"
    cells, best = main_frame(t)
    cells = cells.mask(best, cells.map(_md_best))
    cells.columns = [column_header(t, c) for c in t.columns]
    return markdown(cells.reset_index(), "no completed runs", right=tuple(cells.columns))


def markdown_differences(diffs: list[dict]) -> str:
    frame = differences_frame(diffs)
    frame["excludes 0"] = frame["excludes 0"].map({True: "**yes**", False: "no"})
    return markdown(frame, NO_PAIRS, right=("seeds", "mean diff", "95% CI"))


STEPS_CAPTION = (
    "First eval step of each method's seed-mean curve that reaches the target (baseline, L-Tuning); never: not "
    "within the run. Targets: the baseline's final val_loss (only where both train one loss, and shown only "
    "then: L-Tuning's binary cross-entropy over (text, label) pairs and a K-way head's cross-entropy are not on "
    "one scale), the baseline's final metric (L-Tuning must also end as high), and the common target, the worse "
    "of the two final metrics, which both reach: who gets there first, whatever level each ends at.")


def markdown_steps(steps: list[dict]) -> str:
    frame = steps_frame(steps)
    frame.columns = [f"{a}: {b.removeprefix('steps: ')}" if a else b for a, b in frame.columns]
    return markdown(frame, NO_PAIRS, right=tuple(frame.columns[3:]))


def to_markdown(rep: Report, curves: dict[str, str] | None = None) -> str:
    """The whole report as one Markdown document (report.md); `curves`: {"png"/"svg"/"pdf": file name}."""
    n_done = sum(r.completed for r in rep.runs)
    parts = [
        "# ltune compare",
        f"{n_done} completed run(s), {len(rep.failed)} failed; inputs: {', '.join(rep.inputs)}. Created {rep.created}.",
    ]
    for t in rep.tables:
        parts += [f"## {t.title}", table_caption(t), markdown_table(t)]
    params = params_frame(rep.params)
    parts += [
        "## L-Tuning minus baseline",
        f"Differences in the table's units; {rep.settings['n_boot']} bootstrap replicates, seed "
        f"{rep.settings['seed']}. Method: {rep.settings['bootstrap']}",
        markdown_differences(rep.differences),
        "## Steps to target",
        STEPS_CAPTION,
        markdown_steps(rep.steps_to_target),
        "## Trainable parameters",
        markdown(params, "no completed runs", right=tuple(params.columns[1:])),
    ]
    if curves:
        others = ", ".join(f"[{k.upper()}]({curves[k]})" for k in ("svg", "pdf") if k in curves)
        parts += ["## Convergence (validation loss and accuracy)",
                  "Seed-mean val_loss (top) and accuracy (bottom; a dataset judged by another metric, such as "
                  "CoLA's MCC, shows that one, named on its axis) per eval step; one colour per method, one line "
                  f"style per model.{f' Also as {others} (editable text).' if others else ''}",
                  f"![convergence curves]({curves['png']})"]
    parts += ["## Runs", "One line per completed run folder (results.csv has every score of each).",
              markdown(runs_frame(rep), "no completed runs", right=("seed",))]
    parts += ["## Failed runs", "Excluded from every number above.", markdown(failed_frame(rep.failed), "none")]
    if rep.notes:
        parts += ["## Notes"] + [f"- {_md_escape(n)}" for n in rep.notes]
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- CSV


def run_frame(rep: Report) -> pd.DataFrame:
    """One line per run folder (completed and failed), final scores as columns."""
    return pd.DataFrame(rep.to_json()["runs"]).assign(kind="run")


def summary_frame(rep: Report) -> pd.DataFrame:
    """One line per table cell: metric columns hold the seed mean, `<metric>_std` the sample std."""
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
    frame = pd.concat([run_frame(rep), summary_frame(rep)], ignore_index=True)
    for col in CSV_KEYS:
        if col not in frame:
            frame[col] = None
    for col in ("seed", "n", "eval_examples", "trainable_params"):
        frame[col] = frame[col].astype("Int64")  # integers stay integers next to blanks
    return frame[list(CSV_KEYS) + _metric_columns(frame.columns)].to_csv(index=False, lineterminator="\n")


# ----------------------------------------------------------------------------- LaTeX


def _latex_text(s: str) -> str:
    """After pandas' LaTeX escaping: math and dashes that pdflatex reads without extra packages."""
    s = N_SUFFIX.sub(r"\1 {\\scriptsize (\2)}", s)
    return s.replace("±", r"$\pm$").replace("−", "-").replace("–", "--")


def _latex(styler, column_format: str) -> str:
    """booktabs tabular of a Styler; cells, index and headers escaped for LaTeX."""
    styler = styler.format(escape="latex", formatter=_latex_text)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(column_format=column_format, hrules=True, multicol_align="c")


def latex_table(t: Table) -> str:
    """Datasets as spanning headers over their models, methods as rows; the best cells bold."""
    cells, best = main_frame(t)
    styler = cells.style.apply(lambda _: best.replace({True: "textbf:--rwrap;", False: ""}), axis=None)
    body = _latex(styler.hide(axis="index", names=True), "l" + "c" * len(t.columns))
    return f"% {_latex_text(t.title)}: {_latex_text(table_caption(t))}\n{body}".rstrip()


def latex_differences(diffs: list[dict]) -> str:
    """L-Tuning minus baseline with the bootstrap interval; bold where the interval excludes 0."""
    frame = differences_frame(diffs)
    bold = frame["excludes 0"]
    frame = frame[["comparison", "dataset", "model", "seeds", "mean diff", "95% CI"]].rename(
        columns={"mean diff": "diff", "95% CI": "95% CI"})
    marks = pd.DataFrame("", index=frame.index, columns=frame.columns)
    marks.loc[bold, ["diff", "95% CI"]] = "textbf:--rwrap;"
    styler = frame.style.apply(lambda _: marks, axis=None).hide(axis="index")
    head = "% L-Tuning minus baseline, paired bootstrap 95% interval; bold: interval excludes 0\n"
    return (head + _latex(styler, "lllrrc")).rstrip()


def to_latex(rep: Report) -> str:
    """tables.tex: every table of the report plus the differences; needs \\usepackage{booktabs}."""
    parts = ["% generated by ltune compare; requires \\usepackage{booktabs}"]
    parts += [latex_table(t) for t in rep.tables if t.rows]
    if rep.differences:
        parts.append(latex_differences(rep.differences))
    return "\n\n".join(parts) + "\n"
