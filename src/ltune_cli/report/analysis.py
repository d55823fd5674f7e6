"""Turn validated runs into the report's numbers (plain data, no formatting).

The result is one `Report` whose `to_json()` is report.json; the Markdown, LaTeX, CSV,
HTML and console views all render from it, so every view shows the same numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ltune_cli.errors import LtuneError, suggest
from ltune_cli.report.load import Run, row_label
from ltune_cli.report.stats import (
    PREDICTION_METRICS,
    cell_rng,
    excludes_zero,
    first_step_reaching,
    higher_is_better,
    mean_curve,
    paired_bootstrap,
    seed_bootstrap,
    summarize,
)

REPORT_SCHEMA = "ltune.compare/1"
METHOD_ORDER = ("prefix", "prompt", "lt_prefix", "lt_prompt")
BASELINE_OF = {"lt_prefix": "prefix", "lt_prompt": "prompt"}
BOOTSTRAP_DOC = (
    "paired bootstrap, crossed over seeds and examples: runs are matched by seed; each of n_boot "
    "replicates resamples the eval examples once (shared by all seeds and both methods) and the "
    "matched seeds with replacement, and takes the mean over drawn seeds of metric(L-Tuning) - "
    "metric(baseline) on the resampled examples; 95% interval = 2.5/97.5 percentiles. Metrics not "
    "recomputable from predictions.json (or runs without it) resample seeds only."
)

Row = tuple[str, str, tuple]  # (method, variant, settings: ((key, value), ...))
Col = tuple[str, str]  # (dataset, model)


@dataclass
class Cell:
    """mean ± std over n seeds of one metric; best marks the column's best mean."""

    mean: float
    std: float | None
    n: int
    seeds: list
    best: bool = False


@dataclass
class Table:
    """A paper-style table: rows = methods, columns = dataset x model, one metric per column."""

    title: str
    rows: list[Row]
    columns: list[Col]
    metric: dict[Col, str]
    cells: dict[tuple[Row, Col], Cell]

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "rows": [row_label(r) for r in self.rows],
            "columns": [{"dataset": d, "model": m, "metric": self.metric[(d, m)]} for d, m in self.columns],
            "cells": [
                {"row": row_label(r), "method": r[0], "variant": r[1], "settings": settings_text(r[2]),
                 "dataset": c[0], "model": c[1],
                 "metric": self.metric[c], "mean": _num(cell.mean), "std": cell.std, "n": cell.n,
                 "seeds": cell.seeds, "best": cell.best}
                for (r, c), cell in self.cells.items()
            ],
        }


@dataclass
class Report:
    """Everything compare found, in the order the views present it."""

    inputs: list[str]
    settings: dict
    runs: list[Run]
    tables: list[Table]
    summary: list[dict]  # long format: one record per (row, dataset, model, metric)
    differences: list[dict]
    steps_to_target: list[dict]
    params: list[dict]
    curves: list[dict]
    failed: list[dict]
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> dict:
        return {
            "schema": REPORT_SCHEMA,
            "created": self.created,
            "inputs": self.inputs,
            "settings": self.settings,
            "runs": run_records(self.runs),
            "tables": [t.to_dict() for t in self.tables],
            "summary": self.summary,
            "differences": self.differences,
            "steps_to_target": self.steps_to_target,
            "params": self.params,
            "curves": self.curves,
            "failed": self.failed,
            "notes": self.notes,
        }


def settings_text(settings: tuple) -> str:
    """'train.lr=0.1; train.max_steps=50' ('' for a row without settings)."""
    return "; ".join(f"{k}={v}" for k, v in settings)


def run_records(runs: list[Run]) -> list[dict]:
    """One record per run folder (completed and failed): what fed each table row, with its final scores."""
    out = []
    for r in runs:
        rec = {"row": row_label(r.row), "method": r.method, "variant": r.variant, "settings": settings_text(r.settings),
               "dataset": r.dataset, "model": r.model, "seed": r.seed, "status": r.status, "name": r.name,
               "path": str(r.path), "eval_examples": r.eval_examples, "trainable_params": r.trainable_params}
        for k, v in (r.final or {}).items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                rec[k] = _num(float(v))
        out.append(rec)
    return out


