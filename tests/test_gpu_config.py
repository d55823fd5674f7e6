"""GPU/cluster configuration checked on the CPU (issue 14 items 6-10, 12): loss scaling for fp16,
the fp32 head under autocast, friendly errors (eval OOM, too many processes, gated models, a 7B
base on a CPU), the model's own hardware preset, the memory estimate's 7B terms and the SLURM
launcher parameters. Nothing here needs a GPU: CUDA is monkeypatched where its presence matters."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_backbone, tiny_overrides
from ltune_cli import engine
from ltune_cli.config import MethodConfig, compose
from ltune_cli.errors import LtuneError
from ltune_cli.methods import build_method

LABELS = ["negative", "positive"]


def _batch(bb):
    enc = bb.tokenizer(["the movie was good", "bad film and so dull"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor([1, 0])}


# --------------------------------------------------------------------------- item 12: fp32 head
@pytest.mark.parametrize("method", ["prefix", "lt_prefix"])
def test_head_and_pair_logit_are_fp32_under_bf16_autocast(method):
    """`.float()` inside autocast does not keep a Linear in fp32: the head must run with autocast off."""
    bb = tiny_backbone("llama")
    torch.manual_seed(0)
    m = build_method(MethodConfig(name=method, num_virtual_tokens=3), bb, LABELS).eval()
    batch = _batch(bb)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = m.scores(batch)
        if method == "prefix":
            pooled = m.encode(batch)
        else:
            table, mask, idx = m._conditioning(torch.arange(2).repeat(2))
            pooled = m.encode_with({k: v.repeat_interleave(2, 0) for k, v in m.text_inputs(batch).items()},
                                   table, mask, idx)
    assert scores.dtype == torch.float32
    with torch.no_grad():
        z = m.head(pooled.float())  # the head in fp32 on the same (autocast) encodings
    ref = z if method == "prefix" else (z[:, 1] - z[:, 0]).view(2, 2)
    assert torch.equal(scores, ref)


def _cfg(files, out, method="lt_prefix", **extra):
    train, dev = files
    repl = {k: v for k, v in extra.items()}
    base = [o for o in tiny_overrides(train, dev, out, method=method) if o.split("=", 1)[0] not in repl]
    return compose(base + [f"{k}={v}" for k, v in repl.items()])


# --------------------------------------------------------------------------- item 6: fp16 loss scaling
def test_fp16_overflowing_gradient_skips_the_step_instead_of_poisoning_the_weights(sentiment_files, tmp_path,
                                                                                  tiny_bert_dir, monkeypatch):
    """fp16 needs a GradScaler: a step whose gradients overflow (inf) is skipped and the scale
    lowered. Without one, clipping turns inf into NaN weights and the next loss is NaN."""
    real_step, calls = engine._step, []

    def overflow_once(s, method, idx, gen, hw, *rest):
        loss = real_step(s, method, idx, gen, hw, *rest)
        calls.append(1)
        if len(calls) == 2:  # step 2: one gradient overflows, as fp16 does past 65504
            next(iter(method.trainable_parameters())).grad.view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(engine, "_step", overflow_once)
    cfg = _cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_bert_dir, "hardware.dtype": "fp16",
                                                     "train.max_steps": 4})
    run = engine.train(cfg)
    from safetensors.torch import load_file

    weights = load_file(str(run / "trainable.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    from ltune_cli import runfolder

    assert runfolder.read_results(run)["status"] == "completed"


def test_nonfinite_loss_in_fp16_suggests_bf16_not_fp32(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setattr(engine, "_step", lambda *a, **k: float("nan"))
    cfg = _cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_bert_dir, "hardware.dtype": "fp16"})
    with pytest.raises(LtuneError, match="training loss became nan") as e:
        engine.train(cfg)
    assert "hardware.dtype=bf16" in e.value.message and "dtype=fp32" not in e.value.message


# --------------------------------------------------------------------------- item 12: friendly errors
def test_out_of_memory_in_evaluation_names_eval_batch_size(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    cfg = _cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_bert_dir, "hardware.eval_batch_size": 16})
    s = engine.build(cfg)

    def oom(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(s.method, "scores", oom)
    with pytest.raises(LtuneError, match=r"out of memory while evaluating at hardware.eval_batch_size=16.*"
                                         r"hardware.eval_batch_size=8"):
        engine.evaluate(s)


@pytest.mark.parametrize("nproc,ok", [(2, True), (3, False)])
def test_more_processes_than_visible_gpus_is_a_clear_error(nproc, ok, monkeypatch):
    from ltune_cli import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    hw = compose(["hardware=ddp", f"hardware.nproc={nproc}"]).hardware
    if ok:
        assert distributed.resolve_nproc(hw) == nproc
    else:
        with pytest.raises(LtuneError, match=r"hardware.nproc=3 but only 2 GPU\(s\) are visible"):
            distributed.needs_launch(hw)
    # CPU processes (gloo) are not GPUs
    assert distributed.resolve_nproc(compose(["hardware=ddp", "hardware.nproc=3", "hardware.device=cpu"]).hardware) == 3


def test_gated_hub_model_says_to_log_in(monkeypatch):
    from transformers import AutoTokenizer

    from ltune_cli.models import backbone

    def gated(*a, **k):  # what transformers raises for a gated repo without a granted token
        raise OSError("You are trying to access a gated repo.\nMake sure to have access to it at "
                      "https://huggingface.co/meta-llama/Llama-2-7b-hf.\n401 Client Error.")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", gated)
    with pytest.raises(LtuneError, match=r"gated on the Hugging Face hub.*hf auth login.*HF_TOKEN"):
        backbone._from_pretrained(compose(["model=llama2_7b", "hardware=cpu"]).model, torch.bfloat16)


def test_quant_extra_brings_accelerate():
    """transformers' bitsandbytes loading needs accelerate: `pip install 'ltune-cli[quant]'` must bring it."""
    import tomllib

    from ltune_cli.paths import REPO_ROOT

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip() for d in extras["quant"]]
    assert {"bitsandbytes", "accelerate"} <= set(names)


