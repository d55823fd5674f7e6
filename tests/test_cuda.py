"""The CUDA paths for real, on a machine with a GPU; skipped everywhere else.

    make test-gpu      # = python -m pytest -m gpu tests/test_cuda.py -s (-s prints the figures)

On the CPU the same code runs with hardware=cpu. These check that the device is configuration:
every tiny family x method trains on CUDA in fp32 to the CPU run's losses and scores; in bf16
(hardware=gpu) with a bf16 base and fp32 trainable weights, near the fp32 losses; a run cut
after a checkpoint and resumed on CUDA equals the uninterrupted one; and the memory estimate
a run prints holds against torch.cuda.max_memory_allocated. docs/gpu.md records what they gave.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from conftest import FAMILIES, save_tiny_model, tiny_overrides, train_killed, write_sentiment_csv
from ltune_cli import checkpoint, engine, runfolder
from ltune_cli.config import compose

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

METHODS = ["prefix", "prompt", "lt_prefix", "lt_prompt"]
# DeBERTa's attention takes no key/value cache: the prefix methods refuse it (tested on the CPU).
CASES = [(f, m) for f in FAMILIES for m in METHODS if not (f == "deberta-v2" and m.endswith("prefix"))]
# fp32 on CUDA and on the CPU differ by summation order alone (~1e-7 relative per op; TF32 stays
# off); 6 AdamW steps keep that far below 1e-4.
FP32_RTOL = 1e-4
# A bf16 base rounds every activation to 8 bits of mantissa (2^-8 = 0.004 relative): the first
# step's loss (before any update) is allowed 5 %.
BF16_RTOL = 5e-2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda-models")
    return {f: save_tiny_model(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda-data")
    return write_sentiment_csv(root / "train.csv", 96, seed=1), write_sentiment_csv(root / "dev.csv", 32, seed=2)


def record(**figures) -> None:
    """The measured figure, printed (-s) and, with LTUNE_GPU_LOG=<file>, appended to that file as
    a JSON line (pytest-xdist workers' prints do not reach the terminal)."""
    print("\n" + json.dumps(figures))
    if os.environ.get("LTUNE_GPU_LOG"):
        with open(os.environ["LTUNE_GPU_LOG"], "a") as f:
            f.write(json.dumps(figures) + "\n")


def config(files, out, folder, method, hardware, steps=6, **extra):
    train, dev = files
    ov = tiny_overrides(train, dev, out, method=method, steps=steps, **{"model.path": folder, **extra})
    return compose([f"hardware={hardware}" if o == "hardware=cpu" else o for o in ov])


def curves(run) -> dict:
    recs = runfolder.read_metrics(run)
    return {"train": [r["train_loss"] for r in recs if r["kind"] == "train"],
            "val": [r["val_loss"] for r in recs if r["kind"] == "eval"],
            "acc": [r["accuracy"] for r in recs if r["kind"] == "eval"]}


def rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a, (a, b)
    return max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b))


@pytest.mark.parametrize("family,method", CASES)
def test_fp32_on_cuda_trains_as_on_the_cpu(files, folders, tmp_path, family, method):
    cpu = curves(engine.train(config(files, tmp_path / "cpu", folders[family], method, "cpu")))
    run = engine.train(config(files, tmp_path / "cuda", folders[family], method, "gpu", **{"hardware.dtype": "fp32"}))
    assert runfolder.read_results(run)["memory"]["peak_cuda_allocated_bytes"] > 0  # it ran on the GPU
    got = curves(run)
    d_train, d_val = rel(got["train"], cpu["train"]), rel(got["val"], cpu["val"])
    record(test="fp32 cuda vs cpu", case=f"{family}/{method}", train_loss_rel=d_train, val_loss_rel=d_val)
    assert d_train < FP32_RTOL and d_val < FP32_RTOL
    # 32 dev texts: a score within 1e-4 of a tie may flip one prediction, no more
    assert all(abs(a - b) <= 1 / 32 + 1e-9 for a, b in zip(got["acc"], cpu["acc"]))