def _num(x: float | None) -> float | None:
    """NaN is not JSON: empty cells become null."""
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def order_rows(rows: set[Row]) -> list[Row]:
    """Paper order (prefix, prompt, lt_prefix, lt_prompt, then others A-Z); default variant first."""
    def key(r: Row):
        rank = METHOD_ORDER.index(r[0]) if r[0] in METHOD_ORDER else len(METHOD_ORDER)
        return (rank, r[0], r[1] != "", r[1], r[2])
    return sorted(rows, key=key)


def order_columns(runs: list[Run]) -> list[Col]:
    """Datasets A-Z; within one, models from smallest to largest (as the paper lists them)."""
    size: dict[str, list[int]] = {}
    for r in runs:
        if r.total_params:
            size.setdefault(r.model, []).append(int(r.total_params))
    def model_key(m: str):
        return (float(np.median(size[m])) if m in size else float("inf"), m)
    cols = {(r.dataset, r.model) for r in runs}
    return sorted(cols, key=lambda c: (c[0], model_key(c[1])))


def group_runs(runs: list[Run]) -> dict[tuple[Row, Col], list[Run]]:
    """Completed runs per table cell."""
    groups: dict[tuple[Row, Col], list[Run]] = {}
    for r in runs:
        if r.completed:
            groups.setdefault((r.row, (r.dataset, r.model)), []).append(r)
    return groups


def primary_metrics(runs: list[Run], override: str | None) -> dict[str, str]:
    """The metric each dataset is judged by: --metric, else the runs' primary_metric (majority)."""
    per: dict[str, Counter] = {}
    for r in runs:
        if r.completed:
            per.setdefault(r.dataset, Counter())[r.primary_metric] += 1
    return {d: override or c.most_common(1)[0][0] for d, c in per.items()}


def available_metrics(runs: list[Run]) -> set[str]:
    """Numeric keys of the completed runs' final metrics."""
    names = set()
    for r in runs:
        for k, v in (r.final or {}).items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                names.add(k)
    return names


def check_metric(metric: str | None, runs: list[Run]) -> None:
    """An unknown --metric fails with the nearest valid name instead of an empty table."""
    if metric is None:
        return
    names = available_metrics(runs)
    if names and metric not in names:
        raise LtuneError(f"compare: no run reports metric {metric!r}.{suggest(metric, names)}")


def build_table(title: str, groups: dict, rows: list[Row], columns: list[Col], metric: dict[Col, str]) -> Table:
    """Fill mean/std/n per cell and mark each column's best mean (ties all marked)."""
    cells: dict[tuple[Row, Col], Cell] = {}
    for row in rows:
        for col in columns:
            runs = groups.get((row, col), [])
            vals = [r.final.get(metric[col]) for r in runs]
            mean, std, n = summarize(vals)
            if n:
                seeds = [r.seed for r, v in zip(runs, vals, strict=True) if v is not None]
                cells[(row, col)] = Cell(mean, std, n, seeds)
    for col in columns:
        in_col = [c for (_, cc), c in cells.items() if cc == col]
        if not in_col:
            continue
        pick = max if higher_is_better(metric[col]) else min
        best = pick(c.mean for c in in_col)
        for c in in_col:
            c.best = math.isclose(c.mean, best, rel_tol=1e-9, abs_tol=1e-12)  # float noise still ties
    return Table(title, rows, columns, metric, cells)


def summary_records(groups: dict, rows: list[Row], columns: list[Col]) -> list[dict]:
    """Long format of every final metric per cell: what results.csv holds."""
    out = []
    for row in rows:
        for col in columns:
            runs = groups.get((row, col), [])
            if not runs:
                continue
            names = sorted(available_metrics(runs))
            tp = [int(r.trainable_params) for r in runs if r.trainable_params is not None]
            for name in names:
                mean, std, n = summarize([r.final.get(name) for r in runs])
                out.append({
                    "row": row_label(row), "method": row[0], "variant": row[1], "settings": settings_text(row[2]),
                    "dataset": col[0], "model": col[1], "metric": name,
                    "mean": _num(mean), "std": std, "n": n,
                    "trainable_params": int(np.median(tp)) if tp else None,
                })
    return out


