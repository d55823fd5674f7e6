"""docs/RESULTS.md from the study's run folders (`make results`, `python -m ltune_cli.study results`).

Every number is read from a run folder (or, for the paper's own Table 1, from
docs/results/paper_table1.yaml, quoted for reference): progress and CPU hours, the pilot curves
behind the step budget, the values tuning chose, our Table 1 (mean ± std over seeds), L-Tuning
minus baseline with paired bootstrap intervals (the compare report's statistics), steps to
target, trainable parameters and wall time, the convergence figure, the ablations and a verdict
whose every clause is computed from those numbers. Sections whose runs have not completed say so.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from ltune_cli import runfolder, study
from ltune_cli.errors import LtuneError
from ltune_cli.report import analysis
from ltune_cli.report.analysis import BASELINE_OF, difference
from ltune_cli.report.load import load_run, row_label
from ltune_cli.report.plots import METRIC_NAMES
from ltune_cli.report.stats import mean_curve, summarize


def outputs_of(spec: dict) -> tuple[Path, Path]:
    """Where `study results` writes (relative to the repository root): the plan's `results: {md,
    csv}`, by default docs/results/<plan>.md and <plan>_runs.csv; figures go beside the CSV."""
    name, given = spec["name"], spec.get("results") or {}
    return (Path(given.get("md") or f"docs/results/{name}.md"), Path(given.get("csv") or f"docs/results/{name}_runs.csv"))


PAPER_TABLE = "docs/results/paper_table1.yaml"
N_BOOT, BOOT_SEED = 2000, 0
METHOD_NAMES = {"prefix": "prefix", "prompt": "prompt", "lt_prefix": "LT-prefix", "lt_prompt": "LT-prompt"}
GPU_COMMAND = ("for s in pilot tune final ablate; do python -m ltune_cli.study run $s --plan reproduce_gpu --jobs 1; "
               "done; python -m ltune_cli.study results --plan reproduce_gpu")


def _mean_std(values, digits: int = 3, of: str = "") -> str:
    """"mean ± std (n=k)", or "(n=k, <of>)" when given what the values are of."""
    mean, std, n = summarize(list(values))
    if not n:
        return ""
    of = f", {of}" if of else ""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "") + f" (n={n}{of})"


def _signed(x: float | None) -> str:
    return "" if x is None else f"{x:+.3f}"


def _interval(d: dict) -> str:
    """A difference record as "+0.012 [-0.003, +0.027] *" (`*`: the interval excludes 0)."""
    return f"{_signed(d['diff'])} [{_signed(d['lo'])}, {_signed(d['hi'])}]{' *' if d['excludes_zero'] else ''}"


def load_stage_runs(spec: dict, table, stage: str) -> dict[tuple, list]:
    """(model, dataset, method[, ablation]) -> the stage's completed runs (report.load.Run)."""
    root = study.root_of(spec)
    out: dict[tuple, list] = {}
    if table.empty:
        return out
    for rec in table[table["stage"] == stage].to_dict("records"):
        key = (rec["model"], rec["dataset"], rec["method"])
        if stage == "ablate":
            key = (*key, rec["ablation"])
        out.setdefault(key, []).append(load_run(root / rec["run_dir"]))
    return out


# --------------------------------------------------------------------------- sections
def progress(spec: dict, table) -> list[str]:
    out = ["## Progress", "", "| stage | runs completed | CPU hours (1 thread each) |", "|---|---|---|"]
    total = 0.0
    for stage in study.STAGES:
        n = len(study.planned_jobs(spec, stage, study.root_of(spec)))
        done = table[table["stage"] == stage]
        hours = float(done["wall_time_s"].sum()) / 3600
        total += hours
        out.append(f"| {stage} | {len(done)} / {n} | {hours:.1f} |")
    n_old, old_hours = superseded(spec)
    if n_old:
        total += old_hours
        out.append(f"| superseded | {n_old} | {old_hours:.1f} |")
    return out + [f"| all | | {total:.1f} |", "",
                  "CPU hours: the wall time of one-thread runs, two at a time on a 2-core machine, an upper bound "
                  "on their CPU time." + (f" Superseded: runs a plan change took out of the study (a cell's new "
                                          f"step budget), kept under outputs/study/{spec['name']}/superseded/ "
                                          "(one folder per change), counted in the total, in no other table."
                                          if n_old else ""), ""]


def superseded(spec: dict) -> tuple[int, float]:
    """(runs, CPU hours) of the completed runs under <root>/superseded/: what the study spent on runs
    a plan change took out of it."""
    n, seconds = 0, 0.0
    for path in sorted((study.root_of(spec) / "superseded").rglob("results.json")):
        res = runfolder.read_results(path.parent)
        if res.get("status") == "completed":
            n, seconds = n + 1, seconds + float(res.get("wall_time_s") or 0.0)
    return n, seconds / 3600


def pilot(spec: dict, table) -> list[str]:
    runs = load_stage_runs(spec, table, "pilot")
    if not runs:
        return []
    out = ["## Pilot: the step budget", "",
           "Held-out score (the tune stage's slice of train, seed 0, default learning rates; the dataset's primary "
           "metric) along a long run, every point on one set of held-out texts (Run.curve); the study's step "
           f"budget per cell: {_budget_text(spec)}.", ""]
    for (model, dataset), group in _by_cell(runs).items():
        metric = study.primary_metric(dataset)
        steps = sorted({int(e["step"]) for rs in group.values() for r in rs for e in r.curve()})
        gold = _gold([r for rs in group.values() for r in rs])
        out += [f"{model} / {dataset}, {_metric_name(metric)}" + ("" if not gold else f" ({len(gold)} held-out texts; always "
                                                    "answering the majority class: accuracy "
                                                    f"{_rate(gold):.3f}, MCC 0)") + ":",
                "", "| method | " + " | ".join(map(str, steps)) + " |", "|---" * (len(steps) + 1) + "|"]
        for method, rs in group.items():
            curve = dict(mean_curve([r.curve() for r in rs], metric))
            out.append(f"| {METHOD_NAMES.get(method, method)} | "
                       + " | ".join(f"{curve[s]:.3f}" if s in curve else "" for s in steps) + " |")
        out.append("")
    return out


def pilot_learning(spec: dict, table) -> dict[tuple[str, str], dict]:
    """(model, dataset) -> did any pilot run (a longer budget, held-out train, default lrs) end above
    chance on its held-out texts (chance_check, the dataset's primary metric)? {"steps", "texts",
    "metric", "chance", "best", "score", "learnt": [methods], "methods": how many ran}: tells a cell at
    chance at its budget from one at chance at a longer budget too."""
    out = {}
    for (model, dataset), group in _by_cell(load_stage_runs(spec, table, "pilot")).items():
        metric = study.primary_metric(dataset)
        checks = {m: (chance_check(rs, metric), rs) for m, rs in group.items()}
        checks = {m: (c, rs) for m, (c, rs) in checks.items() if c is not None}
        if not checks:
            continue
        best = max(checks, key=lambda m: checks[m][0]["score"])
        c, rs = checks[best]
        out[(model, dataset)] = {"steps": max(int(r.curve()[-1]["step"]) for r in rs), "texts": len(_gold(rs, False)),
                                 "metric": metric, "chance": c["chance"], "best": best, "score": c["score"],
                                 "learnt": [m for m, (c, _) in checks.items() if c["learnt"]], "methods": len(checks)}
    return out


def _budget_text(spec: dict) -> str:
    """Each cell's train.max_steps as its runs get it (the last of the plan's common, dataset, model and
    cell overrides): "minilm/sst2 600, minilm/cola 3000, ..."."""
    def steps(model: str, dataset: str) -> str:
        given = [o.split("=", 1)[1] for o in study._base(spec, model, dataset, spec["methods"][0])
                 if o.startswith("train.max_steps=")]
        return given[-1] if given else "?"

    return ", ".join(f"{m}/{d} {steps(m, d)}" for m, d in study.cells(spec))


def _by_cell(runs: dict) -> dict:
    cells: dict = {}
    for (model, dataset, method, *_), rs in runs.items():
        cells.setdefault((model, dataset), {})[method] = rs
    return cells


def at_grid_edge(values: dict) -> bool:
    """A learning-rate scale chosen at the lowest or highest of the scales tried, the grid's
    extensions (`tune.extend`) included: the best may lie beyond it."""
    return bool(values.get("edge"))


def _grid_text(spec: dict) -> str:
    t = spec["tune"]
    ext = t.get("extend") or {}
    text = ", ".join(map(study.fmt, t["lr_scale"]))
    if ext.get("below") or ext.get("above"):
        text += (", extended while the best sat at its edge, one scale at a time, to "
                 + " and ".join(", ".join(map(study.fmt, ext[k])) + f" {k}" for k in ("below", "above") if ext.get(k)))
    return text


def chosen_table(spec: dict, table, chosen: dict) -> list[str]:
    borrowed = study.borrowed(spec)
    out = ["## Chosen on held-out train (tune stage, seed 0)", "",
           "Each method's best learning-rate scale (x its own defaults in conf/method) and, for the baselines, "
           "prefix / prompt length P, by the final primary metric on the held-out slice of train (ties: the lower "
           "held-out validation loss). A cell tuned on another cell (`tune.borrow`) names it. `edge`: the scale is the "
           f"lowest or highest of the scales tried (grid {_grid_text(spec)}), so the best may lie beyond it.", "",
           "| model | dataset | method | lr scale | P | held-out score | held-out val loss | tune runs done |",
           "|---|---|---|---|---|---|---|---|"]
    tune = table[table["stage"] == "tune"]
    planned = Counter((j.model, j.dataset, j.method) for j in study.tune_jobs(spec, study.root_of(spec), True))
    done_runs = Counter(zip(tune["model"], tune["dataset"], tune["method"], strict=True))
    for model, dataset in study.cells(spec):
        for method in spec["methods"]:
            key = (model, dataset, method)
            c = chosen.get(key)
            loss = c and c.get("held_out_val_loss")
            cells = ([study.fmt(c["lr_scale"]) + (" (edge)" if at_grid_edge(c) else ""),
                      str(c.get("num_virtual_tokens") or ""), f"{c['score']:.3f}",
                      "" if loss is None else f"{loss:.3f}"] if c else ["", "", "", ""])
            src = borrowed.get((model, dataset))
            done = f"tuned on {'/'.join(src)}" if src else f"{done_runs[key]} / {planned[key]}"
            out.append(f"| {model} | {dataset} | {method} | " + " | ".join(cells) + f" | {done} |")
    return out + [""]


def table1(spec: dict, final: dict) -> list[str]:
    out = ["## Table 1: final scores (dev split, mean ± std over seeds)", ""]
    if not final:
        return out + ["No final run has completed yet: `make study STAGE=final` after the tune stage.", ""]
    for model in spec["cells"]:
        datasets = [d for d in spec["cells"][model] if any(k[:2] == (model, d) for k in final)]
        if not datasets:
            continue
        head = [f"{d} {'MCC' if m == 'mcc' else 'accuracy'}" for d in datasets
                for m in (("mcc", "accuracy") if study.primary_metric(d) == "mcc" else ("accuracy",))]
        out += [f"**{model}**", "", "| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for method in spec["methods"]:
            row = []
            for d in datasets:
                rs = final.get((model, d, method), [])
                for m in (("mcc", "accuracy") if study.primary_metric(d) == "mcc" else ("accuracy",)):
                    row.append(_mean_std(r.final.get(m) for r in rs))
            out.append(f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(row) + " |")
        sizes = [f"{d} {'/'.join(map(str, n))}" for d in datasets
                 if (n := sorted({r.eval_examples for k, rs in final.items() if k[:2] == (model, d) for r in rs}))]
        out += ["", f"Scored examples: {', '.join(sizes)}.", ""]
    return out + paper_table()


def paper_table() -> list[str]:
    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[2] / PAPER_TABLE  # the repository's docs/
    if not path.is_file():
        return []
    ref = OmegaConf.to_container(OmegaConf.load(path))
    out = [f"For reference, the paper's Table 1 ({ref['source']}; {ref['metric']} on every dataset, one run each, "
           "no seeds or intervals):", ""]
    for block, models in ref["blocks"].items():
        datasets = list(next(iter(next(iter(models.values())).values())))
        head = [f"{d} {m}" for d in datasets for m in models]
        out += [f"| {block} | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for method in next(iter(models.values())):
            out.append(f"| {METHOD_NAMES.get(method, method)} | "
                       + " | ".join(f"{models[m][method][d]:.3f}" for d in datasets for m in models) + " |")
        out.append("")
    return out


def _groups(spec: dict, final: dict):
    """The final runs in the compare report's shape (report.analysis): rows = methods (no variant,
    no settings), columns = (dataset, model) in the plan's cell order, groups[(row, column)] = runs;
    and the (L-Tuning row, baseline row) pairs."""
    rows = [(m, "", ()) for m in spec["methods"]]
    columns = [(dataset, model) for model, dataset in study.cells(spec)]
    groups = {((method, "", ()), (dataset, model)): rs for (model, dataset, method), rs in final.items()}
    return groups, rows, columns, analysis.lt_pairs(rows)


def differences(spec: dict, final: dict) -> list[dict]:
    """L-Tuning minus its baseline per model x dataset on the primary metric: paired by seed and by
    dev example (report.analysis.differences: the compare report's bootstrap)."""
    groups, _, columns, pairs = _groups(spec, final)
    metric = {col: study.primary_metric(col[0]) for col in columns}
    out = analysis.differences(groups, pairs, columns, metric, N_BOOT, BOOT_SEED)
    for d in out:  # neither method of the pair beats chance: the comparison tests nothing
        checks = [chance_check(final.get((d["model"], d["dataset"], m), []), metric[(d["dataset"], d["model"])])
                  for m in (d["lt"], d["baseline"])]
        d["at_chance"] = all(c is not None and c["learnt"] is False for c in checks)
    return out


def differences_table(diffs: list[dict]) -> list[str]:
    out = ["## L-Tuning minus baseline (95% paired bootstrap interval)", ""]
    if not diffs:
        return out + ["Waiting for final runs of both methods of a pair.", ""]
    out += ["Resampling dev examples (shared by both methods) and seeds; `*`: the interval excludes 0.", "",
            "| model | dataset | metric | LT-prefix − prefix | LT-prompt − prompt |", "|---|---|---|---|---|"]
    by_cell: dict = {}
    for d in diffs:
        by_cell.setdefault((d["model"], d["dataset"], d["metric"]), {})[d["lt"]] = d
    for (model, dataset, metric), pair in by_cell.items():
        cols = []
        for lt in BASELINE_OF:
            d = pair.get(lt)
            cols.append("" if d is None else f"{_interval(d)} (n={d['n']})")
        out.append(f"| {model} | {dataset} | {metric} | " + " | ".join(cols) + " |")
    return out + [""]


def steps_to_target(spec: dict, final: dict) -> list[dict]:
    """Per pair, the first evaluated step at which each method's seed-mean curve of the dataset's
    primary metric (CoLA: MCC; else accuracy) reaches (a) the baseline's seed-mean final value
    (report.analysis's target: L-Tuning must also end as high), and (b) the common target, the lower
    of the two methods' final values, which both reach by the last step: who gets there first,
    whatever the level each ends at (the paper's faster convergence). None: never within the budget.
    Every point and target on the curve's texts (Run.curve); not the loss (two losses, two scales)."""
    groups, _, columns, pairs = _groups(spec, final)
    runs = {(row_label(row), col): rs for (row, col), rs in groups.items()}
    metric = {col: study.primary_metric(col[0]) for col in columns}
    out = []
    for r in analysis.steps_to_target(groups, pairs, columns, metric):
        col = (r["dataset"], r["model"])
        # chance on the curve's texts: the majority class's accuracy; MCC 0
        chance = 0.0 if r["metric"] == "mcc" else _majority_rate([*runs[(r["lt"], col)], *runs[(r["baseline"], col)]])
        common = r["target_common"]
        out.append({"model": r["model"], "dataset": r["dataset"], "metric": r["metric"], "lt": r["lt"],
                    "baseline": r["baseline"], "target": r["target_metric"], "lt_steps": r["lt_steps_metric"],
                    "baseline_steps": r["baseline_steps_metric"], "common_target": common,
                    "lt_steps_common": r["lt_steps_common"], "baseline_steps_common": r["baseline_steps_common"],
                    # neither ends above answering without learning: nothing to race to
                    "trivial": common is not None and chance is not None and common <= chance + 1e-12})
    return out


def _majority_rate(runs: list) -> float | None:
    """The accuracy of always answering the most frequent gold label of the curve's texts."""
    gold = _gold(runs)
    return _rate(gold) if gold else None


def _rate(gold: list) -> float:
    """The share of the most frequent label: the accuracy of always answering it."""
    return max(Counter(gold).values()) / len(gold)


def _gold(runs: list, curve: bool = True) -> list | None:
    """The gold labels of the curve's texts (curve=False: all), from the first run with predictions."""
    for run in runs:
        gold = (run.predictions or {}).get("gold")
        if gold:
            return gold[:run.curve()[-1].get("eval_examples") or len(gold)] if curve else gold
    return None


def chance_check(runs: list, metric: str) -> dict | None:
    """Did the runs learn? Their seed-mean final `metric` (the dataset's primary one) against what an
    answer that ignores the text scores, by more than 2 standard errors on the split's n texts:
    accuracy: always answering the most frequent label, rate m (margin 2·sqrt(m(1-m)/n)); MCC: 0 (margin
    2/sqrt(n): n·MCC² is the 2x2 table's chi-square, 1 degree of freedom, under independence). MCC is
    the test on an imbalanced set: CoLA's prefix runs, MCC 0.23 on 1043 texts, are 0.005 above the
    majority class's accuracy. {"metric", "score", "chance", "margin", "learnt"}; None: unknown."""
    gold, (score, _, n) = _gold(runs, curve=False), summarize([r.final.get(metric) for r in runs])
    if not gold or not n:
        return None
    if metric == "mcc":
        chance, margin = 0.0, 2 / math.sqrt(len(gold))
    else:
        chance = _rate(gold)
        margin = 2 * math.sqrt(chance * (1 - chance) / len(gold))
    return {"metric": metric, "score": score, "chance": chance, "margin": margin, "learnt": score > chance + margin}


#: A best method whose curve accuracy still moves by more than this over its last evaluations has
#: not plateaued within the budget (200 curve texts: one seed's accuracy there has a std of ~0.025).
PLATEAU_TOLERANCE = 0.02


def _moved(change: float) -> bool:
    """Moved by more than PLATEAU_TOLERANCE. Curve accuracies are seed means of count ratios, so a change
    equal to the tolerance in exact arithmetic can land a rounding error above it: 1e-9 of slack."""
    return abs(change) > PLATEAU_TOLERANCE + 1e-9


def plateau_rows(spec: dict, final: dict) -> list[dict]:
    """Per cell, the best method (mean final score) and its seed-mean accuracy on the curve's texts
    at its last three evaluations: has it plateaued within the step budget?"""
    rows = []
    for model, dataset in study.cells(spec):
        metric = study.primary_metric(dataset)
        stats = {m: summarize([r.final.get(metric) for r in final.get((model, dataset, m), [])])
                 for m in spec["methods"]}
        means = {m: mean for m, (mean, _, n) in stats.items() if n}
        if not means:
            continue
        best = max(means, key=means.get)
        last = {m: analysis._curve(final[(model, dataset, m)], "accuracy")[-3:] for m in means}
        curve = last[best]
        if len(curve) >= 2:
            change = curve[-1][1] - curve[0][1]
            check = chance_check(final[(model, dataset, best)], metric) or {"learnt": None}
            # the other methods still moving at the budget's end: their differences are at this budget
            others = [{"method": m, "curve": c, "change": c[-1][1] - c[0][1], "span": c[-1][0] - c[0][0]}
                      for m, c in last.items() if m != best and len(c) >= 2
                      and _moved(c[-1][1] - c[0][1])]
            rows.append({"model": model, "dataset": dataset, "method": best, "curve": curve, "change": change,
                         "span": curve[-1][0] - curve[0][0], "plateaued": not _moved(change),
                         **check, "others_moving": others})
    return rows


def _moving_text(r: dict, o: dict) -> str:
    """"minilm/r8 LT-prompt (0.833 → 0.873, +0.040 over the last 200 steps)"."""
    return (f"{r['model']}/{r['dataset']} {METHOD_NAMES[o['method']]} ({o['curve'][0][1]:.3f} → "
            f"{o['curve'][-1][1]:.3f}, {o['change']:+.3f} over the last {o['span']} steps)")


def budget_check(spec: dict, rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["## Has the best method learnt, and plateaued?", "",
           "Per cell, the method with the best mean final score. `learnt`: its seed-mean dev score in the dataset's "
           "primary metric beats chance, what an answer that ignores the text scores, by more than 2 standard errors "
           "on the split's n texts (the threshold shown): accuracy, always answering the most frequent label (rate "
           "m; 2·sqrt(m(1−m)/n)); MCC (CoLA), 0 (2/sqrt(n)); `no`: every method is at chance there. "
           f"`plateaued`: its seed-mean accuracy on {_curve_texts(spec)} at its last three evaluations; `no`: it moved "
           f"by more than {PLATEAU_TOLERANCE} over them.", "",
           "| model | dataset | best method | dev score | chance | learnt | accuracy (curve) | change "
           "| plateaued |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        points = ", ".join(f"{a:.3f} at {st}" for st, a in r["curve"])
        learnt = ["", "", ""] if r["learnt"] is None else [
            f"{_metric_name(r['metric'])} {r['score']:.3f}", f"{r['chance']:.3f}",
            f"{'yes' if r['learnt'] else 'no'} (threshold {r['chance'] + r['margin']:.3f})"]
        out.append(f"| {r['model']} | {r['dataset']} | {METHOD_NAMES[r['method']]} | {' | '.join(learnt)} | {points} | "
                   f"{r['change']:+.3f} over the last {r['span']} steps | {'yes' if r['plateaued'] else 'no'} |")
    if moving := [_moving_text(r, o) for r in rows for o in r.get("others_moving", [])]:
        out += ["", f"Other methods whose seed-mean accuracy there moved by more than {PLATEAU_TOLERANCE} over their "
                f"last three evaluations: {'; '.join(moving)}."]
    return out + [""]


def _common(spec: dict, key: str) -> str | None:
    """The value the plan's `common` overrides give `key` (e.g. "train.max_steps"), or None."""
    return next((o.split("=", 1)[1] for o in spec.get("common", []) if o.split("=", 1)[0] == key), None)


def _curve_texts(spec: dict) -> str:
    """Which texts the curves score (the plan's train.curve_eval_limit)."""
    limit = _common(spec, "train.curve_eval_limit")
    return (f"the first {limit} dev texts (at the last step too: runs record those texts' scores beside the "
            "full split's; runs from before that have their accuracy recomputed from predictions.json there, and "
            "no loss)" if limit else "the whole dev split")


def _step(step: int | None) -> str:
    return "−" if step is None else str(step)


def steps_table(rows: list[dict], spec: dict) -> list[str]:
    if not rows:
        return []
    out = ["## Steps to target", "",
           "First evaluated step at which the seed-mean primary metric (CoLA: MCC; else accuracy) reaches a target "
           f"(− : not within the budget), every point and target on {_curve_texts(spec)}. Two targets: the baseline's "
           "final value (L-Tuning must also end as high), and the common target, the lower of the two methods' final "
           "values, which both reach by the last step: who gets there first, whatever the level each ends at (the "
           "paper's faster convergence); `chance`: no higher than an answer that ignores the text scores on those "
           "texts (accuracy: always the most frequent label; MCC: 0), so no learning to race to (left out of the "
           "verdict's count).", "",
           "| model | dataset | metric | pair | baseline's final | baseline steps | L-Tuning steps | common target | "
           "baseline steps | L-Tuning steps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "" if r["target"] is None else f"{r['target']:.3f}"
        common = "" if r["common_target"] is None else f"{r['common_target']:.3f}"
        common += " (chance)" if r["trivial"] else ""
        out.append(f"| {r['model']} | {r['dataset']} | {_metric_name(r['metric'])} | {METHOD_NAMES[r['lt']]} vs "
                   f"{r['baseline']} | {target} "
                   f"| {_step(r['baseline_steps'])} | {_step(r['lt_steps'])} | {common} "
                   f"| {_step(r['baseline_steps_common'])} | {_step(r['lt_steps_common'])} |")
    return out + [""]


def setup_table(spec: dict, final: dict) -> list[str]:
    """What the final runs ran on, per cell, read from their folders (results.json and config.yaml),
    not from the plan: train texts, dev texts scored, token limit, steps, batch, dtype, seeds."""
    if not final:
        return []
    cells: dict[tuple, list] = {}
    for (model, dataset, _), runs in final.items():
        cells.setdefault((model, dataset), []).extend(runs)

    def values(runs: list, get) -> str:  # one value per cell, or every value its runs disagree on
        return " / ".join("?" if v is None else str(v) for v in sorted({get(r) for r in runs}, key=str))

    results = {r.path: runfolder.read_results(r.path) for rs in cells.values() for r in rs}  # read once a run

    def counted(r, n, key: str) -> str:  # config.yaml's values are strings ("null": no limit)
        if not isinstance(n, int):
            return "?"
        return f"{n:,}" + (" (the first)" if r.config.get(key) == str(n) else "")

    def train_texts(r) -> str:
        return counted(r, results[r.path].get("train_examples"), "dataset.train_limit")

    def dev_texts(r) -> str:
        return counted(r, r.eval_examples, "dataset.eval_limit")

    out = ["## Setup: what the final runs ran on", "",
           "Read from the final runs' folders (results.json, config.yaml). Train texts: those the run trained on (`the "
           "first`: the first N of the train file, dataset.train_limit); dev texts scored: the dev split (R8: its "
           "test split), all of it unless `the first` N (dataset.eval_limit); tokens: the most per (text, label) "
           "pair or text (model.max_length; longer ones are cut); batch: texts per step (L-Tuning: each in one pair, "
           "half with its true label, half with a wrong one); seeds: completed of planned per method; dtype: "
           "hardware.dtype (bf16: the frozen model in bf16 under autocast; trained parameters and optimizer state in "
           "fp32). The tune stage holds a slice out of train (tune.holdout: "
           + ", ".join(f"{d} {n}" for d, n in spec.get("tune", {}).get("holdout", {}).items())
           + " texts; drawn with a fixed seed, the same for every method and run), trains on the rest with the same "
           "limits and scores that slice.", "",
           "| model | dataset | train texts | dev texts scored | tokens | steps | batch | dtype | seeds |",
           "|---|---|---|---|---|---|---|---|---|"]
    for model, dataset in study.cells(spec):
        runs = cells.get((model, dataset))
        if not runs:
            continue
        done = sorted({len(final.get((model, dataset, m), [])) for m in spec["methods"]})  # per method
        span = f"{done[0]}" if len(done) == 1 else f"{done[0]}-{done[-1]}"
        seeds = f"{span} of {len(study._seeds(spec, 'final', dataset))}"
        out.append(f"| {model} | {dataset} | {values(runs, train_texts)} | {values(runs, dev_texts)} | "
                   f"{values(runs, lambda r: r.config.get('model.max_length'))} | "
                   f"{values(runs, lambda r: results[r.path].get('steps'))} | "
                   f"{values(runs, lambda r: r.config.get('hardware.batch_size'))} | "
                   f"{values(runs, lambda r: r.config.get('hardware.dtype'))} | {seeds} |")
    return out + [""]


