"""Large-model settings of hardware/: 8/4-bit loading, device_map, gradient checkpointing, and the
memory estimate printed before a run (checked against measured peaks in the slow test)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAMILIES, tiny_backbone, tiny_overrides
from ltune_cli import engine, memory, runfolder
from ltune_cli.config import MethodConfig, compose
from ltune_cli.errors import LtuneError
from ltune_cli.methods import build_method
from ltune_cli.models.backbone import DTYPES, enable_checkpointing

LABELS = ["negative", "positive", "not neutral"]
METHODS = [("prefix", "per_token"), ("prompt", "per_token"), ("lt_prefix", "per_token"),
           ("lt_prefix", "paper"), ("lt_prompt", "per_token")]


def cfg_for(files, out, model_dir, **extra):
    train, dev = files
    return compose(tiny_overrides(train, dev, out, **{"model.path": model_dir, **extra}))


HARDWARE = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "hardware").glob("*.yaml"))


@pytest.mark.parametrize("preset", [p for p in HARDWARE if p not in ("gpu_8bit", "gpu_4bit")])
def test_every_hardware_preset_trains_on_a_cpu(preset, sentiment_files, tmp_path, tiny_llama_dir):
    """A preset's settings (dtype, micro-batches, gradient checkpointing, device_map, ddp/fsdp over two
    gloo processes) with hardware.device=cpu: how a GPU configuration is tried on a machine without
    one. gpu_large and offload (bf16 + checkpointing) failed in backward on every family and method
    until the recomputation kept the forward's attention kernels. 8/4-bit: the test above."""
    train, dev = sentiment_files
    ov = [f"hardware={preset}" if o == "hardware=cpu" else o
          for o in tiny_overrides(train, dev, tmp_path / "run", method="lt_prompt", steps=2, **{"model.path": tiny_llama_dir})]
    ov = [o for o in ov if not o.startswith("hardware.batch_size=")] + ["hardware.device=cpu"]
    ov += ["hardware.nproc=2"] if preset in ("ddp", "fsdp") else []
    res = runfolder.read_results(engine.train(compose(ov)))
    assert res["status"] == "completed" and res["steps"] == 2


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantised_loading_without_bitsandbytes_names_the_extra(sentiment_files, tmp_path, tiny_llama_dir, bits):
    cfg = cfg_for(sentiment_files, tmp_path / "q", tiny_llama_dir, **{"hardware.load_in": bits})
    with pytest.raises(LtuneError, match=r"hardware.load_in=.* bitsandbytes, which is not installed: "
                                         r"pip install -e '\.\[quant\]'"):
        engine.train(cfg)
    assert runfolder.read_results(cfg.out_dir)["status"] == "failed"


def test_quantised_presets_compose():
    for preset, bits in (("gpu_8bit", "8bit"), ("gpu_4bit", "4bit")):
        hw = compose([f"hardware={preset}"]).hardware
        assert hw.load_in == bits and hw.dtype == "bf16" and hw.gradient_checkpointing


