"""`ltune eval <run>` on a real tiny run: it reproduces, or says it does not and exits 3."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import tiny_overrides, write_sentiment_csv
from ltune_cli import engine, runfolder
from ltune_cli.cli import app
from ltune_cli.config import compose
from ltune_cli.evaluate import EXIT_MISMATCH, PREDICTIONS_FILE, TOLERANCE


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """One finished lt_prefix run (4 steps, 32 eval texts); tests copy it before changing it."""
    tmp = tmp_path_factory.mktemp("evalrun")
    train = write_sentiment_csv(tmp / "train.csv", 48, seed=1)
    dev = write_sentiment_csv(tmp / "dev.csv", 32, seed=2)
    run = engine.train(compose(tiny_overrides(train, dev, tmp / "run", **{"model.path": tiny_bert_dir,
                                                                          "hardware.num_threads": 1})))
    return run


@pytest.fixture
def run(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def ltune_eval(*args):
    r = CliRunner().invoke(app, ["eval", *map(str, args)])
    assert "Traceback" not in r.output, r.output
    return r


def test_eval_reproduces_and_writes_predictions_beside_eval_json(run):
    r = ltune_eval(run)
    assert r.exit_code == 0, r.output
    assert "reproduces results.json: yes" in r.output
    out = json.loads((run / "eval.json").read_text())
    stored = runfolder.read_results(run)["final"]
    assert out["reproduces"] is True and out["mismatches"] == []
    assert set(out["stored_final"]) == set(stored) and "val_loss" in out["stored_final"]
    pred = json.loads((run / PREDICTIONS_FILE).read_text())
    assert pred == json.loads((run / "predictions.json").read_text())  # same layout, same predictions
    assert out["predictions"] == str(run / PREDICTIONS_FILE)


def test_val_loss_is_compared(run):
    res = runfolder.read_results(run)
    res["final"]["val_loss"] += 10 * TOLERANCE["val_loss"]
    runfolder.write_json(run / "results.json", res)
    r = ltune_eval(run)
    assert r.exit_code == EXIT_MISMATCH, r.output
    assert "reproduces results.json: NO" in r.output and "val_loss: stored" in r.output
    out = json.loads((run / "eval.json").read_text())
    assert out["reproduces"] is False and [m["score"] for m in out["mismatches"]] == ["val_loss"]


def test_changed_prediction_is_a_mismatch(run):
    """Scores can tie by chance; the per-example predictions of predictions.json are compared too."""
    pred = json.loads((run / "predictions.json").read_text())
    pred["pred"][0] = 1 - pred["pred"][0]
    runfolder.write_json(run / "predictions.json", pred)
    r = ltune_eval(run)
    assert r.exit_code == EXIT_MISMATCH, r.output
    assert "predictions: stored predictions.json, now 1 differ" in r.output


def test_out_keeps_repeated_evals_apart(run, tmp_path):
    a, b = tmp_path / "eval-a", tmp_path / "eval-b"
    assert ltune_eval(run, "--out", a, "dataset.eval_limit=8").exit_code == 0
    assert ltune_eval(run, "--out", b).exit_code == 0
    ea, eb = (json.loads((d / "eval.json").read_text()) for d in (a, b))
    assert ea["eval_examples"] == 8 and eb["eval_examples"] == 32
    assert len(json.loads((a / PREDICTIONS_FILE).read_text())["pred"]) == 8
    assert not (run / "eval.json").exists()  # --out writes nothing into the run folder
    again = ltune_eval(run, "--out", a)
    assert again.exit_code == 2 and "already holds an eval.json" in again.output
    assert json.loads((a / "eval.json").read_text()) == ea  # the earlier eval is untouched


def test_other_eval_set_is_not_compared(run):
    r = ltune_eval(run, "dataset.eval_limit=8")
    assert r.exit_code == 0, r.output
    out = json.loads((run / "eval.json").read_text())
    assert out["reproduces"] is None and "dataset.eval_limit" in out["compared"]


def test_honoured_eval_path_scores_the_other_file(run, tmp_path):
    other = write_sentiment_csv(tmp_path / "other.csv", 20, seed=9)
    r = ltune_eval(run, f"dataset.eval_path={other}")
    assert r.exit_code == 0, r.output
    out = json.loads((run / "eval.json").read_text())
    assert out["eval_examples"] == 20 and out["reproduces"] is None


@pytest.mark.parametrize("override", ["hardware.eval_batch_size=1", "hardware.num_threads=2"])
def test_runtime_overrides_stay_within_tolerance(run, override):
    """The noise floor behind TOLERANCE: other padding (batch 1) or thread count still reproduces."""
    r = ltune_eval(run, override)
    assert r.exit_code == 0, r.output
    out = json.loads((run / "eval.json").read_text())
    assert out["reproduces"] is True
    assert abs(out["scores"]["val_loss"] - out["stored_final"]["val_loss"]) < TOLERANCE["val_loss"] / 10


@pytest.mark.parametrize("override, fragment", [
    ("hardware.nproc=2", "not honoured"),
    ("train.lr=0.1", "not honoured"),
    ("dataset.eval_split=test", "read only by dataset.kind=hub"),
    ("model.max_length=8", "not honoured"),
])
def test_unhonoured_overrides_are_refused(run, override, fragment):
    r = ltune_eval(run, override)
    assert r.exit_code == 2 and fragment in r.output, r.output
    assert not (run / "eval.json").exists()


def test_unwritable_folder_prints_the_scores_then_says_so(run, monkeypatch):
    """A read-only run folder (root ignores chmod, so the write itself fails here): exit 2, scores shown."""
    import errno

    from ltune_cli import evaluate

    def read_only(path, obj):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(evaluate.runfolder, "write_json", read_only)
    r = ltune_eval(run)
    assert r.exit_code == 2, r.output
    assert "accuracy" in r.output and "reproduces results.json: yes" in r.output
    (line,) = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert "Read-only file system" in line and "--out" in line