def cost_table(spec: dict, table) -> list[str]:
    final = table[table["stage"] == "final"]
    if final.empty:
        return []
    datasets = list(dict.fromkeys(d for ds in spec["cells"].values() for d in ds))
    out = ["## Trainable parameters and wall time per final run", "",
           "| model | method | trainable parameters | " + " | ".join(f"minutes, {d}" for d in datasets) + " |",
           "|---|---|---|" + "---|" * len(datasets)]
    split = False
    for (model, method), g in final.groupby(["model", "method"], sort=False):
        params = " / ".join(f"{int(p):,}" for p in sorted(set(g["trainable_params"])))
        walls = []
        for d in datasets:
            runs = g[g["dataset"] == d]
            on = [m if isinstance(m, str) else None for m in runs.get("machine", [None] * len(runs))]
            machines = list(dict.fromkeys(on))
            if len(machines) <= 1:
                walls.append(_mean_std(runs["wall_time_s"] / 60, 1))
                continue
            split = True  # one cell's runs on different machines: their minutes are not one sample
            walls.append("; ".join(_mean_std((w / 60 for w, o in zip(runs["wall_time_s"], on) if o == m), 1,
                                             of=m or "machine not recorded") for m in machines))
        out.append(f"| {model} | {METHOD_NAMES[method]} | {params} | " + " | ".join(walls) + " |")
    note = ("Trainable parameters differ across datasets by the head (K labels) and the chosen length P; "
            "minutes: mean ± std wall time of one-thread runs.")
    if split:
        note += (" Where a cell's runs ran on different machines (results.json `sittings`: the CPU that ran most "
                 "of a run's steps; not recorded before that key existed), each machine's runs are shown apart.")
    return out + ["", note, ""]


