"""The engine end to end on tiny saved models: run folders, eval reproduction, determinism,
checkpoint/resume (including SIGKILL), and the guards (non-finite loss, OOM, full disk)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_overrides, train_killed
from ltune_cli import checkpoint, engine, runfolder
from ltune_cli.config import compose
from ltune_cli.errors import LtuneError
from ltune_cli.evaluate import evaluate_run

TIMING = {"time_s", "examples_per_s"}


def cfg_for(files, out, model_dir, method="lt_prefix", steps=6, **extra):
    train, dev = files
    return compose(tiny_overrides(train, dev, out, method=method, steps=steps, **{"model.path": model_dir, **extra}))


def records(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runfolder.read_metrics(run_dir)]


@pytest.mark.parametrize("method", ["prefix", "prompt", "lt_prefix", "lt_prompt"])
def test_train_writes_run_folder_and_eval_reproduces(sentiment_files, tmp_path, tiny_bert_dir, method):
    run = engine.train(cfg_for(sentiment_files, tmp_path / "run", tiny_bert_dir, method=method))
    for f in ("config.yaml", "metrics.jsonl", "results.json", "predictions.json", "trainable.safetensors"):
        assert (run / f).is_file(), f
    assert not (run / "checkpoints").exists()
    res = runfolder.read_results(run)
    assert set(runfolder.RESULT_KEYS) <= set(res)
    assert res["status"] == "completed" and res["steps"] == 6 and res["eval_examples"] == 32
    assert res["trainable_params"] > 0 and res["total_params"] > res["trainable_params"]
    assert ("pair_accuracy" in res["final"]) == method.startswith("lt_")
    evals = [r for r in runfolder.read_metrics(run) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]
    out = evaluate_run(run)
    assert out["reproduces"] is True
    assert json.loads((run / "eval.json").read_text())["scores"]["accuracy"] == res["final"]["accuracy"]


def test_pinned_loss_and_frozen_base(sentiment_files, tmp_path, tiny_bert_dir):
    """One pinned number under a fixed seed: any change to data order, sampling or init shows."""
    from conftest import tiny_backbone

    bb = tiny_backbone("bert")
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    run = engine.train(cfg_for(sentiment_files, tmp_path / "run", tiny_bert_dir, steps=4), backbone=bb)
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in before.items())
    first = runfolder.read_metrics(run)[0]
    assert first["step"] == 1
    assert first["train_loss"] == pytest.approx(0.72360, abs=1e-4)  # tiny models at init 0.25 (conftest.INIT)


def test_same_seed_same_metrics_other_seed_differs(sentiment_files, tmp_path, tiny_bert_dir):
    a = engine.train(cfg_for(sentiment_files, tmp_path / "a", tiny_bert_dir))
    b = engine.train(cfg_for(sentiment_files, tmp_path / "b", tiny_bert_dir))
    c = engine.train(cfg_for(sentiment_files, tmp_path / "c", tiny_bert_dir, seed=1))
    assert records(a) == records(b)
    assert records(a) != records(c)


def _batches(seed):
    import numpy as np

    from ltune_cli.batching import BatchOrder

    order = BatchOrder(np.arange(100) % 17 + 1, 8, seed)
    return [next(order).tolist() for _ in range(5)]


def test_data_order_and_negatives_depend_on_seed():
    from ltune_cli.methods.base import draw_pairs

    assert _batches(0) == _batches(0) and _batches(0) != _batches(1)
    labels = torch.zeros(32, dtype=torch.long)
    n0 = draw_pairs(labels, 5, torch.Generator().manual_seed(0))[0]
    n1 = draw_pairs(labels, 5, torch.Generator().manual_seed(1))[0]
    assert not torch.equal(n0, n1)


def test_length_grouped_batches_cover_each_epoch_once():
    import numpy as np

    from ltune_cli.batching import BatchOrder

    lengths = np.random.default_rng(0).integers(1, 60, 1000)
    order = BatchOrder(lengths, 16, seed=3)
    epoch = [next(order) for _ in range(len(order._batches))]
    assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in epoch)
    assert padded <= 1.15 * lengths.sum()


def test_resume_in_process_equals_uninterrupted(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    full = engine.train(cfg_for(sentiment_files, tmp_path / "full", tiny_bert_dir, steps=8,
                                **{"train.checkpoint_every": 2}))
    cfg = cfg_for(sentiment_files, tmp_path / "cut", tiny_bert_dir, steps=8, **{"train.checkpoint_every": 2})
    train_killed(cfg, 6, monkeypatch)  # nothing after step 5 is saved
    assert [p.name for p in checkpoint.list_checkpoints(cfg.out_dir)] == ["step-00000002.pt", "step-00000004.pt"]
    cfg.resume = True
    cut = engine.train(cfg)
    assert records(cut) == records(full)
    assert runfolder.read_results(cut)["final"] == runfolder.read_results(full)["final"]


def test_a_resumed_run_counts_the_time_of_every_sitting(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    """wall_time_s / train_time_s and the records' time_s of a run resumed from step 4: its first
    sitting's seconds up to that checkpoint plus the second's (a clock that moves 10 s a step)."""
    import types

    clock = {"t": 1e9}
    real_step, calls = engine._step, {"n": 0}

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise SystemExit("killed")  # steps 5 (done, no checkpoint) and 6 are lost
        clock["t"] += 10.0
        return real_step(*a, **k)

    monkeypatch.setattr(engine, "time", types.SimpleNamespace(time=lambda: clock["t"]))
    monkeypatch.setattr(engine, "_step", step)
    cfg = cfg_for(sentiment_files, tmp_path / "cut", tiny_bert_dir, steps=8,
                  **{"train.checkpoint_every": 4, "train.log_every": 2, "train.eval_every": 100})
    with pytest.raises(SystemExit):
        engine.train(cfg)
    clock["t"] += 5000.0  # the machine is off between the sittings: not the run's time
    cfg.resume = True
    res = runfolder.read_results(engine.train(cfg))
    assert res["train_time_s"] == res["wall_time_s"] == 80.0  # steps 1-4, then 5-8 again
    times = [r["time_s"] for r in runfolder.read_metrics(cfg.out_dir) if r["kind"] == "train"]
    assert times == [20.0, 40.0, 60.0, 80.0]
    here = runfolder.machine()
    assert here["cpu"] and here["logical_cpus"] and here["accelerator"] is None
    assert res["sittings"] == [{"machine": here, "steps": [0, 4], "wall_s": 40.0},
                               {"machine": here, "steps": [4, 8], "wall_s": 40.0}]


def test_sittings_before_the_key_are_recorded_as_unknown(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    """A checkpoint written before results.json had "sittings" (an older ltune): the steps up to it
    ran on a machine nobody recorded (null), not on this one."""
    cfg = cfg_for(sentiment_files, tmp_path / "old", tiny_bert_dir, steps=6, **{"train.checkpoint_every": 3})
    train_killed(cfg, 5, monkeypatch)
    [ck] = checkpoint.list_checkpoints(cfg.out_dir)
    payload = torch.load(ck, weights_only=False)
    del payload["sittings"]
    torch.save(payload, ck)
    cfg.resume = True
    res = runfolder.read_results(engine.train(cfg))
    assert [(t["machine"], t["steps"]) for t in res["sittings"]] == [(None, [0, 3]),
                                                                     (runfolder.machine(), [3, 6])]


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "ltune_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def _wait_for_checkpoint(run, proc, step=1, timeout=120):
    """Until the run has written the checkpoint of `step` (or a later one), or has ended."""
    t = time.time()
    while time.time() - t < timeout:
        found = checkpoint.list_checkpoints(run)
        if (found and int(found[-1].stem.split("-")[1]) >= step) or proc.poll() is not None:
            return
        time.sleep(0.01)


def test_sigkill_then_resume_is_bit_identical(sentiment_files, tmp_path, tiny_bert_dir):
    """A subprocess killed with SIGKILL after a random checkpoint resumes to the same metrics.
    The kill follows a random checkpoint among the first half, so the run cannot finish first
    however fast the machine is."""
    import random

    steps = 120
    extra = {"train.checkpoint_every": 1, "train.eval_every": 5}
    train, dev = sentiment_files
    ov = tiny_overrides(train, dev, tmp_path / "ref", steps=steps, **{"model.path": tiny_bert_dir, **extra})
    ref = _cli("train", *ov)
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    run = tmp_path / "killed"
    ov = tiny_overrides(train, dev, run, steps=steps, **{"model.path": tiny_bert_dir, **extra})
    proc = _cli("train", *ov)
    _wait_for_checkpoint(run, proc, step=random.Random().randint(1, steps // 2))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (run / "results.json").exists(), "the run finished before the kill; make it longer"
    resumed = _cli("train", "--resume", str(run))
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert out.strip().splitlines()[-1] == f"run folder: {run}"
    assert records(run) == records(tmp_path / "ref")
    assert runfolder.read_results(run)["final"] == runfolder.read_results(tmp_path / "ref")["final"]
    assert (run / "trainable.safetensors").read_bytes() == (tmp_path / "ref" / "trainable.safetensors").read_bytes()


def test_default_cpu_preset_is_bit_identical_whatever_the_machine_thread_count(sentiment_files, tmp_path,
                                                                             tiny_bert_dir):
    """Same seed and config, default hardware=cpu (no num_threads override): the same bytes of
    trainable weights, metrics and results.json scores, from processes whose torch would pick
    different thread counts by default (as on two machines: OMP_NUM_THREADS stands in for their
    core counts; the preset's fixed thread count must win over it)."""
    runs = []
    for threads in ("1", "3"):
        run = tmp_path / f"threads-{threads}"
        proc = _cli("train", *tiny_overrides(*sentiment_files, run, steps=12,
                                             **{"model.path": tiny_bert_dir, "train.eval_every": 6}),
                    env_extra={"OMP_NUM_THREADS": threads})
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out
        runs.append(run)
    a, b = runs
    assert "num_threads" not in " ".join(tiny_overrides(*sentiment_files, a))
    assert (a / "trainable.safetensors").read_bytes() == (b / "trainable.safetensors").read_bytes()
    assert records(a) == records(b)
    ra, rb = runfolder.read_results(a), runfolder.read_results(b)
    assert (ra["final"], ra["best"]) == (rb["final"], rb["best"])


def test_sigint_saves_a_checkpoint_and_says_how_to_resume(sentiment_files, tmp_path, tiny_bert_dir):
    train, dev = sentiment_files
    run = tmp_path / "int"
    ov = tiny_overrides(train, dev, run, steps=400, **{"model.path": tiny_bert_dir, "train.checkpoint_every": 1})
    proc = _cli("train", *ov)
    _wait_for_checkpoint(run, proc)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert f"ltune train --resume {run}" in out
    assert "Traceback" not in out
    assert checkpoint.list_checkpoints(run) and not (run / "results.json").exists()


def test_kill_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    run = tmp_path
    checkpoint.save(run, {"step": 1, "w": torch.ones(3)}, keep=3)

    def killed(fd):
        raise KeyboardInterrupt  # the process dies between write and rename

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(run, {"step": 2, "w": torch.zeros(3)}, keep=3)
    monkeypatch.undo()
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["step-00000001.pt"]
    assert not list((run / "checkpoints").glob("*.tmp"))
    assert checkpoint.load_latest(run)["step"] == 1
    # a damaged newest file (say, a disk error) is skipped in favour of the previous one
    (run / "checkpoints" / "step-00000003.pt").write_bytes(b"garbage")
    assert checkpoint.load_latest(run)["step"] == 1


def test_disk_full_while_checkpointing_is_a_clear_error(tmp_path, monkeypatch):
    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(LtuneError, match="disk full while writing checkpoint .* previous checkpoint is intact"):
        checkpoint.save(tmp_path, {"step": 3}, keep=2)


def _nan_after(method_cls, monkeypatch, at_call: int):
    real, calls = method_cls.training_loss, {"n": 0}

    def loss(self, batch, gen):
        calls["n"] += 1
        out = real(self, batch, gen)
        return out * float("nan") if calls["n"] == at_call else out

    monkeypatch.setattr(method_cls, "training_loss", loss)


def test_nonfinite_loss_stops_and_keeps_checkpoint(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    from ltune_cli.methods.base import PairMethod

    _nan_after(PairMethod, monkeypatch, 4)
    cfg = cfg_for(sentiment_files, tmp_path / "nan", tiny_bert_dir, **{"train.checkpoint_every": 2})
    with pytest.raises(LtuneError, match=r"loss became nan at step 4; the last good checkpoint \(step-00000002.pt\)"):
        engine.train(cfg)
    assert runfolder.read_results(cfg.out_dir)["status"] == "failed"
    assert checkpoint.list_checkpoints(cfg.out_dir)


def test_nonfinite_loss_skip_mode_completes(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    from ltune_cli.methods.base import PairMethod

    _nan_after(PairMethod, monkeypatch, 3)
    cfg = cfg_for(sentiment_files, tmp_path / "skip", tiny_bert_dir, **{"train.on_nonfinite": "skip"})
    run = engine.train(cfg)
    assert runfolder.read_results(run)["status"] == "completed"
    # log_every=1: step 3's window holds only the skipped batch; its loss is unknown (null), not 0.0.
    losses = {r["step"]: r["train_loss"] for r in runfolder.read_metrics(run) if r["kind"] == "train"}
    assert losses[3] is None and all(isinstance(losses[s], float) for s in losses if s != 3), losses


def test_json_files_are_strict_json(tmp_path):
    """NaN/inf never reach a file as a bare NaN (json.loads accepts it; other readers do not)."""
    import numpy as np

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    runfolder.write_json(tmp_path / "r.json", {"final": {"val_loss": float("nan"), "acc": np.float32("inf"),
                                                        "curve": [1.0, float("-inf")], "pred": np.array([1, 0])}})
    assert strict((tmp_path / "r.json").read_text()) == {"final": {"val_loss": None, "acc": None,
                                                                   "curve": [1.0, None], "pred": [1, 0]}}
    runfolder.append_jsonl(tmp_path / "m.jsonl", {"train_loss": np.float64("nan"), "step": 1})
    assert strict((tmp_path / "m.jsonl").read_text()) == {"train_loss": None, "step": 1}


def test_out_of_memory_names_batch_size_and_accumulation(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    from ltune_cli.methods.base import PairMethod

    def oom(self, batch, gen):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(PairMethod, "training_loss", oom)
    cfg = cfg_for(sentiment_files, tmp_path / "oom", tiny_bert_dir)
    with pytest.raises(LtuneError, match="hardware.batch_size=4 hardware.grad_accum=2"):
        engine.train(cfg)


def test_existing_run_folder_is_never_overwritten(sentiment_files, tmp_path, tiny_bert_dir):
    cfg = cfg_for(sentiment_files, tmp_path / "once", tiny_bert_dir, steps=2)
    engine.train(cfg)
    with pytest.raises(LtuneError, match="already holds a run"):
        engine.train(cfg)
    cfg.resume = True
    with pytest.raises(LtuneError, match="already holds a completed run"):
        engine.train(cfg)


def test_curve_eval_limit_scores_a_subset_on_the_way_and_everything_at_the_end(sentiment_files, tmp_path,
                                                                               tiny_bert_dir):
    """train.curve_eval_limit: evaluations before the last step score the first N eval texts (and
    say so); the last one, results.json and predictions.json cover the whole eval split, and the
    last one records the first N texts' scores as well (curve_*)."""
    run = engine.train(cfg_for(sentiment_files, tmp_path / "run", tiny_bert_dir, method="lt_prompt",
                               **{"train.curve_eval_limit": 10}))
    evals = [r for r in runfolder.read_metrics(run) if r["kind"] == "eval"]
    assert [(r["step"], r.get("eval_examples")) for r in evals] == [(2, 10), (4, 10), (6, None)]
    res = runfolder.read_results(run)
    assert res["eval_examples"] == 32 and res["final"]["accuracy"] == evals[-1]["accuracy"]
    assert len(json.loads((run / "predictions.json").read_text())["pred"]) == 32
    full = engine.train(cfg_for(sentiment_files, tmp_path / "full", tiny_bert_dir, method="lt_prompt"))
    assert (run / "trainable.safetensors").read_bytes() == (full / "trainable.safetensors").read_bytes()
    assert evals[-1]["accuracy"] == [r for r in runfolder.read_metrics(full) if r["kind"] == "eval"][-1]["accuracy"]
    s = engine.build(cfg_for(sentiment_files, tmp_path / "b", tiny_bert_dir, method="lt_prompt"), with_train=False)
    (m10, p10), (_, p_all) = engine.evaluate(s, limit=10), engine.evaluate(s)
    assert len(p10) == 10 and (p10 == p_all[:10]).all()
    assert m10["accuracy"] == pytest.approx((p10 == s.eval_enc.labels[:10]).mean())
    # the last evaluation also scores the curve's 10 texts (curve_*): the curve ends on the texts it began on
    m_both, _ = engine.evaluate(s, also_first=10)
    assert m_both["curve_eval_examples"] == 10 and {k: m_both[f"curve_{k}"] for k in m10} == m10
    assert {k: m_both[k] for k in m10} == engine.evaluate(s)[0]
    assert evals[-1]["curve_eval_examples"] == 10 and "curve_val_loss" in evals[-1] and "curve_val_loss" not in evals[0]
    with pytest.raises(LtuneError, match="curve_eval_limit.*keep_best"):
        cfg_for(sentiment_files, tmp_path / "x", tiny_bert_dir, **{"train.curve_eval_limit": 10,
                                                                    "train.keep_best": True})
