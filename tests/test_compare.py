"""`ltune compare` over synthetic run folders written exactly per the runfolder contract."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from ltune_cli.errors import LtuneError
from ltune_cli.metrics import classification_scores, macro_f1, matthews_corrcoef
from ltune_cli.report import compare, default_out_dir, render_console
from ltune_cli.report.stats import cell_rng, metric_from_confusion, paired_bootstrap
from ltune_cli.runfolder import SCHEMA, read_results

SRC = Path(__file__).resolve().parents[1] / "src"
LT_METHODS = ("lt_prefix", "lt_prompt")


# ----------------------------------------------------------------------------- helpers


def gold_labels(dataset: str, n: int) -> np.ndarray:
    """The dataset's eval gold labels: identical for every run of that dataset."""
    return np.random.default_rng(zlib.crc32(dataset.encode())).integers(0, 2, n)


def make_preds(gold: np.ndarray, correct: float, flip_seed: int) -> np.ndarray:
    """Predictions with exactly round(correct * n) right answers, errors placed by flip_seed."""
    n = gold.size
    wrong = np.random.default_rng(flip_seed).choice(n, n - round(correct * n), replace=False)
    pred = gold.copy()
    pred[wrong] = 1 - pred[wrong]
    return pred


def write_run(
    root: Path,
    method: str,
    *,
    model: str = "minilm",
    dataset: str = "sst2",
    seed: int = 0,
    variant: str = "per_token",
    correct: float = 0.8,
    n_eval: int = 200,
    losses: tuple[float, ...] = (0.69, 0.6, 0.5),
    flip_seed: int | None = None,
    status: str = "completed",
    error: str | None = None,
    trainable: int = 1000,
    total: int = 100_000,
    name: str | None = None,
    config: dict | None = None,
) -> Path:
    """One run folder with config.yaml, metrics.jsonl, results.json and predictions.json.

    `config`: extra config.yaml keys, dotted ({"train.lr": 0.1}), as `ltune train` would store them.
    """
    tag = "" if variant == "per_token" else f"-{variant}"
    name = name or f"{method}{tag}-{model}-{dataset}-s{seed}"
    d = root / name
    d.mkdir(parents=True)
    primary = "mcc" if dataset == "cola" else "accuracy"
    gold = gold_labels(dataset, n_eval)
    fs = flip_seed if flip_seed is not None else zlib.crc32(f"{method}{variant}{model}{dataset}{seed}".encode())
    pred = make_preds(gold, correct, fs)
    steps = [100 * (i + 1) for i in range(len(losses))]
    final = None
    if status == "completed":
        final = {"step": steps[-1], **classification_scores(pred, gold), "val_loss": losses[-1]}
        if method in LT_METHODS:
            final["pair_accuracy"] = final["accuracy"] - 0.01
    results = {
        "schema": SCHEMA, "status": status, "error": error, "ltune_version": "0.1.0",
        "versions": {"python": "3.11.7"}, "git": {"commit": "abc123", "dirty": False},
        "created": "2026-11-29T02:00:00+00:00",
        "run": {"name": name, "method": method, "variant": variant, "model": model,
                "model_path": f"offline:{model}", "family": "bert", "dataset": dataset, "seed": seed},
        "seed": seed, "trainable_params": trainable, "total_params": total, "steps": steps[-1],
        "train_examples": 1000, "eval_examples": n_eval, "primary_metric": primary,
        "final": final, "best": final, "wall_time_s": 1.0, "train_time_s": 0.9,
    }
    cfg: dict = {"method": {"name": method}, "seed": seed}
    for key, value in (config or {}).items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "results.json").write_text(json.dumps(results))
    with open(d / "metrics.jsonl", "w") as f:
        for i, (step, loss) in enumerate(zip(steps, losses, strict=True)):
            f.write(json.dumps({"kind": "train", "step": step, "train_loss": loss + 0.05, "lr": 1e-3,
                                "examples_per_s": 50.0, "time_s": float(i)}) + "\n")
            ev = {"kind": "eval", "step": step, "val_loss": loss, "time_s": float(i)}
            if final is not None:
                frac = (i + 1) / len(steps)
                ev.update({k: final[k] * frac for k in ("accuracy", "mcc", "macro_f1")})
            f.write(json.dumps(ev) + "\n")
    if status == "completed":
        (d / "predictions.json").write_text(json.dumps(
            {"gold": gold.tolist(), "pred": pred.tolist(), "label_texts": ["negative", "positive"]}))
    else:
        (d / "error.txt").write_text(error or "")
    return d


