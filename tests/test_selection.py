"""train.keep_best and train.early_stop_patience: which weights a run keeps, when it stops, and resume.

The setting (prompt tuning, lr 0.05, a tiny BERT, 16 steps, an evaluation every 2) has a curve
whose best evaluation differs by metric: accuracy peaks first at step 2, macro-F1 at step 10,
and the last step is 16 (asserted below, so a test that stops telling them apart fails).
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_overrides, train_killed
from ltune_cli import checkpoint, engine, runfolder
from ltune_cli.cli import app
from ltune_cli.config import compose

TIMING = {"time_s", "examples_per_s"}
KEYS = ("step", "accuracy", "mcc", "macro_f1", "val_loss")


def cfg_for(files, out, model_dir, **extra):
    train, dev = files
    return compose(tiny_overrides(train, dev, out, method="prompt", steps=16, **{
        "model.path": model_dir, "hardware.num_threads": 1, "train.eval_every": 2, "train.lr": 0.05, **extra}))


def evals(run):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runfolder.read_metrics(run) if r["kind"] == "eval"]


def first_best(records, metric):
    return max(records, key=lambda r: r[metric])  # max keeps the first of equal ones


@pytest.mark.parametrize("metric,other", [("macro_f1", "accuracy"), ("accuracy", "macro_f1")])
def test_keep_best_saves_the_best_evaluation_by_the_primary_metric(sentiment_files, tmp_path, tiny_bert_dir,
                                                                   metric, other):
    """macro_f1: the best step is neither accuracy's nor the last; accuracy: its best (0.531 at step 2)
    is tied again at steps 12-16, and the first of equal evaluations is kept."""
    run = engine.train(cfg_for(sentiment_files, tmp_path / "best", tiny_bert_dir, **{
        "train.keep_best": True, "dataset.primary_metric": metric}))
    res, curve = runfolder.read_results(run), evals(run)
    best = first_best(curve, metric)
    assert best["step"] not in (curve[-1]["step"], first_best(curve, other)["step"])  # a telling curve
    if metric == "accuracy":
        assert curve[-1]["accuracy"] == best["accuracy"]  # the tie
    assert res["saved_weights"] == {"which": "best", "step": best["step"], "metric": metric,
                                    "value": best[metric]}
    assert res["final"] == {k: best[k] for k in KEYS}
    assert res["last"] == {k: curve[-1][k] for k in KEYS} and res["steps"] == 16
    assert res["early_stopping"] == {"patience": 0, "stopped_early": False, "stopped_at_step": None,
                                     "best_step": best["step"]}
    # `ltune eval` re-scores trainable.safetensors: it reproduces the best evaluation, predictions included.
    r = CliRunner().invoke(app, ["eval", str(run)])
    assert r.exit_code == 0 and "reproduces results.json: yes" in r.output, r.output
    assert abs(best["val_loss"] - curve[-1]["val_loss"]) > 1e-3  # so the last weights would not reproduce


def test_early_stopping_stops_after_patience_evaluations(sentiment_files, tmp_path, tiny_bert_dir):
    run = engine.train(cfg_for(sentiment_files, tmp_path / "es", tiny_bert_dir, **{"train.early_stop_patience": 2}))
    res, curve = runfolder.read_results(run), evals(run)
    best = first_best(curve, "accuracy")
    stop = best["step"] + 2 * 2  # two evaluations (every 2 steps) without a higher accuracy
    assert stop < 16
    assert [r["step"] for r in curve] == list(range(2, stop + 1, 2))  # nothing trained after the stop
    assert max(r["step"] for r in runfolder.read_metrics(run)) == stop and res["steps"] == stop
    assert res["early_stopping"] == {"patience": 2, "stopped_early": True, "stopped_at_step": stop,
                                     "best_step": best["step"]}
    assert res["saved_weights"]["which"] == "last" and res["final"] == {k: curve[-1][k] for k in KEYS}
    assert not (run / checkpoint.CKPT_DIR).exists()


def test_resume_keeps_best_so_far_and_patience(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    """Killed after the checkpoint of step 6 (best at step 2, two evaluations without improvement),
    resumed: it stops at step 8 with step 2's weights, exactly as the uninterrupted run does."""
    extra = {"train.keep_best": True, "train.early_stop_patience": 3, "dataset.primary_metric": "macro_f1",
             "train.checkpoint_every": 2}
    full = engine.train(cfg_for(sentiment_files, tmp_path / "full", tiny_bert_dir, **extra))
    cfg = cfg_for(sentiment_files, tmp_path / "cut", tiny_bert_dir, **extra)
    train_killed(cfg, 7, monkeypatch)  # nothing after step 6's checkpoint is saved
    assert checkpoint.list_checkpoints(cfg.out_dir)[-1].name == "step-00000006.pt"
    cfg.resume = True
    cut = engine.train(cfg)
    want, got = runfolder.read_results(full), runfolder.read_results(cut)
    assert want["early_stopping"]["stopped_at_step"] == 8 and want["saved_weights"]["step"] == 2
    for k in ("final", "last", "best", "saved_weights", "early_stopping", "steps"):
        assert got[k] == want[k], k
    assert evals(cut) == evals(full)
    a, b = runfolder.read_trainable(full), runfolder.read_trainable(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_patience_must_not_be_negative():
    from ltune_cli.errors import LtuneError

    with pytest.raises(LtuneError, match="'train.early_stop_patience' must be >= 0"):
        compose(["train.early_stop_patience=-1"])