def test_device_map_auto_loads_through_accelerate_and_trains(sentiment_files, tmp_path, tiny_llama_dir):
    cfg = cfg_for(sentiment_files, tmp_path / "dm", tiny_llama_dir, method="prefix",
                  **{"hardware.device_map": "auto", "hardware.device": "auto"})
    run = engine.train(cfg)
    assert runfolder.read_results(run)["status"] == "completed"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_identical_gradients(family, dtype):
    """Prefix methods included: the prefix rides in a read-only cache, so a recomputed block
    attends to the same prefix (transformers' own gradient_checkpointing_enable() drops the
    cache inside checkpointed blocks and the prefix forward fails). bf16: a bf16 base under
    autocast, as gpu_large runs it; on a CPU its forward runs in SDPA's math kernel
    (Backbone._forward), and the recomputation must too (it picked flash and backward failed)."""
    from ltune_cli.engine import autocaster
    from ltune_cli.models.backbone import half_matmuls

    for name, variant in METHODS:
        if family == "deberta-v2" and "prefix" in name:
            continue
        out = []
        for gc in (False, True):
            bb = tiny_backbone(family)
            bb.model.to(DTYPES[dtype])
            if gc:
                assert enable_checkpointing(bb.model) == 2
            torch.manual_seed(0)
            m = build_method(MethodConfig(name=name, variant=variant, num_virtual_tokens=3), bb, LABELS)
            tok = bb.tokenizer
            enc = tok(["the movie was good", "bad film", "it was a very dull plot"], padding=True, return_tensors="pt")
            batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            batch["labels"] = torch.tensor([1, 0, 2])
            with memory.count_saved() as saved, autocaster(bb.device, dtype)():
                loss = m.training_loss(batch, torch.Generator().manual_seed(0))
            with half_matmuls(bb.device, dtype)():  # as engine._step: the recomputed forward's products too
                loss.backward()
            out.append((loss.item(), {k: p.grad.clone() for k, p in m.named_parameters() if p.requires_grad},
                        saved["bytes"]))
        (l0, g0, s0), (l1, g1, s1) = out
        assert l0 == l1, (family, name)
        assert all(torch.equal(g0[k], g1[k]) for k in g0), (family, name)
        assert s1 < s0, (family, name)  # and it does keep less for backward


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_gradient_checkpointing_run_equals_plain_run(sentiment_files, tmp_path, tiny_llama_dir, dtype):
    """bf16: gpu_large's settings (bf16 base, autocast, checkpointing) on a CPU."""
    plain = engine.train(cfg_for(sentiment_files, tmp_path / "a", tiny_llama_dir, method="lt_prefix",
                                 **{"hardware.dtype": dtype}))
    gc = engine.train(cfg_for(sentiment_files, tmp_path / "b", tiny_llama_dir, method="lt_prefix",
                              **{"hardware.gradient_checkpointing": True, "hardware.dtype": dtype}))
    strip = ("time_s", "examples_per_s")
    rec = [[{k: v for k, v in r.items() if k not in strip} for r in runfolder.read_metrics(x)] for x in (plain, gc)]
    assert rec[0] == rec[1]
    ma, mb = (runfolder.read_results(x)["memory"] for x in (plain, gc))
    assert mb["train_activation_bytes"] < ma["train_activation_bytes"]
    # An evaluation forward holds a block's tensors whether or not training recomputes blocks: the
    # estimate probes one block with its tensors kept (it took the checkpointed probe's block inputs,
    # and an H200 ran Llama-2-7B lt_prompt's evaluation in 14x what was estimated).
    assert abs(mb["eval_activation_bytes"] / ma["eval_activation_bytes"] - 1) < 0.2  # its first block stands for all


def test_block_kept_keeps_one_block_not_all():
    """memory.estimate's whole-block probe: one block keeps its tensors, the others their inputs
    (keeping every block made the probe itself the peak of a 7B run on the H200: +2 to +4.5 GiB)."""
    from ltune_cli.models.backbone import block_kept

    def saved(gc: bool, kept: bool) -> int:
        bb = tiny_backbone("llama")
        if gc:
            enable_checkpointing(bb.model)
        enc = bb.tokenizer(["the movie was good and the plot was very dull"], return_tensors="pt")
        emb = bb.embed(enc["input_ids"]).detach().requires_grad_()  # gradients flow through every block
        with memory.count_saved() as box, (block_kept(bb.model) if kept else contextlib.nullcontext()):
            bb.model(inputs_embeds=emb, attention_mask=enc["attention_mask"])
        return box["bytes"]

    plain, ckpt, one = saved(False, False), saved(True, False), saved(True, True)
    assert ckpt < one < plain
    assert abs((one - ckpt) / ((plain - ckpt) / 2) - 1) < 0.1  # 2 layers: one of them kept


def test_estimate_is_printed_and_recorded(sentiment_files, tmp_path, tiny_bert_dir, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="ltune")
    run = engine.train(cfg_for(sentiment_files, tmp_path / "m", tiny_bert_dir))
    assert any("memory estimate per process" in r.getMessage() for r in caplog.records)
    m = runfolder.read_results(run)["memory"]
    parts = ("frozen_bytes", "trainable_bytes", "grad_bytes", "optimizer_bytes", "other_bytes", "activation_bytes",
             "transient_bytes")
    assert m["estimate_bytes"] == pytest.approx(sum(m[k] for k in parts), abs=len(parts))
    bb = tiny_backbone("bert")
    assert m["frozen_bytes"] == sum(t.numel() * t.element_size() for t in [*bb.parameters(), *bb.buffers()])
    assert m["optimizer_bytes"] == 2 * m["trainable_bytes"] and m["peak_rss_bytes"] > 0