# Accuracy per (method, dataset) per seed: L-Tuning clearly ahead on sst2; mixed on cola.
ACC = {
    ("prefix", "sst2"): (0.60, 0.62, 0.58), ("lt_prefix", "sst2"): (0.90, 0.88, 0.91),
    ("prompt", "sst2"): (0.55, 0.57, 0.56), ("lt_prompt", "sst2"): (0.70, 0.72, 0.69),
    ("prefix", "cola"): (0.70, 0.72, 0.71), ("lt_prefix", "cola"): (0.75, 0.74, 0.73),
}
LOSSES = {"prefix": (0.69, 0.62, 0.55, 0.5), "lt_prefix": (0.6, 0.45, 0.40, 0.38),
          "prompt": (0.69, 0.67, 0.66, 0.65), "lt_prompt": (0.69, 0.68, 0.67, 0.66)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep folder: 4 methods x 2 datasets x 2 models x 3 seeds, a paper variant and a failed run."""
    root = tmp_path_factory.mktemp("sweep")
    for (method, dataset), accs in ACC.items():
        for model, total in (("minilm", 100_000), ("bert", 1_000_000)):
            for seed, acc in enumerate(accs):
                write_run(root, method, model=model, dataset=dataset, seed=seed, correct=acc,
                          losses=LOSSES[method], trainable=2000 if method in LT_METHODS else 1000, total=total)
    for seed in range(2):
        write_run(root, "lt_prefix", variant="paper", seed=seed, correct=0.8, losses=LOSSES["lt_prefix"])
    write_run(root, "prefix", seed=7, status="failed", error="CUDA out of memory | tried 2 GiB", n_eval=200)
    return root


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report")
    files = compare([str(sweep)], str(out), n_boot=400, seed=0)
    return {"files": files, "json": json.loads(files["json"].read_text())}


def expected_cells(sweep: Path, metric_of) -> dict:
    """mean/std/n per (method, variant, dataset, model), recomputed straight from results.json."""
    groups: dict[tuple, list[float]] = {}
    for p in sweep.rglob("results.json"):
        res = read_results(p.parent)
        if res["status"] != "completed":
            continue
        r = res["run"]
        variant = "" if r["variant"] == "per_token" else r["variant"]
        key = (r["method"], variant, r["dataset"], r["model"])
        groups.setdefault(key, []).append(res["final"][metric_of(r["dataset"])])
    return {k: (np.mean(v), np.std(v, ddof=1) if len(v) > 1 else None, len(v)) for k, v in groups.items()}


# ----------------------------------------------------------------------------- (a) table numbers


def test_table_mean_std_n_match_results(sweep, report):
    table = report["json"]["tables"][0]
    want = expected_cells(sweep, lambda d: "mcc" if d == "cola" else "accuracy")
    got = {(c["method"], c["variant"], c["dataset"], c["model"]): c for c in table["cells"]}
    assert set(got) == set(want)
    for key, (mean, std, n) in want.items():
        assert got[key]["mean"] == pytest.approx(mean, abs=1e-12)
        assert got[key]["n"] == n
        assert (got[key]["std"] is None) if std is None else got[key]["std"] == pytest.approx(std, abs=1e-12)
        assert got[key]["metric"] == ("mcc" if key[2] == "cola" else "accuracy")
    # Row order follows the paper, with the paper variant as its own row.
    assert table["rows"] == ["prefix", "prompt", "lt_prefix", "lt_prefix (paper)", "lt_prompt"]
    # The second table is accuracy everywhere (CoLA's primary metric is mcc).
    acc_table = report["json"]["tables"][1]
    want_acc = expected_cells(sweep, lambda d: "accuracy")
    for c in acc_table["cells"]:
        assert c["metric"] == "accuracy"
        assert c["mean"] == pytest.approx(want_acc[(c["method"], c["variant"], c["dataset"], c["model"])][0])


def test_csv_has_one_line_per_run_and_per_cell(sweep, report):
    rows = list(csv.DictReader(report["files"]["csv"].open()))
    assert list(rows[0])[:14] == ["kind", "row", "method", "variant", "settings", "dataset", "model", "seed", "n",
                                  "status", "name", "path", "eval_examples", "trainable_params"]
    runs = [r for r in rows if r["kind"] == "run"]
    assert len(runs) == len(list(sweep.rglob("results.json")))  # every folder, the failed one too
    for r in runs:
        res = read_results(r["path"])
        assert r["status"] == res["status"] and int(r["seed"]) == res["seed"]
        if res["status"] == "completed":
            assert float(r["accuracy"]) == res["final"]["accuracy"] and float(r["val_loss"]) == res["final"]["val_loss"]
    want = expected_cells(sweep, lambda d: "accuracy")
    summary = [r for r in rows if r["kind"] == "summary"]
    assert len(summary) == len(want)
    for r in summary:
        mean, std, n = want[(r["method"], r["variant"], r["dataset"], r["model"])]
        assert float(r["accuracy"]) == pytest.approx(mean) and int(r["n"]) == n
        assert float(r["accuracy_std"]) == pytest.approx(std)
    lt = [r for r in summary if r["method"] == "lt_prefix" and r["variant"] == ""]
    assert {r["trainable_params"] for r in lt} == {"2000"}
    assert all(r["pair_accuracy"] for r in lt)
    assert not any(r["pair_accuracy"] for r in summary if r["method"] == "prefix")


# ----------------------------------------------------------------------------- (b) best marking


def test_best_per_column_higher_is_better(report):
    table = report["json"]["tables"][0]
    for col in table["columns"]:
        cells = [c for c in table["cells"] if (c["dataset"], c["model"]) == (col["dataset"], col["model"])]
        best = max(cells, key=lambda c: c["mean"])
        assert [c["row"] for c in cells if c["best"]] == [best["row"]]
    md = report["files"]["markdown"].read_text()
    assert "**" in md.split("## Accuracy")[0]


def test_best_per_column_lower_is_better(sweep, tmp_path):
    files = compare([str(sweep)], str(tmp_path / "loss"), metric="val_loss", n_boot=50)
    table = json.loads(files["json"].read_text())["tables"][0]
    for col in table["columns"]:
        cells = [c for c in table["cells"] if (c["dataset"], c["model"]) == (col["dataset"], col["model"])]
        lowest = min(c["mean"] for c in cells)
        assert [c["row"] for c in cells if c["best"]] == [c["row"] for c in cells if c["mean"] == pytest.approx(lowest)]
        assert all(c["mean"] < 0.6 for c in cells if c["best"])  # the L-Tuning rows, never prompt's 0.65
    assert {c["metric"] for c in table["columns"]} == {"val_loss"}


def test_unknown_metric_suggests(sweep, tmp_path):
    with pytest.raises(LtuneError, match="Did you mean 'accuracy'"):
        compare([str(sweep)], str(tmp_path / "x"), metric="acuracy")


# ----------------------------------------------------------------------------- (c) bootstrap


def test_difference_clear_effect_excludes_zero(report):
    diffs = {(d["lt"], d["dataset"], d["model"]): d for d in report["json"]["differences"]}
    d = diffs[("lt_prefix", "sst2", "minilm")]
    true = np.mean(ACC[("lt_prefix", "sst2")]) - np.mean(ACC[("prefix", "sst2")])
    assert d["baseline"] == "prefix" and d["n"] == 3 and d["pairing"] == "seeds x examples"
    assert d["diff"] == pytest.approx(true)
    assert d["lo"] < true < d["hi"] and d["lo"] > 0 and d["excludes_zero"] and d["better"]
    # The paper variant is paired with prefix on its two seeds.
    paper = diffs[("lt_prefix (paper)", "sst2", "minilm")]
    assert paper["seeds"] == [0, 1] and paper["unpaired_seeds"] == [2]
    assert any("lt_prefix (paper) vs prefix" in n and "[2]" in n for n in report["json"]["notes"])


def test_difference_identical_runs_includes_zero(tmp_path):
    for method in ("prefix", "lt_prefix"):
        for seed in range(2):
            write_run(tmp_path / "runs", method, seed=seed, correct=0.7, flip_seed=seed)
    files = compare([str(tmp_path / "runs")], str(tmp_path / "out"), n_boot=300)
    (d,) = json.loads(files["json"].read_text())["differences"]
    assert d["diff"] == 0 and d["lo"] <= 0 <= d["hi"] and not d["excludes_zero"]


def test_bootstrap_noisy_equal_methods_includes_zero_and_is_seeded():
    gold = gold_labels("x", 300)
    base, lt = make_preds(gold, 0.75, 1), make_preds(gold, 0.75, 2)  # same accuracy, different errors
    a = paired_bootstrap(gold, [base], [lt], "accuracy", cell_rng(0, "k"), n_boot=500)
    b = paired_bootstrap(gold, [base], [lt], "accuracy", cell_rng(0, "k"), n_boot=500)
    assert a == b and a[0] == 0 and a[1] < 0 < a[2]


def test_vectorised_metrics_match_metrics_module():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    pred[:5] = 0
    k = 3
    cm = np.zeros((1, k, k))
    np.add.at(cm[0], (gold, pred), 1)
    assert metric_from_confusion(cm, "mcc")[0] == pytest.approx(matthews_corrcoef(pred, gold))
    assert metric_from_confusion(cm, "macro_f1")[0] == pytest.approx(macro_f1(pred, gold))
    assert metric_from_confusion(cm, "accuracy")[0] == pytest.approx((pred == gold).mean())


# ----------------------------------------------------------------------------- steps, params


def test_steps_to_target_and_params(report):
    steps = {(s["lt"], s["dataset"], s["model"]): s for s in report["json"]["steps_to_target"]}
    cells = {(c["method"], c["dataset"], c["model"]): c["mean"] for c in report["json"]["tables"][0]["cells"]}
    s = steps[("lt_prefix", "sst2", "minilm")]
    # L-Tuning's pair BCE and the baseline's K-way cross-entropy are not on one scale: no loss target
    assert s["same_loss"] is False and s["target_val_loss"] is None and s["lt_steps_val_loss"] is None
    # accuracy curves rise as final x (1/4, 2/4, 3/4, 1): L-Tuning (~0.90) passes the baseline's final
    # (~0.60) at 3/4; the common target is the lower final, the baseline's, which it reaches at its end
    base, lt = cells[("prefix", "sst2", "minilm")], cells[("lt_prefix", "sst2", "minilm")]
    assert s["target_metric"] == pytest.approx(base) and s["target_common"] == pytest.approx(min(base, lt))
    assert (s["baseline_steps_metric"], s["lt_steps_metric"]) == (400, 300)
    assert (s["baseline_steps_common"], s["lt_steps_common"]) == (400, 300)
    md = report["files"]["markdown"].read_text()
    assert "common target: L-Tuning" in md and "val_loss: target" not in md  # no pair trains one loss
    assert any("not on one scale" in n for n in report["json"]["notes"])
    params = {(p["label"], p["model"]): p for p in report["json"]["params"]}
    assert params[("lt_prefix", "bert")]["trainable_params_max"] == 2000
    assert params[("prefix", "bert")]["trainable_fraction"] == pytest.approx(1000 / 1_000_000)


def test_steps_to_a_loss_target_where_both_train_one_loss_and_the_common_target(tmp_path):
    """A baseline in the pair framing trains L-Tuning's loss: its final val_loss is a target. The
    common target is the lower final accuracy: here L-Tuning's, which the baseline passes first."""
    for seed in range(2):
        write_run(tmp_path / "runs", "prefix", seed=seed, correct=0.9, losses=(0.69, 0.5, 0.4, 0.3),
                  config={"method.pair_framing": True})
        write_run(tmp_path / "runs", "lt_prefix", seed=seed, correct=0.6, losses=(0.69, 0.6, 0.5, 0.45))
    rep = json.loads(compare([str(tmp_path / "runs")], str(tmp_path / "out"), n_boot=50, seed=0)["json"].read_text())
    (s,) = rep["steps_to_target"]
    assert s["same_loss"] is True and s["target_val_loss"] == pytest.approx(0.3)
    assert (s["baseline_steps_val_loss"], s["lt_steps_val_loss"]) == (400, None)
    cells = {c["method"]: c["mean"] for c in rep["tables"][0]["cells"]}
    assert cells["lt_prefix"] < cells["prefix"] and s["target_common"] == pytest.approx(cells["lt_prefix"])
    assert (s["baseline_steps_common"], s["lt_steps_common"]) == (300, 400)
    assert (s["baseline_steps_metric"], s["lt_steps_metric"]) == (400, None)
    assert not any("not on one scale" in n for n in rep["notes"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "baseline's final val_loss: target" in md and "losses differ" not in md



# ----------------------------------------------------------------------------- (d) files


def test_all_files_written(report):
    files = report["files"]
    assert set(files) == {"markdown", "csv", "latex", "html", "curves_png", "curves_svg", "curves_pdf", "json"}
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
    assert files["curves_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in files["curves_svg"].read_text()
    assert files["curves_pdf"].read_bytes()[:5] == b"%PDF-"
    html = files["html"].read_text()
    assert "data:image/png;base64," in html and "lt_prefix (paper)" in html
    tex = files["latex"].read_text()
    assert r"\toprule" in tex and r"lt\_prefix" in tex and r"\textbf{" in tex
    assert report["json"]["schema"] == "ltune.compare/1"


def test_curves_svg_has_both_panels_and_editable_text(report):
    """svg.fonttype none: labels are <text> elements a person can edit, not glyph paths."""
    svg = report["files"]["curves_svg"].read_text()
    texts = {t.strip() for t in re.findall(r"<text\b[^>]*>([^<]*)</text>", svg)}
    assert {"validation loss", "accuracy", "MCC", "step", "cola", "sst2", "method", "model", "minilm", "bert",
            "lt_prefix (paper)"} <= texts
    assert len(re.findall(r'<g id="axes_\d+"', svg)) == 4  # (validation loss, accuracy) x 2 datasets
    html = report["files"]["html"].read_text()
    assert 'href="curves.svg"' in html and 'href="curves.pdf"' in html
    assert "(curves.svg)" in report["files"]["markdown"].read_text()


def test_curves_colour_per_method_style_per_model(report, tmp_path):
    from ltune_cli.report.plots import plot_curves

    curves = report["json"]["curves"]
    fig = plot_curves(curves, tmp_path / "c.png", tmp_path / "c.svg")
    panels = {tuple(ax.get_label().split(":")): ax for ax in fig.axes}
    # CoLA is judged by MCC: its lower panel shows that curve (report.json's records carry it)
    assert set(panels) == {("cola", "val_loss"), ("cola", "mcc"), ("sst2", "val_loss"), ("sst2", "accuracy")}
    assert {c["dataset"] for c in curves if c.get("score_key") == "mcc"} == {"cola"}
    assert panels[("cola", "mcc")].get_ylabel() == "MCC"
    for (dataset, _), ax in panels.items():
        mine = [c for c in curves if c["dataset"] == dataset]
        assert len(ax.lines) == len(mine)
        assert len({line.get_color() for line in ax.lines}) == len({c["label"] for c in mine})
        assert len({line.get_linestyle() for line in ax.lines}) == len({c["model"] for c in mine}) == 2
    acc = panels[("sst2", "accuracy")]
    top = max(max(line.get_ydata()) for line in acc.lines)
    assert top == pytest.approx(np.mean(ACC[("lt_prefix", "sst2")]))  # the seed-mean final accuracy
    loss = panels[("sst2", "val_loss")]
    assert min(min(line.get_ydata()) for line in loss.lines) == pytest.approx(LOSSES["lt_prefix"][-1])


def test_curves_each_dataset_on_its_own_step_axis(tmp_path):
    """Datasets with different budgets in one figure (a study: 600, 3000 steps): each dataset's two
    panels share one step axis, no other dataset's, and every accuracy panel labels its steps."""
    from ltune_cli.report.plots import plot_curves

    budgets = {"cola": 3000, "r8": 600, "rte": 600, "sst2": 600}
    curves = [{"dataset": d, "model": "minilm", "label": m, "steps": list(range(100, n + 1, 100)),
               "val_loss": [0.7] * (n // 100), "accuracy_steps": list(range(100, n + 1, 100)),
               "accuracy": [0.5 + k / 100 for k in range(n // 100)]}
              for d, n in budgets.items() for m in ("prefix", "LT-prefix")]
    fig = plot_curves(curves, tmp_path / "c.png", tmp_path / "c.svg")
    fig.canvas.draw()
    panels = {tuple(ax.get_label().split(":")): ax for ax in fig.axes}
    for d, n in budgets.items():
        loss, acc = panels[(d, "val_loss")], panels[(d, "accuracy")]
        assert acc.get_xlim() == loss.get_xlim() and n <= acc.get_xlim()[1] < 1.2 * n, (d, acc.get_xlim())
        shown = [t.get_text() for t in acc.get_xticklabels() if t.get_visible() and t.get_text()]
        assert shown and acc.xaxis.get_tick_params()["labelbottom"], d
        assert not loss.xaxis.get_tick_params()["labelbottom"]
    assert fig._suptitle.get_text().startswith("Validation loss and accuracy (minilm),")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["cola", "r8", "rte", "sst2"]  # by name, unless an order is given (a study's tables)
    fig = plot_curves(curves, tmp_path / "c.png", tmp_path / "c.svg", order=["sst2", "cola", "rte"])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["sst2", "cola", "rte", "r8"]


def test_curves_show_a_records_score_other_than_accuracy_in_its_lower_panel(tmp_path):
    """A study's CoLA records carry their primary metric (score_key "mcc"): its lower panel plots
    that curve, named MCC, and the title says so; other datasets keep accuracy."""
    from ltune_cli.report.plots import plot_curves

    def record(dataset, label, **extra):
        return {"dataset": dataset, "model": "minilm", "label": label, "steps": [100, 200], "val_loss": [0.7, 0.6],
                "accuracy_steps": [100, 200], "accuracy": [0.69, 0.70], **extra}

    curves = [record("cola", m, score_key="mcc", score_steps=[100, 200], score=[0.0, 0.2 + k / 10])
              for k, m in enumerate(("prefix", "LT-prefix"))] + [record("sst2", "prefix")]
    fig = plot_curves(curves, tmp_path / "c.png", tmp_path / "c.svg")
    panels = {tuple(ax.get_label().split(":")): ax for ax in fig.axes}
    assert set(panels) == {("cola", "val_loss"), ("cola", "mcc"), ("sst2", "val_loss"), ("sst2", "accuracy")}
    assert panels[("cola", "mcc")].get_ylabel() == "MCC" and panels[("sst2", "accuracy")].get_ylabel() == "accuracy"
    assert sorted(float(line.get_ydata()[-1]) for line in panels[("cola", "mcc")].lines) == pytest.approx([0.2, 0.3])
    assert fig._suptitle.get_text() == "Validation loss and accuracy (minilm; cola: MCC), mean over seeds"


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n")[1].split("\n## ")[0]


def _md_rows(section: str) -> list[list[str]]:
    """Body rows of the one pipe table in a Markdown section."""
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def test_markdown_html_latex_show_every_cell_and_run(sweep, report):
    md, html, tex = (report["files"][k].read_text() for k in ("markdown", "html", "latex"))
    table = report["json"]["tables"][0]
    rows = _md_rows(_section(md, "Primary metric"))
    assert [r[0] for r in rows] == table["rows"]  # one line per method row, in the paper's order
    main_html = html.split('id="T_main0"')[1].split("</table>")[0]
    assert main_html.split("<tbody>")[1].count("<tr>") == len(table["rows"])
    for c in table["cells"]:
        num = f"{100 * c['mean']:.2f}"
        col = 1 + next(i for i, k in enumerate(table["columns"]) if (k["dataset"], k["model"]) == (c["dataset"], c["model"]))
        cell = rows[table["rows"].index(c["row"])][col]
        assert cell.startswith(f"**{num}" if c["best"] else num) and cell.endswith(f"(n={c['n']})"), cell
        assert num in main_html and num in tex
        if c["best"]:
            assert re.search(rf'class="[^"]*\bbest\b[^"]*" >{num}', main_html)
            assert rf"\textbf{{{num}" in tex
    completed = [p.parent for p in sweep.rglob("results.json") if read_results(p.parent)["status"] == "completed"]
    runs = _md_rows(_section(md, "Runs"))
    assert sorted(r[-1] for r in runs) == sorted(map(str, completed))  # a line per run folder
    for r in runs:
        res = read_results(r[-1])
        metric = res["primary_metric"]
        assert r[3] == str(res["seed"]) and r[4] == f"{metric} {100 * res['final'][metric]:.2f}"
    (failed,) = _md_rows(_section(md, "Failed runs"))
    assert failed[2] == "CUDA out of memory \\| tried 2 GiB"  # the pipe does not split the row
    diffs = _md_rows(_section(md, "L-Tuning minus baseline"))
    assert len(diffs) == len(report["json"]["differences"]) and {r[7] for r in diffs} == {"**yes**", "no"}
    assert html.count('class="sig"') == 0 and len(re.findall(r'class="[^"]*\bsig\b', html)) == sum(
        d["excludes_zero"] for d in report["json"]["differences"])
    assert r"\multicolumn{2}{c}{sst2 (accuracy)}" in tex and "±" not in tex and "−" not in tex


def test_compare_format_prints_one_view(tmp_path):
    from typer.testing import CliRunner

    from ltune_cli.cli import app

    for method in ("prefix", "lt_prefix"):
        write_run(tmp_path / "runs", method)
    for fmt, name in (("csv", "results.csv"), ("md", "report.md"), ("latex", "tables.tex"), ("html", "report.html")):
        res = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--out", str(tmp_path / fmt), "--format", fmt])
        assert res.exit_code == 0, res.output
        assert res.stdout == (tmp_path / fmt / name).read_text()  # the file list goes to stderr
        assert f"markdown: {tmp_path / fmt / 'report.md'}" in res.stderr


def test_render_console(report):
    from rich.console import Console

    console = Console(record=True, width=200)
    render_console(report["files"], console)
    text = console.export_text()
    assert "lt_prefix (paper)" in text and "CUDA out of memory" in text and "report:" in text


# ----------------------------------------------------------------------------- (e) failed runs


def test_failed_run_listed_and_excluded(report):
    (failed,) = report["json"]["failed"]
    assert failed["name"] == "prefix-minilm-sst2-s7" and "CUDA out of memory" in failed["error"]
    cell = next(c for c in report["json"]["tables"][0]["cells"]
                if (c["row"], c["dataset"], c["model"]) == ("prefix", "sst2", "minilm"))
    assert cell["n"] == 3 and 7 not in cell["seeds"]
    md = report["files"]["markdown"].read_text()
    assert "prefix-minilm-sst2-s7" in md.split("## Failed runs")[1]


# ----------------------------------------------------------------------------- (f) bad inputs


def test_mismatched_eval_sets_raise(tmp_path):
    a = write_run(tmp_path, "prefix", n_eval=200)
    b = write_run(tmp_path, "lt_prefix", n_eval=100)
    write_run(tmp_path, "prefix", dataset="rte", n_eval=50)  # another dataset: fine on its own
    with pytest.raises(LtuneError) as e:
        compare([str(tmp_path)], str(tmp_path / "out"))
    assert a.name in str(e.value) and b.name in str(e.value)


def test_missing_file_and_wrong_schema_raise(tmp_path):
    d = write_run(tmp_path / "a", "prefix")
    (d / "metrics.jsonl").unlink()
    with pytest.raises(LtuneError, match=r"prefix-minilm-sst2-s0.*missing metrics\.jsonl"):
        compare([str(tmp_path / "a")], str(tmp_path / "out"))
    d = write_run(tmp_path / "b", "prefix")
    res = json.loads((d / "results.json").read_text())
    res["schema"] = "ltune.results/0"
    (d / "results.json").write_text(json.dumps(res))
    with pytest.raises(LtuneError, match="schema"):
        compare([str(d)], str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LtuneError, match="no run folders"):
        compare([str(tmp_path / "empty")])
    with pytest.raises(LtuneError, match="does not exist"):
        compare([str(tmp_path / "nowhere")])


def test_default_out_dir(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "outputs"))
    assert default_out_dir([str(sweep)]) == sweep / "compare"
    run = next(sweep.iterdir())
    assert default_out_dir([str(run)]).parent == tmp_path / "outputs"
    assert default_out_dir([str(run)]).name.startswith("compare-")


# ----------------------------------------------------------------------------- (g) distinct experiments


def _report(paths, out) -> dict:
    files = compare([str(p) for p in paths], str(out), n_boot=50)
    return json.loads(files["json"].read_text()) | {"files": files}


def _cells(rep) -> dict:
    return {(c["row"], c["dataset"], c["model"]): c for c in rep["tables"][0]["cells"]}


def test_runs_differing_in_an_override_are_distinct_rows(tmp_path):
    """Same method, model, dataset and seeds, two learning rates: two rows, nothing superseded."""
    for lr, acc in ((0.1, 0.9), (0.01, 0.6)):
        for seed in range(2):
            write_run(tmp_path / "runs", "prefix", seed=seed, correct=acc, name=f"prefix-lr{lr}-s{seed}",
                      config={"train.lr": lr, "train.max_steps": 300})
    rep = _report([tmp_path / "runs"], tmp_path / "out")
    cells = _cells(rep)
    assert set(cells) == {("prefix (train.lr=0.01)", "sst2", "minilm"), ("prefix (train.lr=0.1)", "sst2", "minilm")}
    assert cells[("prefix (train.lr=0.1)", "sst2", "minilm")]["mean"] == pytest.approx(0.9)
    assert cells[("prefix (train.lr=0.01)", "sst2", "minilm")]["mean"] == pytest.approx(0.6)
    assert all(c["n"] == 2 for c in cells.values())
    assert not any("superseded" in n for n in rep["notes"])
    rows = list(csv.DictReader(rep["files"]["csv"].open()))
    assert {r["settings"] for r in rows if r["kind"] == "summary"} == {"train.lr=0.1", "train.lr=0.01"}
    assert "prefix (train.lr=0.1)" in rep["files"]["markdown"].read_text()


def test_identical_config_and_seed_is_superseded_only_then(tmp_path):
    for name, created in (("old", "2026-11-29T01:00:00+00:00"), ("new", "2026-11-29T03:00:00+00:00")):
        d = write_run(tmp_path / "runs", "prefix", name=name, config={"train.lr": 0.1})
        res = json.loads((d / "results.json").read_text())
        res["created"] = created
        (d / "results.json").write_text(json.dumps(res))
    rep = _report([tmp_path / "runs"], tmp_path / "out")
    (cell,) = rep["tables"][0]["cells"]
    assert cell["row"] == "prefix" and cell["n"] == 1
    (note,) = [n for n in rep["notes"] if "superseded" in n]
    assert note.startswith(str(tmp_path / "runs" / "old")) and "identical config" in note


def test_keys_differing_only_between_columns_do_not_split_rows(tmp_path):
    """A per-dataset budget (sst2 300 steps, cola 1000) is one row per method, as in the paper's table."""
    for dataset, steps in (("sst2", 300), ("cola", 1000)):
        for method in ("prefix", "lt_prefix"):
            write_run(tmp_path / "runs", method, dataset=dataset, config={"train.max_steps": steps})
    rep = _report([tmp_path / "runs"], tmp_path / "out")
    assert rep["tables"][0]["rows"] == ["prefix", "lt_prefix"]
    assert {(d["lt"], d["baseline"], d["dataset"]) for d in rep["differences"]} == {
        ("lt_prefix", "prefix", "sst2"), ("lt_prefix", "prefix", "cola")}


def test_lt_rows_pair_with_the_baseline_of_the_same_settings(tmp_path):
    for lr in (0.1, 0.01):
        for method in ("prefix", "lt_prefix"):
            write_run(tmp_path / "runs", method, name=f"{method}-{lr}", config={"train.lr": lr})
    rep = _report([tmp_path / "runs"], tmp_path / "out")
    assert sorted((d["lt"], d["baseline"]) for d in rep["differences"]) == [
        ("lt_prefix (train.lr=0.01)", "prefix (train.lr=0.01)"), ("lt_prefix (train.lr=0.1)", "prefix (train.lr=0.1)")]


def test_files_runs_are_named_after_their_data(tmp_path):
    """dataset=files runs of two data sets: two columns named after the data, not one 'files' column."""
    for data, n in (("imdb", 120), ("yelp", 80)):
        for method in ("prefix", "lt_prefix"):
            write_run(tmp_path / "runs", method, dataset="files", n_eval=n, name=f"{method}-{data}", config={
                "dataset.name": "files", "dataset.kind": "files",
                "dataset.train_path": f"/data/{data}/train.csv", "dataset.eval_path": f"/data/{data}/dev.csv"})
    write_run(tmp_path / "runs", "prefix", dataset="files", n_eval=50, name="prefix-reviews", config={
        "dataset.name": "files", "dataset.kind": "files", "dataset.eval_path": "/data/reviews_dev.tsv"})
    rep = _report([tmp_path / "runs"], tmp_path / "out")
    cols = {(c["dataset"], c["model"]) for c in rep["tables"][0]["columns"]}
    assert cols == {("imdb", "minilm"), ("yelp", "minilm"), ("reviews_dev", "minilm")}
    assert {d["dataset"] for d in rep["differences"]} == {"imdb", "yelp"}


def test_same_name_other_data_gets_its_own_column(tmp_path):
    """Two data sets both called 'reviews' (dataset.name=reviews): the differing key tells the columns apart."""
    for path, n in (("/a/reviews.csv", 100), ("/b/reviews.csv", 60)):
        write_run(tmp_path / "runs", "prefix", dataset="reviews", n_eval=n, name=f"prefix{path.replace('/', '-')}",
                  config={"dataset.name": "reviews", "dataset.kind": "files", "dataset.eval_path": path})
    rep = _report([tmp_path / "runs"], tmp_path / "out")
    assert {c["dataset"] for c in rep["tables"][0]["columns"]} == {
        "reviews (dataset.eval_path=/a/reviews.csv)", "reviews (dataset.eval_path=/b/reviews.csv)"}


# ----------------------------------------------------------------------------- (h) no torch


def test_compare_imports_no_torch(tmp_path):
    for method in ("prefix", "lt_prefix"):
        write_run(tmp_path / "runs", method)
    code = (
        "import sys; from ltune_cli.report import compare; "
        f"compare([{str(tmp_path / 'runs')!r}], {str(tmp_path / 'out')!r}, n_boot=50); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "report.html").is_file()