# --------------------------------------------------------------------------- item 10: pre-emption
def test_usr2_checkpoints_then_hands_over_to_submitit_for_requeue(sentiment_files, tmp_path, tiny_bert_dir,
                                                                   monkeypatch):
    """SLURM warns a job before pre-emption/time limit with SIGUSR2 (submitit's default): the loop
    finishes its step and checkpoints, then submitit's own handler (here a stand-in that exits like
    it does) requeues the job; the requeued job resumes from that checkpoint."""
    import os
    import signal

    from ltune_cli import checkpoint

    run_dir, seen = tmp_path / "run", []

    def submitit_handler(signum, frame):  # submitit: checkpoint the DelayedSubmission, requeue, sys.exit(-1)
        seen.append([p.name for p in checkpoint.list_checkpoints(run_dir)])
        raise SystemExit(-1)

    real_step, calls = engine._step, []

    def step(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_step(*a, **k)

    monkeypatch.setattr(engine, "_step", step)
    old = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        cfg = _cfg(sentiment_files, run_dir, **{"model.path": tiny_bert_dir, "train.max_steps": 6,
                                                "train.checkpoint_every": 0})
        with pytest.raises(SystemExit):
            engine.train(cfg)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert seen == [["step-00000002.pt"]], seen  # called once, after the step-2 checkpoint
    assert len(calls) == 2  # stopped at the step the signal came in
    monkeypatch.setattr(engine, "_step", real_step)
    cfg = _cfg(sentiment_files, run_dir, **{"model.path": tiny_bert_dir, "train.max_steps": 6,
                                            "train.checkpoint_every": 0, "resume": "true"})
    from ltune_cli import runfolder

    assert runfolder.read_results(engine.train(cfg))["status"] == "completed"