def curve_records(spec: dict, final: dict) -> list[dict]:
    """report.analysis's seed-mean curves (on the curve's texts throughout: Run.curve), labelled with
    the paper's method names."""
    groups, rows, columns, _ = _groups(spec, final)
    scores = {dataset: study.primary_metric(dataset) for _, dataset in study.cells(spec)}
    return [{**c, "label": METHOD_NAMES.get(c["method"], c["method"])}
            for c in analysis.curve_records(groups, rows, columns, scores)]


def write_figures(spec: dict, final: dict, folder: Path) -> list[Path]:
    """One convergence figure per model (report.plots: loss above accuracy per dataset). A model's
    figure from an earlier write whose runs have left the study (a changed budget) is removed, so no
    stale figure sits beside the report."""
    from ltune_cli.report.plots import plot_curves

    names = []
    records = curve_records(spec, final)
    for model in spec["cells"]:
        mine = [c for c in records if c["model"] == model]
        png = folder / f"{spec['name']}_curves_{model}.png"
        if mine:
            plot_curves(mine, png, png.with_suffix(".svg"), order=spec["cells"][model])  # as the tables
            names.append(png)
        else:
            for stale in (png, png.with_suffix(".svg")):
                stale.unlink(missing_ok=True)
    return names


def figures_section(spec: dict, figures: list[str]) -> list[str]:
    """`figures`: the PNGs' paths relative to the markdown file."""
    if not figures:
        return []
    out = ["## Convergence (the paper's Fig. 2)", "",
           "Seed-mean validation loss (above) and the primary metric (below: MCC on CoLA, accuracy elsewhere) against "
           "the step, the metric on "
           f"{_curve_texts(spec)}. The losses are not on one scale (L-Tuning: binary cross-entropy over text x label "
           "pairs; baselines: K-way cross-entropy), so compare the lower curves and the steps to target.", ""]
    return out + [f"![{Path(f).name}]({f})" for f in figures] + [""]


