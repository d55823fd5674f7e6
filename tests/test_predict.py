"""`ltune predict`: new texts get the labels eval gives them, in input order, from any input format."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from conftest import tiny_overrides, write_sentiment_csv
from ltune_cli import engine
from ltune_cli.cli import app
from ltune_cli.config import compose


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("predictruns")
    out = {"tmp": tmp}
    for pair in (False, True):
        train = write_sentiment_csv(tmp / f"train{pair}.csv", 48, seed=1, pair=pair)
        dev = write_sentiment_csv(tmp / f"dev{pair}.csv", 24, seed=2, pair=pair)
        extra = {"dataset.text_pair_column": "text_pair"} if pair else {}
        out["pair" if pair else "single"] = engine.train(compose(tiny_overrides(
            train, dev, tmp / f"run{pair}", method="lt_prefix", **{"model.path": tiny_bert_dir,
                                                                    "hardware.num_threads": 1, **extra})))
        out[f"dev{pair}"] = dev
    dev = out["devFalse"]
    out["prompt-llama"] = engine.train(compose(tiny_overrides(
        tmp / "trainFalse.csv", dev, tmp / "run-llama", method="prompt",
        **{"model.path": tiny_llama_dir, "hardware.num_threads": 1})))
    return out


def ltune(*args, input=None):
    r = CliRunner().invoke(app, list(map(str, args)), input=input)
    assert "Traceback" not in r.output, r.output
    return r


def _stored(run):
    p = json.loads((run / "predictions.json").read_text())
    return [p["label_texts"][i] for i in p["pred"]]


@pytest.mark.parametrize("name,dev", [("single", "devFalse"), ("pair", "devTrue"), ("prompt-llama", "devFalse")])
def test_predict_gives_evals_labels(runs, name, dev, tmp_path):
    """The dev file as new input: predict's labels are the run's stored predictions (eval's path)."""
    out = tmp_path / "pred.csv"
    r = ltune("predict", runs[name], "--input", runs[dev], "--output", out, "--batch-size", 5)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows] == _stored(runs[name])
    src = list(csv.DictReader(runs[dev].open()))
    assert [r["text"] for r in rows] == [r["text"] for r in src]  # input order, not length order
    assert list(rows[0]) == ["text", *(["text_pair"] if name == "pair" else []), "label", "score_negative",
                             "score_positive"]
    for row in rows:
        best = max(("negative", "positive"), key=lambda t: float(row[f"score_{t}"]))
        assert row["label"] == best


def test_batch_size_and_format_change_nothing(runs, tmp_path):
    run, dev = runs["single"], runs["devFalse"]
    jl = tmp_path / "dev.jsonl"
    jl.write_text("".join(json.dumps({"text": r["text"], "other": 1}) + "\n" for r in csv.DictReader(dev.open())))
    a = ltune("predict", run, "--input", jl, "--output", tmp_path / "a.jsonl", "--batch-size", 1)
    b = ltune("predict", run, "--input", jl, "-o", tmp_path / "b.jsonl")
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    ra, rb = ([json.loads(x) for x in (tmp_path / f).read_text().splitlines()] for f in ("a.jsonl", "b.jsonl"))
    assert [r["label"] for r in ra] == [r["label"] for r in rb] == _stored(run)
    assert max(abs(x[k] - y[k]) for x, y in zip(ra, rb) for k in x if k.startswith("score_")) < 1e-5


def test_stdin_to_stdout(runs):
    r = ltune("predict", runs["single"], "--input", "-", input='{"text": "good film"}\n{"text": "awful plot"}\n')
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["text"] for x in lines] == ["good film", "awful plot"]
    assert set(lines[0]) == {"text", "label", "score_negative", "score_positive"}
    r = ltune("predict", runs["single"], "--input", "-", input="text\ngood film\n")
    rows = list(csv.DictReader(io.StringIO(r.stdout[r.stdout.index("text,label"):])))
    assert r.exit_code == 0 and rows[0]["text"] == "good film"


def test_pair_run_needs_both_columns(runs, tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("text\nthe movie was good\n")
    r = ltune("predict", runs["pair"], "--input", f)
    assert r.exit_code == 2
    assert "no column 'text_pair'" in r.output and "Set --pair-column=<column>" in r.output