@pytest.mark.parametrize("family,method", CASES)
def test_bf16_on_cuda_keeps_fp32_trainables_and_the_fp32_loss(files, folders, tmp_path, family, method):
    fp32 = curves(engine.train(config(files, tmp_path / "fp32", folders[family], method, "gpu",
                                      **{"hardware.dtype": "fp32"})))
    run = engine.train(config(files, tmp_path / "bf16", folders[family], method, "gpu"))
    got = curves(run)
    assert all(math.isfinite(x) for x in got["train"] + got["val"])
    from safetensors.torch import load_file

    weights = load_file(run / "trainable.safetensors")
    assert weights and all(w.dtype == torch.float32 for w in weights.values())
    d0 = abs(got["train"][0] - fp32["train"][0]) / fp32["train"][0]
    record(test="bf16 vs fp32 on cuda", case=f"{family}/{method}", first_loss_rel=d0,
           last_val_loss=[got["val"][-1], fp32["val"][-1]])
    assert d0 < BF16_RTOL


@pytest.mark.parametrize("family,method", [("bert", "lt_prefix"), ("llama", "lt_prompt"), ("falcon", "prefix")])
def test_a_run_resumed_on_cuda_equals_the_uninterrupted_one(files, folders, tmp_path, monkeypatch, family, method):
    kw = {"hardware.dtype": "fp32", "train.checkpoint_every": 2}
    full = curves(engine.train(config(files, tmp_path / "full", folders[family], method, "gpu", steps=8, **kw)))
    cfg = config(files, tmp_path / "cut", folders[family], method, "gpu", steps=8, **kw)
    train_killed(cfg, 6, monkeypatch)
    assert [p.name for p in checkpoint.list_checkpoints(cfg.out_dir)] == ["step-00000002.pt", "step-00000004.pt"]
    cfg.resume = True
    cut = curves(engine.train(cfg))
    d = max(rel(cut["train"], full["train"]), rel(cut["val"], full["val"]))
    record(test="resumed on cuda vs uninterrupted", case=f"{family}/{method}", max_rel=d)
    assert d < 1e-6 and cut["acc"] == full["acc"]


@pytest.mark.parametrize("preset", ["gpu", "gpu_large"])
def test_the_memory_estimate_holds_on_cuda(tmp_path, preset):
    """A BERT-base-sized random encoder in bf16 on 128-token texts: the estimate the run prints
    against the CUDA allocator's peak (the CPU counterpart: docs/gpu.md, 1.03-1.09). gpu: batch 32,
    eval 64; gpu_large: its micro-batch 8 x 4 with gradient checkpointing, eval 64."""
    import transformers as tf

    from conftest import WORDS, make_tokenizer

    folder = tmp_path / "bert-base"
    tf.BertModel(tf.BertConfig()).save_pretrained(folder)  # 12 layers, d=768: BERT-base's shape
    make_tokenizer().save_pretrained(folder)
    import random

    rng = random.Random(0)
    for name, n in (("train.csv", 256), ("dev.csv", 64)):
        rows = [f'"{" ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140)))}",{i % 2}' for i in range(n)]
        (tmp_path / name).write_text("text,label\n" + "\n".join(rows) + "\n")
    out = []
    for method in METHODS:
        ov = tiny_overrides(tmp_path / "train.csv", tmp_path / "dev.csv", tmp_path / method, method=method, steps=8,
                            **{"model.path": folder, "model.max_length": 128, "train.eval_every": 8})
        ov = [o for o in ov if not o.startswith(("hardware.batch_size=", "hardware.eval_batch_size="))]
        ov += ["hardware.batch_size=32"] if preset == "gpu" else []
        # One process per run, as a user runs it: in one process the CUDA libraries' state left by
        # the runs before (0.1-0.3 GiB on an H200, not tensors: test_gpu_config checks those) is
        # in the later runs' peaks.
        import subprocess
        import sys

        argv = [sys.executable, "-m", "ltune_cli", "train", *[(f"hardware={preset}" if o == "hardware=cpu" else o)
                                                               for o in ov]]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        mem = runfolder.read_results(tmp_path / method)["memory"]
        out.append((method, mem["estimate_bytes"] / 2**20, mem["peak_cuda_allocated_bytes"] / 2**20))
    record(test=f"memory estimate / CUDA peak, BERT-base shape, 128 tokens, hardware={preset}",
           MiB={m: [round(e, 1), round(p, 1), round(e / p, 3)] for m, e, p in out})
    assert all(0.85 < e / p < 1.35 for _, e, p in out), out
