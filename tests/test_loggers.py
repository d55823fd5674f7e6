"""logger= backends read back what was logged; a resumed run logs every step once; the console
shows plain lines off a terminal and a bar without "loss nan" in one; train.scheduler."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import struct
import subprocess
import sys

import pytest

from conftest import tiny_overrides, train_killed
from ltune_cli import engine, runfolder
from ltune_cli.config import compose
from ltune_cli.loggers import scalars


def _cfg(files, out, model_dir, steps=6, **extra):
    train, dev = files
    return compose(tiny_overrides(train, dev, out, method="prefix", steps=steps,
                                  **{"model.path": model_dir, "train.lr": 0.01, **extra}))


def expected(run) -> dict[str, dict[int, float]]:
    """metrics.jsonl as tag -> {step: value}, the names every backend uses."""
    out: dict[str, dict[int, float]] = {}
    for rec in runfolder.read_metrics(run):
        for tag, v in scalars(rec).items():
            assert rec["step"] not in out.setdefault(tag, {}), f"metrics.jsonl holds {tag} at step {rec['step']} twice"
            out[tag][rec["step"]] = v
    return out


# --------------------------------------------------------------------------- read back each backend
def read_csv(run) -> dict[str, list[tuple[int, float]]]:
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k not in ("kind", "step") and v not in ("", None):
                got.setdefault(f"{r['kind']}/{k}", []).append((int(r["step"]), float(v)))
    return got


def read_tensorboard(run) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_mlflow(run) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow' / 'mlflow.db').resolve()}")
    run_id = json.loads((run / "logger.json").read_text())["run_id"]
    info = client.get_run(run_id)
    import yaml

    assert info.data.params["train.max_steps"] == str(yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"])
    assert info.info.status == {"completed": "FINISHED", "failed": "FAILED"}[runfolder.read_results(run)["status"]]
    runs = client.search_runs([info.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # one MLflow run per run folder, resumed or not
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in info.data.metrics}


def read_wandb(run) -> dict[str, list[tuple[int, float]]]:
    """The history records of every offline .wandb file (a resumed run writes a second one), parsed
    as W&B's record log: a 7-byte header, then 32 KiB blocks of [crc32, length, type] + protobuf chunks."""
    from wandb.proto import wandb_internal_pb2 as pb

    got: dict[str, list[tuple[int, float]]] = {}
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files
    ids = {f.stem for f in files}
    assert len(ids) == 1, ids  # the resumed run continues the same W&B run id
    for path in files:
        data, pos, chunk = path.read_bytes(), 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if length == 0 and kind == 0:
                break
            chunk += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a full record, or the last chunk of one
                rec = pb.Record()
                rec.ParseFromString(chunk)
                chunk = b""
                if rec.WhichOneof("record_type") == "history":
                    items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                    for k, v in items.items():
                        if "/" in k:
                            got.setdefault(k, []).append((items["_step"], v))
    return got


READERS = {"csv": read_csv, "tensorboard": read_tensorboard, "mlflow": read_mlflow, "wandb": read_wandb}
MODULES = {"csv": "csv", "tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb.proto"}


def _needs(name: str) -> None:
    import importlib.util

    mod = MODULES[name]
    try:
        found = importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        pytest.skip(f"logger={name}: {mod} is not installed (pip install -e '.[{name}]')")


def assert_logged_once(run, name: str) -> None:
    want = expected(run)
    got = READERS[name](run)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for tag, points in got.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{name}: {tag} logged twice at a step: {steps}"
        if name in ("mlflow", "wandb") and tag.endswith(("/examples_per_s", "/time_s")):
            # They keep the steps logged before an interruption (resume recomputes the same losses
            # and scores on CPU, not the same timings): the steps must match, the timings cannot.
            assert sorted(steps) == sorted(want[tag]), tag
            continue
        assert dict(points) == pytest.approx(want[tag], rel=1e-6, abs=1e-9), tag  # TB stores float32


@pytest.mark.parametrize("name", list(READERS))
def test_backend_holds_what_metrics_jsonl_holds(name, sentiment_files, tmp_path, tiny_bert_dir):
    _needs(name)
    run = engine.train(_cfg(sentiment_files, tmp_path / "run", tiny_bert_dir, **{"logger": name}))
    assert expected(run)["eval/accuracy"].keys() == {2, 4, 6}
    assert_logged_once(run, name)
    others = {"csv": "metrics.csv", "tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
    assert [f for n, f in others.items() if n != name and (run / f).exists()] == []


def test_mlflow_tracking_uri_of_the_user(sentiment_files, tmp_path, tiny_bert_dir):
    _needs("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'team.db'}"
    run = engine.train(_cfg(sentiment_files, tmp_path / "run", tiny_bert_dir, steps=2,
                            **{"logger": "mlflow", "logger.tracking_uri": uri, "logger.project": "sst2-study"}))
    assert not (run / "mlflow").exists()
    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("sst2-study").experiment_id])
    assert found.info.run_name == run.name and found.data.metrics["eval/accuracy"] == expected(run)["eval/accuracy"][2]