def ablations(spec: dict, final: dict, abl: dict) -> list[dict]:
    """Each ablation minus the same method with its real label texts (same cell, same seeds)."""
    out = []
    for (model, dataset, method, name), rs in abl.items():
        metric = study.primary_metric(dataset)
        real = final.get((model, dataset, method), [])
        rec = difference(rs, real, metric, N_BOOT, BOOT_SEED, f"{model}|{dataset}|{method}|{name}|{metric}")
        out.append({"model": model, "dataset": dataset, "method": method, "ablation": name,
                    "score": _mean_std(r.final.get(metric) for r in rs),
                    "real": _mean_std(r.final.get(metric) for r in real), **rec})
    return out


ABLATION_TEXT = {"labels_meaningless": "label texts \"label zero\", \"label one\", ...",
                 "labels_swapped": "label texts rotated between classes",
                 "variant_paper": "A.5 pooling variant (variant=paper)",
                 "warm_start_off": "warm start off (init_from_label=false)",
                 "variant_paper_warm_start_off": "A.5 pooling variant, warm start off",
                 "pair_framing": "pair framing: P random tokens per label, pair head (vs its K-way head)"}

#: Is LT-prefix's A.5 variant weak by capacity or by its warm start? Two contrasts between ablations
#: (the first minus the second, same cell and seeds): with neither warm-started, A.5 against per_token
#: (its capacity); A.5 with its label warm start against A.5 without (what that start does).
A5_CONTRASTS = {"capacity": ("variant_paper_warm_start_off", "warm_start_off"),
                "warm start": ("variant_paper", "variant_paper_warm_start_off")}