def lt_pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(L-Tuning row, baseline row) for every L-Tuning row and each default-variant baseline row whose
    settings agree with it on the keys both carry ('lt_prefix (train.lr=0.1)' pairs with
    'prefix (train.lr=0.1)', or with plain 'prefix' when the baseline ran one config only)."""
    def agree(a: Row, b: Row) -> bool:
        da, db = dict(a[2]), dict(b[2])
        return all(da[k] == db[k] for k in da.keys() & db.keys())

    return [(r, b) for r in rows if r[0] in BASELINE_OF
            for b in rows if b[0] == BASELINE_OF[r[0]] and b[1] == "" and agree(r, b)]


def difference(lt: list[Run], base: list[Run], metric: str, n_boot: int, seed: int, key: str) -> dict:
    """L-Tuning minus baseline for one cell, paired by seed, with a bootstrap 95% interval."""
    by_seed_lt = {r.seed: r for r in lt if r.final.get(metric) is not None}
    by_seed_base = {r.seed: r for r in base if r.final.get(metric) is not None}
    seeds = sorted(set(by_seed_lt) & set(by_seed_base), key=lambda s: (s is None, s))
    rec: dict[str, Any] = {
        "metric": metric, "higher_is_better": higher_is_better(metric), "seeds": seeds, "n": len(seeds),
        "unpaired_seeds": sorted((set(by_seed_lt) ^ set(by_seed_base)) - {None}),
        "diff": None, "lo": None, "hi": None, "excludes_zero": False, "better": None, "pairing": "none",
    }
    if not seeds:
        return rec
    pairs = [(by_seed_base[s], by_seed_lt[s]) for s in seeds]
    rng = cell_rng(seed, key)
    if metric in PREDICTION_METRICS and all(b.predictions and t.predictions for b, t in pairs):
        diff, lo, hi = paired_bootstrap(
            pairs[0][0].predictions["gold"], [b.predictions["pred"] for b, _ in pairs],
            [t.predictions["pred"] for _, t in pairs], metric, rng, n_boot=n_boot,
        )
        diff = float(np.mean([t.final[metric] - b.final[metric] for b, t in pairs]))
        rec["pairing"] = "seeds x examples" if len(seeds) > 1 else "examples"
    else:
        diff, lo, hi = seed_bootstrap([t.final[metric] - b.final[metric] for b, t in pairs], rng, n_boot=n_boot)
        rec["pairing"] = "seeds" if lo is not None else "none"
    rec.update(diff=diff, lo=lo, hi=hi, excludes_zero=excludes_zero(lo, hi))
    rec["better"] = None if diff == 0 else (diff > 0) == rec["higher_is_better"]
    return rec


def differences(groups, pairs, columns, metric: dict[Col, str], n_boot: int, seed: int) -> list[dict]:
    """One difference record per (L-Tuning row, baseline row, column) where both have runs."""
    out = []
    for lt_row, base_row in pairs:
        for col in columns:
            lt, base = groups.get((lt_row, col)), groups.get((base_row, col))
            if not lt or not base:
                continue
            key = f"{row_label(lt_row)}|{row_label(base_row)}|{col[0]}|{col[1]}|{metric[col]}"
            rec = difference(lt, base, metric[col], n_boot, seed, key)
            out.append({"lt": row_label(lt_row), "baseline": row_label(base_row),
                        "dataset": col[0], "model": col[1], **rec})
    return out


def _curve(runs: list[Run], key: str) -> list[tuple[int, float]]:
    """Seed-mean curve of `key`, every point on one set of texts (Run.curve)."""
    return mean_curve([r.curve() for r in runs], key)


def loss_kind(run: Run) -> str:
    """What a run's val_loss measures: binary cross-entropy over (text, label) pairs (L-Tuning, and a
    baseline with method.pair_framing) or cross-entropy over a K-way head: not on one scale."""
    pairs = run.method in BASELINE_OF or str(run.config.get("method.pair_framing", False)).lower() == "true"
    return "pair BCE" if pairs else "K-way CE"


#: A seed-mean curve's last point is the final mean itself, summed in another order: a rounding ulp
#: must not hide that a method reaches its own (or an equal) final value.
_ULP = 1e-12


def steps_to_target(groups, pairs, columns, metric: dict[Col, str]) -> list[dict]:
    """First eval step of each method's seed-mean curve that reaches a target (None: never within
    the budget), every point and target on the texts its curve scores (Run.curve):

    - `val_loss`: the baseline's final val_loss (reach: <=), only where both train the same loss
      (`same_loss`; else None: a pair BCE against a K-way cross-entropy compares two scales);
    - `metric`: the baseline's final primary metric (L-Tuning must also end as high);
    - `common`: the worse of the two methods' final metric, which both reach by their last step: who
      gets there first, whatever level each ends at (the paper's faster convergence).
    """
    out = []
    for lt_row, base_row in pairs:
        for col in columns:
            runs = {"lt": groups.get((lt_row, col)), "baseline": groups.get((base_row, col))}
            if not all(runs.values()):
                continue
            m = metric[col]
            same = loss_kind(runs["lt"][0]) == loss_kind(runs["baseline"][0])
            rec: dict[str, Any] = {"lt": row_label(lt_row), "baseline": row_label(base_row),
                                   "dataset": col[0], "model": col[1], "metric": m, "same_loss": same}
            curves = {who: {key: _curve(rs, key) for key in ("val_loss", m)} for who, rs in runs.items()}
            higher = higher_is_better(m)
            for name, key, up in (("val_loss", "val_loss", False), ("metric", m, higher)):
                target, _, n = summarize([r.curve_final(key) for r in runs["baseline"]])
                target = target if n and (same or key != "val_loss") else None
                rec[f"target_{name}"] = target
                for who in runs:
                    rec[f"{who}_steps_{name}"] = None if target is None else first_step_reaching(
                        curves[who][key], target - _ULP if up else target + _ULP, up)
            ends = [c[m][-1][1] for c in curves.values() if c[m]]
            common = (min(ends) if higher else max(ends)) if len(ends) == 2 else None
            rec["target_common"] = common
            for who in runs:
                rec[f"{who}_steps_common"] = None if common is None else first_step_reaching(
                    curves[who][m], common - _ULP if higher else common + _ULP, higher)
            out.append(rec)
    return out


def params_records(runs: list[Run], rows: list[Row]) -> list[dict]:
    """Trainable parameters per (method row, model), with the share of the full model."""
    acc: dict[tuple[Row, str], dict[str, list[int]]] = {}
    for r in runs:
        if r.completed and r.trainable_params is not None:
            d = acc.setdefault((r.row, r.model), {"tp": [], "total": []})
            d["tp"].append(int(r.trainable_params))
            if r.total_params:
                d["total"].append(int(r.total_params))
    out = []
    for row in rows:
        for (rr, model), d in sorted(acc.items(), key=lambda kv: kv[0][1]):
            if rr != row:
                continue
            total = int(np.median(d["total"])) if d["total"] else None
            out.append({
                "method": row[0], "variant": row[1], "settings": settings_text(row[2]), "label": row_label(row),
                "model": model,
                "trainable_params_min": min(d["tp"]), "trainable_params_max": max(d["tp"]),
                "total_params": total,
                "trainable_fraction": (float(np.median(d["tp"])) / total) if total else None,
            })
    return out


CURVE_KEYS = ("val_loss", "accuracy")  # the two panels of the convergence figure


def curve_records(groups, rows: list[Row], columns: list[Col], scores: dict[str, str] | None = None) -> list[dict]:
    """Seed-mean validation-loss and accuracy curves per (method row, dataset, model), for Fig. 2
    and report.json: `steps`/`val_loss` and `accuracy_steps`/`accuracy` (a run may log one without
    the other at a step). scores: dataset -> the metric the figure's lower panel shows there where
    it is not accuracy (CoLA's MCC) and the runs log it, as `score_key` and `score_steps`/`score`."""
    out = []
    for row in rows:
        for col in columns:
            runs = groups.get((row, col))
            if not runs:
                continue
            loss, acc = (_curve(runs, key) for key in CURVE_KEYS)
            if loss or acc:
                out.append({"label": row_label(row), "method": row[0], "variant": row[1],
                            "settings": settings_text(row[2]), "dataset": col[0],
                            "model": col[1], "n": len(runs), "steps": [s for s, _ in loss],
                            "val_loss": [v for _, v in loss], "accuracy_steps": [s for s, _ in acc],
                            "accuracy": [v for _, v in acc]})
                if (key := (scores or {}).get(col[0], "accuracy")) != "accuracy" and (score := _curve(runs, key)):
                    out[-1] |= {"score_key": key, "score_steps": [s for s, _ in score], "score": [v for _, v in score]}
    return out


def failed_records(runs: list[Run]) -> list[dict]:
    """Runs that did not complete: named with their error, kept out of every number."""
    return [
        {"name": r.name, "path": str(r.path), "method": r.method, "variant": r.variant, "model": r.model,
         "dataset": r.dataset, "seed": r.seed, "status": r.status,
         "error": (str(r.error).strip().splitlines() or [""])[0] if r.error else ""}
        for r in runs if not r.completed
    ]


def analyse(runs: list[Run], inputs: list[str], *, metric: str | None, n_boot: int, seed: int,
            notes: list[str] | None = None) -> Report:
    """All of the report's numbers from validated runs."""
    if n_boot < 1:
        raise LtuneError(f"compare: n_boot must be >= 1, got {n_boot}")
    check_metric(metric, runs)
    done = [r for r in runs if r.completed]
    groups = group_runs(runs)
    rows = order_rows({r.row for r in done})
    columns = order_columns(done)
    primary = primary_metrics(done, metric)
    col_metric = {c: primary[c[0]] for c in columns}
    tables = [build_table("Primary metric" if metric is None else metric, groups, rows, columns, col_metric)]
    if any(m != "accuracy" for m in col_metric.values()) and "accuracy" in available_metrics(done):
        tables.append(build_table("Accuracy", groups, rows, columns, dict.fromkeys(columns, "accuracy")))
    pairs = lt_pairs(rows)
    diffs = differences(groups, pairs, columns, col_metric, n_boot, seed)
    notes = list(notes or []) + [
        f"{d['lt']} vs {d['baseline']} on {d['dataset']}/{d['model']}: seed(s) {d['unpaired_seeds']} have no "
        "partner run and are left out of the difference (still in the tables)"
        for d in diffs if d["unpaired_seeds"]
    ]
    kinds: dict[str, set[str]] = {}
    for r in done:
        kinds.setdefault(loss_kind(r), set()).add(row_label(r.row))
    if len(kinds) > 1:
        notes.append("val_loss is each run's training loss and not on one scale across these rows ("
                     + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(kinds.items()))
                     + "): compare their accuracy curves and the steps to the common target, not their losses")
    return Report(
        inputs=[str(p) for p in inputs],
        settings={"metric": metric, "n_boot": n_boot, "seed": seed, "bootstrap": BOOTSTRAP_DOC,
                  "std": "sample standard deviation over seeds (ddof=1); null for one seed"},
        runs=runs,
        tables=tables,
        summary=summary_records(groups, rows, columns),
        differences=diffs,
        steps_to_target=steps_to_target(groups, pairs, columns, col_metric),
        params=params_records(runs, rows),
        # the lower panel: a dataset judged by a score other than accuracy (CoLA's MCC) shows that score
        curves=curve_records(groups, rows, columns,
                             {d: m for d, m in primary.items() if m not in ("accuracy", "val_loss")}),
        failed=failed_records(runs),
        notes=notes,
    )