# --------------------------------------------------------------------------- estimate vs measured
def _measured_peak(cfg, backbone=None) -> tuple[dict, dict]:
    """Run training with the CPU allocator traced by torch.profiler (profile_memory): the peak
    of live tensor bytes within every step (forward + backward) and every evaluation, on top of
    what persists (frozen base, trainable weights, AdamW moments, label states)."""
    from torch.profiler import ProfilerActivity, profile

    peaks = {"step": 0, "eval": 0}

    def traced(fn, name):
        def wrapper(*a, **k):
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                r = fn(*a, **k)
            cur = peak = 0
            for e in sorted(prof.events(), key=lambda e: e.time_range.start):
                cur += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
                peak = max(peak, cur)
            peaks[name] = max(peaks[name], peak)
            return r

        return wrapper

    real_step, real_eval = engine._step, engine.evaluate
    engine._step, engine.evaluate = traced(real_step, "step"), traced(real_eval, "eval")
    try:
        run = engine.train(cfg, backbone=backbone)
    finally:
        engine._step, engine.evaluate = real_step, real_eval
    est = runfolder.read_results(run)["memory"]
    persistent = est["frozen_bytes"] + est["trainable_bytes"] + est["optimizer_bytes"] + est["other_bytes"]
    return est, {"activations_and_grads": max(peaks.values()), "peak": persistent + max(peaks.values())}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["minilm", "smollm2_135m"])