def a5_contrasts(abl: dict) -> list[dict]:
    """Per cell with both ablations of a contrast done, its difference (paired bootstrap interval)."""
    out = []
    for model, dataset in dict.fromkeys((m, d) for m, d, method, _ in abl if method == "lt_prefix"):
        metric = study.primary_metric(dataset)
        for what, (a, b) in A5_CONTRASTS.items():
            runs_a, runs_b = abl.get((model, dataset, "lt_prefix", a)), abl.get((model, dataset, "lt_prefix", b))
            if not runs_a or not runs_b:
                continue
            rec = difference(runs_a, runs_b, metric, N_BOOT, BOOT_SEED, f"{model}|{dataset}|lt_prefix|{a}|{b}|{metric}")
            out.append({"model": model, "dataset": dataset, "contrast": what, "a": a, "b": b, "metric": metric,
                        "score_a": _mean_std(r.final.get(metric) for r in runs_a),
                        "score_b": _mean_std(r.final.get(metric) for r in runs_b),
                        "runs_a": len(runs_a), "runs_b": len(runs_b),
                        "chance_a": _at_chance(runs_a, metric), "chance_b": _at_chance(runs_b, metric), **rec})
    return out


def label_in_framing(final: dict, abl: dict) -> list[dict]:
    """The pair-framing ablation's other half: L-Tuning (its label texts) minus its baseline framed the same
    way (P random tokens per label, pair head), same cell and seeds: what the label text adds once the
    framing is shared. Each side at the values tuned for it (the framed baseline at its K-way form's)."""
    out = []
    lt_of = {base: lt for lt, base in BASELINE_OF.items()}
    for (model, dataset, method, name), framed in abl.items():
        lt = lt_of.get(method)
        if name != "pair_framing" or not (lt_runs := final.get((model, dataset, lt))):
            continue
        metric = study.primary_metric(dataset)
        rec = difference(lt_runs, framed, metric, N_BOOT, BOOT_SEED, f"{model}|{dataset}|{lt}|{method}|pair_framing|{metric}")
        out.append({"model": model, "dataset": dataset, "method": lt, "baseline": method, "metric": metric,
                    "score_lt": _mean_std(r.final.get(metric) for r in lt_runs),
                    "score_framed": _mean_std(r.final.get(metric) for r in framed), **rec})
    return out


def framing_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["### The label text within the pair framing", "",
           "L-Tuning (the final stage's runs) against its baseline scoring the same (text, label) pairs with P random "
           "tokens per label (the pair framing ablation): both judge pairs with a pair head, so the difference is what "
           "the label text (through the frozen LM and the L-Tuning map) adds to that framing; each at the values tuned "
           "for it. Difference with a 95% paired bootstrap interval, `*`: excludes 0"
           + _paired_key(rows, "the two sides ran different seeds"), "",
           "| model | dataset | L-Tuning | score | baseline, pair framing | score | difference |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['dataset']} | {METHOD_NAMES[r['method']]} | {r['score_lt']} | "
                   f"{METHOD_NAMES[r['baseline']]} | {r['score_framed']} | {_diff_cell(r)} |")
    return out + [""]


def _at_chance(runs: list, metric: str) -> list[tuple]:
    """(seed, score) of each run that ends no higher than chance on its own (chance_check of that run alone):
    a seed that collapsed to the majority class, which a mean over seeds hides."""
    out = []
    for r in runs:
        check = chance_check([r], metric)
        if check is not None and check["learnt"] is False:
            out.append((r.seed, check["score"]))
    return out


def a5_table(contrasts: list[dict]) -> list[str]:
    if not contrasts:
        return []
    out = ["### The A.5 variant: capacity or warm start?", "",
           "LT-prefix's A.5 pooling variant (method.variant=paper) against the per-token default, both without a "
           "warm start (capacity), and with its label warm start against without (warm start); difference with a "
           "95% paired bootstrap interval, `*`: excludes 0"
           + _paired_key(contrasts, "the two sides ran different seeds (ablate.seeds_by_cell)"), "",
           "| model | dataset | contrast | score | against | score | difference |", "|---|---|---|---|---|---|---|"]
    for c in contrasts:
        out.append(f"| {c['model']} | {c['dataset']} | {c['contrast']} | {ABLATION_TEXT[c['a']]}: {c['score_a']} | "
                   f"{ABLATION_TEXT[c['b']]} | {c['score_b']} | {_diff_cell(c)} |")
    return out + [""]