@pytest.mark.parametrize("name", list(READERS))
def test_resume_logs_every_step_once(name, sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    """Killed after step 6 (checkpoint at 4: steps 5-6 and the eval at 5 were logged already), then resumed."""
    _needs(name)
    cfg = _cfg(sentiment_files, tmp_path / "run", tiny_bert_dir, steps=8,
               **{"logger": name, "train.checkpoint_every": 4, "train.eval_every": 5})
    train_killed(cfg, 7, monkeypatch)
    run = tmp_path / "run"
    before = READERS[name](run)
    assert max(s for s, _ in before["train/train_loss"]) == 6  # logged past the checkpoint (step 6 > 4)...
    assert [s for s, _ in before["eval/accuracy"]] == [5]  # ...an eval included
    cfg.resume = True
    engine.train(cfg)
    assert [r["step"] for r in runfolder.read_metrics(run) if r["kind"] == "train"] == list(range(1, 9))
    assert_logged_once(run, name)


# --------------------------------------------------------------------------- console
LINE_TRAIN = re.compile(r"^\[train\] step (\d+)/8 \| loss \d+\.\d{4} \| lr [\d.e-]+ \| \d+\.\d ex/s \| "
                        r"elapsed \d+:\d\d:\d\d \| ETA \d+:\d\d:\d\d$")
LINE_EVAL = re.compile(r"^\[eval\] step (\d+)/8 \| val_loss \d+\.\d{4} \| accuracy \d\.\d{4} \| mcc -?\d\.\d{4} \| "
                       r"macro_f1 \d\.\d{4} \| elapsed \d+:\d\d:\d\d \| ETA \d+:\d\d:\d\d$")


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "ltune_cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_off_a_terminal_training_and_eval_print_plain_lines(sentiment_files, tmp_path, tiny_bert_dir):
    """stdout/stderr are pipes (as under SLURM or nohup): a line per train record and per evaluation."""
    train, dev = sentiment_files
    ov = tiny_overrides(train, dev, tmp_path / "run", method="prefix", steps=8,
                        **{"model.path": tiny_bert_dir, "train.progress": "true", "train.log_every": 2,
                           "train.eval_every": 4})
    r = _cli("train", *ov)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert [int(LINE_TRAIN.match(x)[1]) for x in lines if x.startswith("[train]")] == [2, 4, 6, 8], r.stderr
    assert [int(LINE_EVAL.match(x)[1]) for x in lines if x.startswith("[eval] step")] == [4, 8], r.stderr
    assert "nan" not in r.stderr and "\x1b[" not in r.stderr  # no bar, no terminal codes
    e = _cli("eval", str(tmp_path / "run"))
    assert e.returncode == 0, e.stderr
    shown = re.findall(r"^\[eval\] batch (\d+)/(\d+) \| elapsed \S+ \| ETA \S+$", e.stderr, re.M)
    assert shown and shown[-1][0] == shown[-1][1] == "2", e.stderr  # 32 texts / eval_batch_size 16


def test_in_a_terminal_a_bar_with_no_nan_and_eval_lines(sentiment_files, tmp_path, tiny_bert_dir):
    from rich.console import Console

    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=200)
    cfg = _cfg(sentiment_files, tmp_path / "run", tiny_bert_dir, steps=4,
               **{"train.progress": "true", "train.log_every": 2})
    engine.train(cfg, console=con)
    out = buf.getvalue()
    assert "loss -" in out and "nan" not in out.lower()  # before the first logged loss: "loss -"
    assert re.search(r"loss \d\.\d{4}", out)
    assert re.findall(r"\[eval\] step (\d)/4 \| val_loss", out) == ["2", "4"]
    assert "[train] step" not in out  # the bar shows training; lines are for evaluations


# --------------------------------------------------------------------------- train.scheduler
def _factor(name: str, t: int, warmup: int, total: int) -> float:
    """The schedules as their papers/HF docs define them (lr multiplier after t optimizer steps)."""
    if t < warmup:
        return t / warmup
    if name == "constant_with_warmup":
        return 1.0
    progress = (t - warmup) / (total - warmup)
    return max(0.0, 1 - progress) if name == "linear" else 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("name", ["linear", "cosine", "constant_with_warmup"])
def test_scheduler_choice_sets_the_logged_lr(name, sentiment_files, tmp_path, tiny_bert_dir):
    run = engine.train(_cfg(sentiment_files, tmp_path / "run", tiny_bert_dir, steps=8,
                            **{"train.scheduler": name, "train.warmup_ratio": 0.25, "train.eval_every": 8}))
    lrs = {r["step"]: r["lr"] for r in runfolder.read_metrics(run) if r["kind"] == "train"}
    assert lrs == pytest.approx({t: 0.01 * _factor(name, t, 2, 8) for t in range(1, 9)}, abs=1e-12)