def test_estimate_within_25_percent_of_measured_peak(model, tmp_path):
    """Default batch sizes (16 / 64), SST-2 texts; the epoch is covered so the longest batch runs.
    Figures go to docs/gpu.md (run with -s to see them)."""
    try:
        cfg = compose([f"model={model}", "dataset=sst2", "dataset.train_limit=64", "dataset.eval_limit=64",
                       "train.max_steps=4", "train.eval_every=4", "train.progress=false", "hardware=cpu",
                       f"out_dir={tmp_path / 'run'}"])
        est, meas = _measured_peak(cfg)
    except LtuneError as e:
        if "not installed" in str(e):
            pytest.skip(str(e))
        raise
    ratio = est["estimate_bytes"] / meas["peak"]
    print(json.dumps({"model": model, "estimate_MiB": est["estimate_bytes"] / 2**20,
                      "measured_peak_MiB": meas["peak"] / 2**20, "ratio": ratio,
                      "activation_estimate_MiB": (est["activation_bytes"] + est["grad_bytes"]) / 2**20,
                      "activation_measured_MiB": meas["activations_and_grads"] / 2**20}))
    assert 0.75 <= ratio <= 1.25


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lt_prefix", "prefix", "prompt", "lt_prompt"])
def test_estimate_for_a_7b_wide_model(method, sentiment_files, tmp_path):
    """Llama-2-7B's width (d 4096, 32 heads, FFN 11008) at 2 layers, fp32 on the CPU: the estimate
    against the measured peak, within 25% as for the offline models (lt_prefix's map is 4096 ->
    2 x 2 x 4096 per label token, 67M weights: its AdamW moments and warm start dominate)."""
    from transformers import AutoModel, LlamaConfig

    from conftest import make_tokenizer, tiny_config
    from ltune_cli.config import ModelConfig
    from ltune_cli.models.backbone import load_backbone

    wide = {**tiny_config("llama").to_dict(), "hidden_size": 4096, "intermediate_size": 11008,
            "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "num_hidden_layers": 2}
    torch.manual_seed(0)
    model = AutoModel.from_config(LlamaConfig(**wide)).eval()
    bb = load_backbone(ModelConfig(name="llama-7b-wide", path="tiny:llama"), None, model=model,
                       tokenizer=make_tokenizer(pair_template=False))
    cfg = compose(tiny_overrides(*sentiment_files, tmp_path / "run", method=method, steps=2,
                                 **{"train.eval_every": 2, "dataset.eval_limit": 16}))
    est, meas = _measured_peak(cfg, backbone=bb)
    ratio = est["estimate_bytes"] / meas["peak"]
    print(json.dumps({"model": "llama-7b-wide-2-layers", "method": method, "estimate_MiB": est["estimate_bytes"] / 2**20,
                      "measured_peak_MiB": meas["peak"] / 2**20, "ratio": ratio}))
    assert 0.75 <= ratio <= 1.25


# --------------------------------------------------------------------------- bf16 on a CPU without bf16 instructions
def test_half_products_on_fp32_copies_are_what_the_native_kernels_compute():
    """HalfMatmulsInFp32 runs a bf16/fp16 product of CPU tensors on fp32 copies and rounds once.
    Small integers make every sum exact in any order, so the native kernel's result must come out
    bit for bit, in the half type, and the product must have run in fp32 (seen by a mode below)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ltune_cli.models.backbone import HalfMatmulsInFp32

    seen = []

    class Below(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append((func.__name__, [a.dtype for a in args if isinstance(a, torch.Tensor)]))
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(0)

    def ints(*shape, dtype):
        return torch.randint(-8, 9, shape, generator=g).to(dtype)

    for dtype in (torch.bfloat16, torch.float16):
        a, b, c = ints(5, 7, dtype=dtype), ints(7, 3, dtype=dtype), ints(5, 3, dtype=dtype)
        A, B, C = ints(2, 5, 7, dtype=dtype), ints(2, 7, 3, dtype=dtype), ints(2, 5, 3, dtype=dtype)
        v, w = ints(7, dtype=dtype), ints(5, dtype=dtype)
        cases = [(torch.mm, (a, b), {}), (torch.addmm, (c, a, b), {"beta": 2, "alpha": 3}), (torch.bmm, (A, B), {}),
                 (torch.baddbmm, (C, A, B), {"alpha": 2}), (torch.mv, (a, v), {}), (torch.addmv, (w, a, v), {})]
        for fn, args, kw in cases:
            native = fn(*args, **kw)
            seen.clear()
            with Below(), HalfMatmulsInFp32():
                got = fn(*args, **kw)
            assert got.dtype == dtype and torch.equal(got, native)
            assert seen and all(dt == torch.float32 for _, dts in seen if _.startswith(("mm", "addmm", "bmm",
                                                                                      "baddbmm", "mv", "addmv"))
                                for dt in dts), seen
    with HalfMatmulsInFp32():  # fp32 products and other ops pass through untouched
        x = torch.ones(3, 3)
        assert (x @ x).dtype == torch.float32 and torch.equal(x @ x, torch.full((3, 3), 3.0))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_training_step_with_half_products_on_fp32_copies_matches_the_native_one(family):
    """Forward and backward of every method in bf16 on a CPU, native products vs HalfMatmulsInFp32
    (engine: around the forward in s.autocast(), around backward in s.matmuls()): the same loss and
    gradients up to bf16's rounding, the order of fp32 sums being all that differs."""
    from ltune_cli.models.backbone import HalfMatmulsInFp32

    for name, variant in METHODS:
        out = []
        for mode in (contextlib.nullcontext, HalfMatmulsInFp32):
            bb = tiny_backbone(family)
            bb.model.to(torch.bfloat16)
            torch.manual_seed(0)
            m = build_method(MethodConfig(name=name, variant=variant, num_virtual_tokens=3), bb, LABELS)
            enc = bb.tokenizer(["the movie was good", "bad film", "it was a very dull plot"], padding=True,
                               return_tensors="pt")
            batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            batch["labels"] = torch.tensor([1, 0, 2])
            with torch.autocast("cpu", dtype=torch.bfloat16), mode():
                loss = m.training_loss(batch, torch.Generator().manual_seed(0))
            with mode():
                loss.backward()
            out.append((loss.item(), {k: p.grad.clone() for k, p in m.named_parameters() if p.requires_grad}))
        (l0, g0), (l1, g1) = out
        assert l1 == pytest.approx(l0, rel=1e-2), (name, variant)
        for k in g0:
            scale = g0[k].abs().max().clamp(min=1e-12)
            assert (g1[k] - g0[k]).abs().max() / scale < 5e-2, (name, variant, k)


_PRODUCTS = ("mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "dot", "vdot", "linear", "matmul", "einsum", "bilinear",
             "tensordot", "_addmm_activation", "mkldnn_linear")


def _half_products_below():
    """A dispatch mode that records the matrix products, composite or not, reaching it with a
    bf16/fp16 tensor: what HalfMatmulsInFp32 above it let through to the native kernels."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Below(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] in _PRODUCTS and any(
                    isinstance(a, torch.Tensor) and a.dtype in (torch.bfloat16, torch.float16) for a in args):
                self.seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    return Below()


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_products_run_on_fp32_copies_too(family):
    """torch.inference_mode (evaluation, `ltune eval`) hands composite ops (aten.linear, aten.matmul)
    to a dispatch mode whole: HalfMatmulsInFp32 must take them apart, or every evaluation runs the
    native bf16 kernels (the study's SmolLM2 evaluations: 95% of their time in bf16_dot). A frozen
    model's bias reaches it as an nn.Parameter. Every method, every family: no half product gets
    through, and the scores are the native kernels' ones."""
    from ltune_cli.models.backbone import HalfMatmulsInFp32

    enc_texts = ["the movie was good", "bad film", "it was a very dull plot"]
    for name, variant in METHODS:
        bb = tiny_backbone(family)
        bb.model.to(torch.bfloat16)
        torch.manual_seed(0)
        try:
            m = build_method(MethodConfig(name=name, variant=variant, num_virtual_tokens=3), bb, LABELS).eval()
        except LtuneError:  # a key/value prefix on a family whose attention takes none (DeBERTa)
            continue
        enc = bb.tokenizer(enc_texts, padding=True, return_tensors="pt")
        batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        scores = {}
        for mode in (contextlib.nullcontext, HalfMatmulsInFp32):
            below = _half_products_below()
            with torch.inference_mode(), below, torch.autocast("cpu", dtype=torch.bfloat16), mode():
                scores[mode] = m.scores(batch).float()
            if mode is HalfMatmulsInFp32:
                assert below.seen == [], (family, name, variant, sorted(set(below.seen)))
            else:
                assert below.seen, "the recorder sees the native half products"
        native, copies = scores.values()
        assert torch.allclose(copies, native, rtol=2e-2, atol=2e-2 * native.abs().max().item()), (family, name)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fp32_products_change_no_other_op_of_a_training_step(family):
    """Forward and backward of a training step: every op that reaches the kernels without
    HalfMatmulsInFp32 reaches them with it too (none taken apart: an op with a kernel of its own,
    silu_backward, decomposed would round differently), and the loss and gradients match."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ltune_cli.models.backbone import HalfMatmulsInFp32

    class Below(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func.__name__)
            return func(*args, **(kwargs or {}))

    seen, out = {}, {}
    for mode in (contextlib.nullcontext, HalfMatmulsInFp32):
        bb = tiny_backbone(family)
        bb.model.to(torch.bfloat16)
        torch.manual_seed(0)
        m = build_method(MethodConfig(name="lt_prefix", variant="per_token", num_virtual_tokens=3), bb, LABELS)
        enc = bb.tokenizer(["the movie was good", "bad film"], padding=True, return_tensors="pt")
        batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        batch["labels"] = torch.tensor([1, 0])
        below = Below()
        with below, torch.autocast("cpu", dtype=torch.bfloat16), mode():
            loss = m.training_loss(batch, torch.Generator().manual_seed(0))
        with below, mode():
            loss.backward()
        seen[mode] = below.ops
        out[mode] = [loss.item()] + [p.grad.abs().sum().item() for p in m.parameters() if p.requires_grad]
    missing = seen[contextlib.nullcontext] - seen[HalfMatmulsInFp32]
    assert not missing, f"taken apart under the mode: {sorted(missing)}"
    assert out[HalfMatmulsInFp32] == pytest.approx(out[contextlib.nullcontext], rel=1e-2)


def test_engine_evaluation_takes_the_fp32_products(sentiment_files, tmp_path, tiny_llama_dir, monkeypatch):
    """engine.evaluate (inference mode) on a CPU where bf16 products are slow: none reaches the native
    kernels."""
    from ltune_cli.models import backbone

    monkeypatch.setitem(backbone._SLOWDOWN, "bf16", 30.0)
    s = engine.build(cfg_for(sentiment_files, tmp_path / "run", tiny_llama_dir, method="lt_prefix",
                             **{"hardware.dtype": "bf16"}))
    below = _half_products_below()
    with below:
        metrics, _ = engine.evaluate(s, limit=8)
    assert below.seen == [] and 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("impl", ["ltune", "peft"])
def test_the_bench_steps_and_scores_with_the_engines_products(impl, sentiment_files, tmp_path, tiny_llama_dir,
                                                               monkeypatch):
    """`ltune bench` measures the engine's step: on a CPU where bf16 products are slow, its forwards,
    backward (LtuneTrain and the PEFT baseline alike) and evaluation pass take HalfMatmulsInFp32
    as engine.build does; none reaches the native kernels."""
    from ltune_cli.batching import encode_examples
    from ltune_cli.bench.variants import EvalPass, LtuneTrain, PeftTrain
    from ltune_cli.data import load_splits
    from ltune_cli.models import backbone
    from ltune_cli.models.backbone import load_backbone

    if impl == "peft":
        pytest.importorskip("peft")
    monkeypatch.setitem(backbone._SLOWDOWN, "bf16", 30.0)
    cfg = cfg_for(sentiment_files, tmp_path / "b", tiny_llama_dir, method="prompt", **{"hardware.dtype": "bf16"})
    bb = load_backbone(cfg.model, cfg.hardware)
    data = load_splits(cfg.dataset)
    enc = encode_examples(data.train[:8], bb.tokenizer, cfg.model.max_length)
    autocast = engine.autocaster(bb.device, "bf16")
    runner = (LtuneTrain(cfg, bb, data.label_texts, enc, bb.device, autocast) if impl == "ltune" else
              PeftTrain("prompt", cfg, bb, len(data.label_texts), enc, bb.device, torch.bfloat16, autocast))
    below = _half_products_below()
    with below:
        runner.step(np.arange(4))
        if impl == "ltune":
            EvalPass(cfg, bb, data.label_texts, enc, bb.device, autocast).run()
    assert below.seen == [], sorted(set(below.seen))


def test_a_bf16_run_on_a_cpu_without_bf16_instructions_takes_the_fp32_products(sentiment_files, tmp_path,
                                                                              tiny_llama_dir, monkeypatch, caplog):
    """Where bf16 products are many times slower than fp32 (an AVX2-only EPYC: 36-70x; the study's
    SmolLM2 runs went from 2.6 s a step to 220), engine.build says so and takes HalfMatmulsInFp32
    for the forwards and backward; elsewhere nothing changes. Both give the same run up to bf16's
    rounding."""
    from ltune_cli.models import backbone
    from ltune_cli.models.backbone import HalfMatmulsInFp32

    runs = {}
    for slowdown in (30.0, 1.0):
        monkeypatch.setitem(backbone._SLOWDOWN, "bf16", slowdown)
        cfg = cfg_for(sentiment_files, tmp_path / f"x{slowdown}", tiny_llama_dir, method="lt_prompt",
                      **{"hardware.dtype": "bf16"})
        caplog.clear()
        with caplog.at_level("INFO", logger="ltune"):
            s = engine.build(cfg)
        said = [r.message for r in caplog.records if "on this CPU" in r.message]
        assert (s.matmuls is HalfMatmulsInFp32, bool(said)) == ((True, True) if slowdown > 3 else (False, False))
        if said:
            assert "30x as long as fp32" in said[0] and "rounded to bf16 once" in said[0]
        modes = []  # the mode each backward runs under: backward's products too
        backward = torch.Tensor.backward

        def spy(self, *a, _modes=modes, _backward=backward, **k):
            from torch.utils._python_dispatch import _get_current_dispatch_mode

            _modes.append(type(_get_current_dispatch_mode()).__name__)
            return _backward(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, "backward", spy)
        run = engine.train(cfg)
        runs[slowdown] = [r["val_loss"] for r in runfolder.read_metrics(run) if r["kind"] == "eval"]
        monkeypatch.setattr(torch.Tensor, "backward", backward)
        assert runfolder.read_results(run)["versions"]["cpu_half_products"] == (
            "fp32 copies, rounded once" if slowdown > 3 else "native")
        assert modes and set(modes) == {"HalfMatmulsInFp32" if slowdown > 3 else "NoneType"}
    assert runs[30.0] == pytest.approx(runs[1.0], rel=1e-2)