def _by_sign(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(below, above, neither): the differences whose interval excludes 0 below it, above it, and the rest."""
    rows = [r for r in rows if r["diff"] is not None]
    below = [r for r in rows if r["excludes_zero"] and r["diff"] < 0]
    above = [r for r in rows if r["excludes_zero"] and r["diff"] > 0]
    return below, above, [r for r in rows if r not in below and r not in above]


def _signs(rows: list[dict]) -> tuple[int, int, int]:
    """(below, above, n): differences whose interval excludes 0 on either side, of n."""
    below, above, neither = _by_sign(rows)
    return len(below), len(above), len(below) + len(above) + len(neither)


def _sign_text(rows: list[dict], below: str, above: str) -> str:
    """'<below> in a (named), <above> in b (named), not distinguishable in c of n method x cell comparisons'."""
    def named(rs: list[dict]) -> str:
        items = (f"{r['model']}/{r['dataset']} {METHOD_NAMES[r['method']]} {_interval(r)}" for r in rs)
        return f" ({'; '.join(items)})" if rs else ""

    lo, hi, neither = _by_sign(rows)
    return (f"{below} with an interval excluding 0 in {len(lo)}{named(lo)}, {above} in {len(hi)}{named(hi)}, not "
            f"distinguishable in {len(neither)} of {len(lo) + len(hi) + len(neither)} method x cell comparisons")


def label_semantics_note(name: str, rows: list[dict]) -> str | None:
    """The verdict's bullet on one label-text ablation: where is the label's meaning what helps, where does no
    gain from it show, and how large a gain the intervals still allow there."""
    lower, higher, unresolved = _by_sign(rows)
    if not (lower or higher or unresolved):
        return None
    said = [f"- Label semantics ({ABLATION_TEXT[name]}): {_sign_text(rows, 'lower than with the real label texts', 'higher')}"]
    if lower:
        said.append("where lower, the real label's meaning is what helps")
    if higher:
        said.append("where higher, the real label texts do worse than these")
    if unresolved:
        bound = max(-r["lo"] for r in unresolved)  # the largest gain (real minus ablated) the intervals allow
        said.append("where not distinguishable, no gain from the label's meaning shows"
                    + (f", though gains up to {bound:.3f} are not ruled out by the intervals" if bound > 0
                       else " (the intervals rule out any)"))
    return "; ".join(said) + "."


def a5_note(abl_rows: list[dict], contrasts: list[dict]) -> str | None:
    """The verdict's bullet on the A.5 variant: below per_token? By capacity or by its warm start?"""
    warm = _signs([r for r in abl_rows if r["ablation"] == "variant_paper"])
    cap = _signs([c for c in contrasts if c["contrast"] == "capacity"])
    start = _signs([c for c in contrasts if c["contrast"] == "warm start"])
    if not (warm[2] or cap[2] or start[2]):
        return None
    parts = ([f"below per-token, both warm-started, with an interval excluding 0 in {warm[0]} of {warm[2]} cells"]
             if warm[2] else [])
    parts += [f"below it with neither warm-started in {cap[0]}, above it in {cap[1]} of {cap[2]}"] if cap[2] else []
    parts += [f"its own warm start raises it in {start[1]}, lowers it in {start[0]} of {start[2]}"] if start[2] else []
    starts = [c for c in contrasts if c["contrast"] == "warm start" and c["diff"] is not None]
    open_starts = [c for c in _by_sign(starts)[2] if c["lo"] < 0]  # a fall the intervals still allow

    def named(what: str) -> str:  # " (minilm/sst2 -0.070 [-0.097, -0.044] *, 3 seeds)"
        rows = [c for c in contrasts if c["contrast"] == what and c["diff"] is not None]
        return " (" + "; ".join(f"{c['model']}/{c['dataset']} {_interval(c)}, {c['n']} seeds" for c in rows) + ")"

    if not (cap[2] and start[2]):
        reading = "the contrasts that tell capacity from warm start are still running"
    elif cap[0] == cap[2] and start[0] == start[2]:
        reading = (f"**both**: below per-token without either warm start{named('capacity')}, and its warm start "
                   f"lowers it further{named('warm start')}")
    elif cap[0] == cap[2] and not start[0]:
        reading = f"**capacity**: below per-token without either warm start{named('capacity')}; " + (
            "whether its warm start lowers it further is not resolved ("
            + "; ".join(f"{c['model']}/{c['dataset']} {_interval(c)}" for c in open_starts) + ")"
            if open_starts else "its warm start does not lower it (the intervals rule that out)")
    elif not cap[0] and start[0] == start[2]:
        reading = (f"**its warm start**: without one it is not below per-token{named('capacity')}, and the warm "
                   f"start lowers it{named('warm start')}")
    else:  # name what each cell says: a disagreement between cells is a finding too
        done = [c for c in contrasts if c["diff"] is not None]
        cells = dict.fromkeys((c["model"], c["dataset"]) for c in done)
        said = "; ".join(f"{m}/{d}: " + ", ".join(f"{c['contrast']} {_interval(c)}" for c in done
                                                  if (c["model"], c["dataset"]) == (m, d)) for m, d in cells)
        reading = f"**not resolved** by these runs (no difference resolved, or the cells disagree: {said})"
    note = f"- The A.5 pooling variant, weak by capacity or by its warm start? {'; '.join(parts)}: {reading}"
    if any(c["chance_a"] or c["chance_b"] for c in starts):  # a collapsed seed: what an ill-conditioned start does
        def arm(key: str, runs: str) -> str:
            named = [f"{c['model']}/{c['dataset']} seed {seed}: {_metric_name(c['metric'])} {score:.3f}"
                     for c in starts for seed, score in c[key]]
            return (f"{len(named)} of {sum(c[runs] for c in starts)}"
                    + (f" ({'; '.join(named)})" if named else ""))
        note += (f". Runs of the A.5 variant ending at chance on their own (no better than ignoring the text): "
                 f"with its warm start {arm('chance_a', 'runs_a')}, without it {arm('chance_b', 'runs_b')}")
    return note + "."


def warm_start_note(rows: list[dict]) -> str | None:
    """The verdict's bullet on ltune's label warm start (init_from_label; the paper does not say how its maps
    start): L-Tuning without it against with it, at the learning rates tuned with it."""
    rows = [r for r in rows if r["ablation"] == "warm_start_off" and r["diff"] is not None]
    if not rows:
        return None
    lower = _by_sign(rows)[0]
    return ("- The label warm start (method.init_from_label, ltune's default; the paper does not say how its maps "
            f"start, docs/methods.md): without it, {_sign_text(rows, 'lower', 'higher')}"
            + ("; where lower, the L-Tuning scores above owe that much to ltune's start: started as the paper leaves "
               "it, L-Tuning scores lower (at the learning rates tuned with the warm start, not retuned without it)"
               if lower else "") + ".")


def ablation_table(rows: list[dict]) -> list[str]:
    out = ["## Ablations", ""]
    if not rows:
        return out + ["No ablation run has completed yet (`make study STAGE=ablate`).", ""]
    out += ["Each ablation against the same method with its real label texts and defaults (the final stage's "
            "runs, same seeds). An ablation runs with the values tuned for the method it varies (learning rate "
            "included), not retuned for itself: a gap measures the change at that setting; "
            "difference with a 95% paired bootstrap interval, `*`: excludes 0"
           + _paired_key(rows, "the ablation and the final stage ran different seeds (ablate.seeds, "
                               "ablate.seeds_by_cell)"), "",
            "| model | dataset | method | ablation | score | with real labels | difference |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['dataset']} | {METHOD_NAMES[r['method']]} | "
                   f"{ABLATION_TEXT.get(r['ablation'], r['ablation'])} | {r['score']} | {r['real']} | {_diff_cell(r)} |")
    return out + [""]


def _paired(r: dict) -> str:
    """" (n=3 paired)" where a difference pairs fewer seeds than its two sides ran (an ablation given more
    or fewer seeds than the final stage): each score's n counts all its runs, the difference the shared seeds."""
    return f" (n={r['n']} paired)" if r.get("unpaired_seeds") else ""


def _diff_cell(r: dict) -> str:
    """A table's difference cell: the interval, and how many seeds it pairs where not all; empty without one."""
    return "" if r["diff"] is None else _interval(r) + _paired(r)


def _paired_key(rows: list[dict], why: str) -> str:
    """The end of a difference table's intro: the `n=k paired` key (`why` the sides' seeds differ) where a
    row pairs fewer seeds than its sides ran, else a full stop."""
    return (f"; `n=k paired`: {why}, and the difference uses the k both have."
            if any(r.get("unpaired_seeds") for r in rows) else ".")


def _tally(diffs: list[dict]) -> str:
    better = sum(d["excludes_zero"] and d["better"] for d in diffs)
    worse = sum(d["excludes_zero"] and d["better"] is False for d in diffs)
    return (f"L-Tuning ahead with an interval excluding 0 in {better}, behind in {worse}, "
            f"not distinguishable from its baseline in {len(diffs) - better - worse} of {len(diffs)}")


def tuning_note(chosen: dict, spec: dict) -> str | None:
    """The verdict's bullet on equal tuning: how many tuned choices sit at an edge of the scales tried,
    and how many of the plan's own (not borrowed) choices are still to be made."""
    tuned = {k: v for k, v in chosen.items() if "tuned_on" not in v and "tuning" not in v}
    lent = study.borrowed(spec)
    own = {(*cell, method) for cell in study.cells(spec) if cell not in lent for method in spec["methods"]}
    running = len(own - set(tuned))
    if not (tuned or running):
        return None
    if not tuned:
        return f"- Equal tuning: all {running} choices are still being tuned."
    edges = sorted("/".join(k) for k, v in tuned.items() if at_grid_edge(v))
    text = (f"{len(edges)} of {len(tuned)} tuned choices {'lies' if len(edges) == 1 else 'lie'} at an edge of the "
            f"learning-rate scales tried, the grid's extensions included ({', '.join(edges)}); the best may lie beyond "
            "them." if edges else
            f"none of the {len(tuned)} tuned choices lies at an edge of the learning-rate scales tried (the grid's "
            "extensions included): each is a best with a worse scale on either side.")
    return f"- Equal tuning: {text}" + (f" {running} more {'is' if running == 1 else 'are'} still being tuned."
                                        if running else "")


def _judgement(up: int, down: int, n: int) -> str:
    """A claim's verdict from n comparisons: `up` resolved in its favour, `down` against it."""
    if up == n:
        return "**supported**"
    if down == n:
        return "**contradicted**"
    if up and down:  # which way most of them go, and how many each way: "mixed" alone hides 1 for, 5 against
        lean = "" if up == down else f", mostly {'for' if up > down else 'against'} it"
        return f"**mixed**{lean} ({up} for, {down} against, of {n})"
    if up:
        return f"**partly supported** ({up} of {n})"
    if down:
        return f"**partly contradicted** ({down} of {n})"
    return "**not supported**, no difference resolved"


def pending_note(spec: dict, table) -> str | None:
    """The verdict's first bullet while the plan's final or ablation runs are incomplete: which cells'
    runs are still to come, so no judgement below reads as the study's last word."""
    parts = []
    for stage, what in (("final", "final runs"), ("ablate", "ablation runs")):
        planned = Counter((j.model, j.dataset) for j in study.planned_jobs(spec, stage))
        rows = table[table["stage"] == stage] if not table.empty else table
        done = Counter() if rows.empty else Counter(zip(rows["model"], rows["dataset"], strict=True))
        if short := [f"{m}/{d} {done[(m, d)]} of {n}" for (m, d), n in planned.items() if done[(m, d)] < n]:
            parts.append(f"{what} {', '.join(short)}")
    if not parts:
        return None
    return (f"- Provisional: the study is still running (completed so far: {'; '.join(parts)}); each judgement "
            "below covers the runs completed so far, and the cells still to come can change it.")


def verdict(spec: dict, diffs: list[dict], steps: list[dict], abl: list[dict], chosen: dict,
            plateau: list[dict] = (), contrasts: list[dict] = (), pending: str | None = None,
            label_framed: list[dict] = ()) -> list[str]:
    """Every clause is computed from the tables above (`pending`: pending_note's bullet, if any)."""
    out = ["## Verdict", ""]
    if not diffs:
        return out + ["Not yet: no final runs of an L-Tuning / baseline pair have completed.", ""]
    if pending:
        out.append(pending)
    kinds = {m: study.model_kind(m) for m in spec["cells"]}
    chance = [(r["model"], r["dataset"]) for r in plateau if r["learnt"] is False]
    for kind, claim in (("encoder", "+0-2 points over prefix / prompt tuning on BERT-size encoders"),
                        ("decoder", "+2-6 points on 7B decoders")):
        every = [d for d in diffs if kinds[d["model"]] == kind]
        mine = [d for d in every if (d["model"], d["dataset"]) not in chance and not d.get("at_chance")]
        left = len(every) - len(mine)
        note = f"; {left} more, where neither method of the pair beats chance, left out: see Learning" if left else ""
        if not mine:
            if every:
                out.append(f"- Scores, the paper's {claim}, on {', '.join(sorted({d['model'] for d in every}))} "
                           f"({kind}): **not testable here**: in every comparison neither method beats chance (see "
                           "Learning).")
            continue
        models = ", ".join(sorted({d["model"] for d in mine}))
        by_metric: dict[str, list[float]] = {}  # a mean over MCC and accuracy differences would mix scales
        judged_on: dict[str, dict] = {}  # metric -> the datasets judged by it, in order
        for d in mine:
            metric = study.primary_metric(d["dataset"])
            by_metric.setdefault(metric, []).append(d["diff"])
            judged_on.setdefault(metric, {})[d["dataset"]] = None
        mean = "; ".join(f"{_metric_name(m)} {sum(v) / len(v):+.3f} over {len(v)}" for m, v in sorted(by_metric.items()))
        better = sum(d["excludes_zero"] and d["better"] for d in mine)
        worse = sum(d["excludes_zero"] and d["better"] is False for d in mine)
        judged = [f"{_metric_name(m)} on {', '.join(judged_on[m])}" for m in sorted(by_metric) if m != "accuracy"]
        judged += (["accuracy elsewhere" if judged else "accuracy"] if "accuracy" in by_metric else [])
        out.append(f"- Scores, the paper's {claim}, on {models} ({kind}): {_judgement(better, worse, len(mine))}. "
                   f"{_tally(mine)} model x dataset x pair comparisons ({', '.join(judged)}{note}); mean "
                   f"difference, per metric: {mean}.")
    if chance:
        out.append(f"- Learning: in {len(chance)} of {len(plateau)} cells ({', '.join('/'.join(c) for c in chance)}) "
                   "not even the best method ends above chance (dev split, primary metric: accuracy against always "
                   "answering the majority class, MCC against 0, by more than 2 standard errors): every method is at "
                   "chance there at this budget, so their comparisons "
                   "test nothing for or against L-Tuning and the score judgements leave them out"
                   + "".join(_pilot_clause(r) for r in plateau if r["learnt"] is False) + ".")
    if pairs := [d for d in diffs if d.get("at_chance") and (d["model"], d["dataset"]) not in chance]:
        named = ", ".join(f"{d['model']}/{d['dataset']} {METHOD_NAMES[d['lt']]} vs {d['baseline']}" for d in pairs)
        out.append(f"- Learning, per pair: in {len(pairs)} comparison{'s' * (len(pairs) != 1)} in cells where a method "
                   f"learns, neither method of the pair beats chance ({named}); the score judgements leave "
                   f"{'them' if len(pairs) != 1 else 'it'} out too.")
    if steps:
        def race(rows, lt_key, base_key):
            lt, base = [s[lt_key] for s in rows], [s[base_key] for s in rows]
            faster = sum(a is not None and (b is None or a < b) for a, b in zip(lt, base, strict=True))
            slower = sum(b is not None and (a is None or a > b) for a, b in zip(lt, base, strict=True))
            return faster, slower, len(rows) - faster - slower

        real = [s for s in steps if not s["trivial"]]
        faster, slower, same = race(real, "lt_steps_common", "baseline_steps_common")
        f2, s2, same2 = race(real, "lt_steps", "baseline_steps")
        left_out = len(steps) - len(real)
        out.append("- Faster convergence (the paper's Fig. 2): "
                   + (f"{_judgement(faster, slower, len(real))}. To the level both reach (the lower of the two final "
                      f"scores), L-Tuning gets earlier in {faster}, later in {slower}, at the same step in {same} of "
                      f"{len(real)} pairs; to its baseline's final score, earlier in {f2}, later (or never) in {s2}, "
                      f"at the same step in {same2}" if real else "not testable here")
                   + (f" ({left_out} pair{'s' * (left_out != 1)} left out: neither method ends above chance)."
                      if left_out else "."))
    for name in ("labels_meaningless", "labels_swapped"):
        if note := label_semantics_note(name, [r for r in abl if r["ablation"] == name]):
            out.append(note)
    if note := a5_note(abl, contrasts):
        out.append(note)
    if note := warm_start_note(abl):
        out.append(note)
    if framing := [r for r in abl if r["ablation"] == "pair_framing" and r["diff"] is not None]:
        given = [r for r in label_framed if r["diff"] is not None]
        out.append("- The framing alone (a baseline scoring (text, label) pairs with random per-label tokens instead of "
                   f"its K-way head): {_sign_text(framing, 'lower', 'higher')}"
                   + ("; the label text within that framing (L-Tuning against its baseline framed the same way, each "
                      f"at its own tuned values): L-Tuning {_sign_text(given, 'lower', 'higher')}" if given else "")
                   + ".")
    if note := tuning_note(chosen, spec):
        out.append(note)
    if moving := [f"{r['model']}/{r['dataset']} at {r['curve'][-1][0]}" for r in plateau if not r["plateaued"]]:
        out.append(f"- Budget: the best method had not plateaued within its step budget in {len(moving)} of "
                   f"{len(plateau)} cells ({', '.join(moving)} steps: its accuracy moved by more than "
                   f"{PLATEAU_TOLERANCE} over its last evaluations); there the scores compare every method at one "
                   "budget, not at convergence.")
    if others := [_moving_text(r, o) for r in plateau for o in r.get("others_moving", [])]:
        out.append(f"- Budget, the other methods: {len(others)} method x cell{'s' * (len(others) != 1)} still moved by "
                   f"more than {PLATEAU_TOLERANCE} over the last evaluations ({'; '.join(others)}): the score "
                   "differences there are measured at this budget, and more steps might change them.")
    out += ["- Untested here: the paper's 7B models (Falcon, Bloom, Llama-2) and its base-size encoders with the hub "
            "weights. The same protocol at that scale (conf/study/reproduce_gpu.yaml), on a GPU machine with the hub: "
            f"`{GPU_COMMAND}`.", ""]
    return out


def _pilot_clause(row: dict) -> str:
    """Whether the cell's pilot (a longer budget) learnt where its final runs did not."""
    cell, p = f"{row['model']}/{row['dataset']}", row.get("pilot")
    if not p:
        return f"; {cell} had no pilot at a longer budget"
    level = (f"{METHOD_NAMES[p['best']]} {_metric_name(p['metric'])} {p['score']:.3f} vs chance {p['chance']:.3f} on "
             f"{p['texts']} held-out train texts at {p['steps']} steps, default learning rates")
    if not p["learnt"]:
        runs = f"{p['methods']} run{'s' * (p['methods'] != 1)}"
        return f"; in {cell}'s pilot no method learns either (best of {runs}: {level}): a longer budget did not lift it"
    return (f"; but in {cell}'s pilot {', '.join(METHOD_NAMES[m] for m in p['learnt'])} "
            f"learn{'s' * (len(p['learnt']) == 1)} (best: {level}): its budget may be what holds it at chance")


def _metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _with_columns(table):
    """No completed run yet: an empty table with the columns the sections read."""
    return table.reindex(columns=["stage", "model", "dataset", "method", "wall_time_s", "accuracy", "mcc", "run_dir",
                                  "ablation", "trainable_params"]) if table.empty else table


README_BEGIN = "<!-- study results: written by `make results` from the run folders; do not edit by hand -->"
README_END = "<!-- end of study results -->"


def headline(spec: dict, table, final: dict, diffs: list[dict], verdict_lines: list[str], md: str) -> list[str]:
    """The README's results block: progress, one row per model x dataset with every method's
    primary metric and both differences, and the verdict's bullets (RESULTS.md's numbers)."""
    done = (table["stage"] == "final").sum()
    hours = float(table["wall_time_s"].sum()) / 3600
    n_old, old_hours = superseded(spec)
    spent = (f"{hours + old_hours:.1f} CPU hours in all ({old_hours:.1f} of them on {n_old} run{'s' * (n_old != 1)} "
             "a plan change superseded)" if n_old else f"{hours:.1f} CPU hours in all stages")
    out = [f"Study `{spec['name']}` ([{md}]({md}), `make results`): {done} of {len(study.planned_jobs(spec, 'final'))} "
           f"final runs completed so far, {spent}. Dev-split score (CoLA: MCC; else "
           "accuracy), mean ± std over seeds (n); L-Tuning minus its baseline with a 95% paired bootstrap interval "
           "(`*`: excludes 0).", ""]
    if not final:
        return out + ["No final run has completed yet."]
    pairs = [(lt, b) for lt, b in BASELINE_OF.items() if {lt, b} <= set(spec["methods"])]
    out += ["| model | dataset | " + " | ".join([METHOD_NAMES[m] for m in spec["methods"]]
                                               + [f"{METHOD_NAMES[lt]} − {b}" for lt, b in pairs]) + " |",
            "|---|---|" + "---|" * (len(spec["methods"]) + len(pairs))]
    by_cell = {(d["model"], d["dataset"], d["lt"]): d for d in diffs}
    for model, dataset in study.cells(spec):
        if not any(k[:2] == (model, dataset) for k in final):
            continue
        metric = study.primary_metric(dataset)
        scores = [_mean_std(r.final.get(metric) for r in final.get((model, dataset, m), [])) for m in spec["methods"]]
        gaps = []
        for lt, _ in pairs:
            d = by_cell.get((model, dataset, lt))
            gaps.append("" if d is None or d["diff"] is None else _interval(d))
        out.append(f"| {model} | {dataset} | " + " | ".join(scores + gaps) + " |")
    return out + ["", *[v for v in verdict_lines if v.startswith("- ")]]


def _readme_around(path: Path) -> tuple[str, str]:
    """The README's text before README_BEGIN and after README_END (checked before anything is written)."""
    from ltune_cli.errors import LtuneError

    fix = (f"the study plan's results.readme needs one line `{README_BEGIN}` and one line `{README_END}` where "
           "the results go; add them, or drop results.readme from the plan.")
    try:
        text = path.read_text()
    except OSError as e:
        raise LtuneError(f"{path}: cannot read it ({e.strerror}); {fix}") from None
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or text.index(README_BEGIN) > text.index(README_END):
        raise LtuneError(f"{path}: {fix}")
    head, rest = text.split(README_BEGIN, 1)
    return head, rest.split(README_END, 1)[1]


def render(spec: dict, table, final: dict, figures: list[str] | None = None, csv: str = "",
           md_link: str = "docs/RESULTS.md") -> tuple[str, list[str]]:
    """docs/RESULTS.md from the runs table and the final runs, and the README's headline block
    (its link to the markdown: `md_link`): one analysis for both."""
    table = _with_columns(table)
    abl = load_stage_runs(spec, table, "ablate")
    diffs = differences(spec, final)
    steps = steps_to_target(spec, final)
    abl_rows = ablations(spec, final, abl)
    contrasts = a5_contrasts(abl)
    chosen = study.choose(spec, study.root_of(spec), strict=False)
    plateau = plateau_rows(spec, final)
    longer = pilot_learning(spec, table)
    for r in plateau:
        r["pilot"] = longer.get((r["model"], r["dataset"]))
    framed = label_in_framing(final, abl)
    verdict_lines = verdict(spec, diffs, steps, abl_rows, chosen, plateau, contrasts, pending_note(spec, table), framed)
    out = [f"# Study `{spec['name']}`: does L-Tuning beat prefix and prompt tuning?", "",
           "Generated by `make results` (`python -m ltune_cli.study results`) from the run folders under "
           f"`outputs/study/{spec['name']}` (plan: conf/study/{spec['name']}.yaml); the per-run CSV is "
           f"`{csv or outputs_of(spec)[1]}`. Do not edit by hand.", ""]
    out += verdict_lines
    out += progress(spec, table) + setup_table(spec, final) + table1(spec, final) + differences_table(diffs) + steps_table(steps, spec)
    out += budget_check(spec, plateau)
    out += figures_section(spec, figures or []) + ablation_table(abl_rows) + a5_table(contrasts)
    out += framing_table(framed) + cost_table(spec, table)
    out += chosen_table(spec, table, chosen) + pilot(spec, table)
    return "\n".join(out).rstrip("\n") + "\n", headline(spec, table, final, diffs, verdict_lines, md_link)


def _check_nothing_dropped(spec: dict, table, csv: Path) -> None:
    """The runs the report at `csv` lists must still be completed runs of the plan, or moved by a
    plan change to superseded/<change>/ (their run folder path below it): a report written from
    another outputs folder, or before the runs were fetched, would drop them silently."""
    import pandas as pd

    try:
        before = pd.read_csv(csv, usecols=["stage", "run_dir"])
    except FileNotFoundError:
        return
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return  # not a runs CSV of ours (no such columns): nothing of the study to lose
    now = set(zip(table.get("stage", []), table.get("run_dir", [])))
    root = study.root_of(spec)
    superseded = root / "superseded"
    changes = [c for c in superseded.iterdir() if c.is_dir()] if superseded.is_dir() else []
    gone = [f"{st}: {rd}" for st, rd in zip(before["stage"], before["run_dir"])
            if (st, rd) not in now and not any((c / rd / "results.json").is_file() for c in changes)]
    if gone:
        raise LtuneError(f"{csv} lists {len(gone)} runs that are not completed runs of the plan under "
                         f"{root} now (first: {gone[0]}), and the report would drop them: point "
                         f"LTUNE_OUTPUTS at the study's outputs, or, if they were moved out on purpose "
                         f"(superseded/), write it with --drop-missing (make results ARGS=--drop-missing).")


def write_results(spec: dict, md: Path, csv: Path, figures: bool = True, readme: Path | None = None,
                  drop_missing: bool = False) -> None:
    """The markdown, the per-run CSV, (figures) the curves beside the CSV and (readme) the headline
    block of the README. A report that would leave out runs the CSV there lists (the run folders
    elsewhere, e.g. LTUNE_OUTPUTS set to another folder) is an error unless `drop_missing`."""
    import os

    if readme is not None:
        _readme_around(readme)  # a README without its markers fails before anything is written
    table = study.runs_table(spec)
    if not drop_missing:
        _check_nothing_dropped(spec, table, csv)
    csv.parent.mkdir(parents=True, exist_ok=True)
    runfolder.atomic_write_text(csv, table.to_csv(index=False))
    final = load_stage_runs(spec, _with_columns(table), "final")  # read once: the figures and the markdown
    pngs = write_figures(spec, final, csv.parent) if figures else []
    links = [os.path.relpath(p, md.parent) for p in pngs]
    markdown, block = render(spec, table, final, links, str(csv),
                             os.path.relpath(md, readme.parent) if readme is not None else str(md))
    runfolder.atomic_write_text(md, markdown)
    if readme is not None:
        head, tail = _readme_around(readme)  # read again: keeps edits made while the report was computed
        runfolder.atomic_write_text(readme, head + "\n".join([README_BEGIN, *block, README_END]) + tail)
