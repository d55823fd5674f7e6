"""One `ltune bench` run: every variant of every model, timed side by side in this process.

Per model: load the frozen base once, tokenise SST-2 (or the configured dataset) once, draw
the training batches once (length-grouped, seeded, as `ltune train` does), build every
variant, then time them on the same batches, interleaved step by step: a round is a dense
matmul probe, then every variant taking one step on the round's batch (order reversed every
other round); a repeat is `steps` rounds. Ratios are computed per repeat, so machine load
that drifts (a shared machine) hits both sides of a ratio alike.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ltune_cli.bench import measure
from ltune_cli.bench.settings import BenchSettings
from ltune_cli.bench.variants import (
    EvalPass,
    LtuneTrain,
    PeftTrain,
    matmul_params,
    padded_tokens,
    real_tokens,
    subset,
)
from ltune_cli.errors import LtuneError

log = logging.getLogger("ltune")

SCHEMA = "ltune.bench/1"
FLOPS_CONVENTION = ("4*N*tokens per training step, forward 2N + input-gradient backward 2N per token "
                    "(frozen weights: no weight-gradient GEMMs). N = parameters of the frozen LM "
                    "excluding embedding tables and the [CLS]-only pooler; tokens = the real (non-pad) "
                    "positions the step's forwards put through the layers, counted by a hook: the texts' "
                    "tokens + prompt positions (prompt / lt_prompt; a prompt a decoder reads once per "
                    "forward counts once). Attention score FLOPs and the re-encoding mode's extra label "
                    "forward (no grad) are not counted.")
# Label sets for the K-label evaluation: the dataset's own label texts first, then words from
# this list that tokenise to as many tokens as they do (so that K is all that changes with K).
EXTRA_LABELS = ["neutral", "mixed", "angry", "happy", "sad", "funny", "boring", "exciting", "scary", "calm",
                "clear", "long", "short", "old", "new", "loud", "quiet", "bright", "dark", "good", "bad",
                "great", "poor", "strong", "weak", "simple", "hard", "easy", "warm", "cold", "fast", "slow",
                "rich", "free", "true", "false", "real", "fresh", "dull", "sharp", "safe", "wild", "young",
                "big", "small", "romantic", "violent", "confusing"]


def label_pool(words: list[str], tokenizer) -> list[str]:
    """The dataset's label words, then EXTRA_LABELS of the same token length, then the rest."""
    def n_tokens(t: str) -> int:
        return len(tokenizer(t)["input_ids"])

    longest = max(n_tokens(w) for w in words)
    extra = [w for w in EXTRA_LABELS if w not in words]
    same = [w for w in extra if n_tokens(w) == longest]
    return words + same + [w for w in extra if w not in same]


def describe(label: str) -> str:
    """A descriptive label text (>= 40 tokens); method.label_len cuts it to the length measured."""
    return (f"{label}: the review expresses a {label} opinion of the film overall, judging its story, "
            f"its acting, its pacing, its music and its ending, and the critic would call the whole "
            f"experience {label} when asked to sum it up in a single word for the readers")


@dataclass
class TrainVariant:
    key: str
    group: str  # main | label_len | batching
    method: str
    impl: str  # ltune | ltune-reencode | peft
    label_tokens: int | None = None
    batching: str = "grouped"
    runner: object = None
    skipped: str | None = None
    times: list[float] = field(default_factory=list)  # per repeat, all timed steps
    step_times: list[list[float]] = field(default_factory=list)  # per repeat, per timed step
    peaks: list[float] = field(default_factory=list)  # per repeat: mean of its matmul probes
    cuda_peak: int = 0
    extra: dict = field(default_factory=dict)
    mem_spec: dict | None = None


def model_overrides(spec: str) -> list[str]:
    from ltune_cli.paths import conf_dir

    if (conf_dir() / "model" / f"{spec}.yaml").is_file():
        return [f"model={spec}"]
    return [f"model.path={spec}", f"model.name={Path(spec).name or spec}"]


def _pick_batches(order, lengths: np.ndarray, steps: int, warmup: int) -> list[np.ndarray]:
    """`warmup` batches, then `steps` batches at evenly spaced quantiles of padded length.

    The candidates are the first max(32, 8 * steps) batches of the seeded stream `ltune train`
    would draw; picking by quantile makes a few timed steps span short, typical and long
    batches instead of whatever the first few happen to be. Timed batches come shortest first.
    """
    cands = [next(order) for _ in range(max(32, 8 * steps) + warmup)]
    warm, pool = cands[:warmup], cands[warmup:]
    pool.sort(key=lambda b: int(lengths[b].max()))
    picks = [int((i + 0.5) * len(pool) / steps) for i in range(steps)]
    return warm + [pool[i] for i in picks]


def _pad_stats(lengths: np.ndarray, batch_size: int, seed: int, grouped: bool) -> dict:
    """Padded / real tokens over one full training epoch of that batch order."""
    from ltune_cli.batching import BatchOrder

    order = BatchOrder(lengths, batch_size, seed, grouped)
    n = -(-len(lengths) // batch_size)
    real = padded = 0
    for _ in range(n):
        b = lengths[next(order)]
        real += int(b.sum())
        padded += int(b.max()) * len(b)
    return {"batches": n, "real_tokens": real, "padded_tokens": padded, "pad_ratio": padded / real}


def bench_model(spec: str, st: BenchSettings, say) -> dict:
    from ltune_cli.batching import BatchOrder, encode_examples
    from ltune_cli.config import compose
    from ltune_cli.data import load_splits
    from ltune_cli.engine import autocaster
    from ltune_cli.models.backbone import DTYPES, load_backbone

    base_ov = model_overrides(spec) + list(st.overrides)
    cfg0 = compose(base_ov)
    hw = cfg0.hardware
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)
    t = time.perf_counter()
    backbone = load_backbone(cfg0.model, hw)
    load_s = time.perf_counter() - t
    device, dtype = backbone.device, DTYPES[hw.dtype]
    autocast = autocaster(device, hw.dtype)  # the engine's, half products on fp32 copies included
    data = load_splits(cfg0.dataset)
    t = time.perf_counter()
    enc = encode_examples(data.train, backbone.tokenizer, cfg0.model.max_length, what="train")
    encode_s = time.perf_counter() - t
    B, seed = hw.batch_size, cfg0.seed
    N = matmul_params(backbone.model)
    say(f"[{cfg0.model.name}] loaded in {load_s:.1f} s on {device} ({hw.dtype}); N_matmul={N / 1e6:.1f}M, "
        f"{len(enc)} train texts tokenised in {encode_s:.1f} s")

    batches = {"grouped": _pick_batches(BatchOrder(enc.lengths, B, seed, True), enc.lengths, st.steps, st.warmup),
               "random": _pick_batches(BatchOrder(enc.lengths, B, seed, False), enc.lengths, st.steps,
                                       st.warmup)}

    composed: dict[tuple, object] = {}

    def cfg_for(method: str, *extra: str):
        key = (method, *extra)
        if key not in composed:
            composed[key] = compose(base_ov + [f"method={method}", *extra])
        return composed[key]

    # ------------------------------------------------------------------ training variants
    words = list(data.label_texts)
    variants: list[TrainVariant] = []

    def add_ltune(key, group, method, label_texts, extra=(), impl="ltune", batching="grouped", bb=None,
                  **kw):
        v = TrainVariant(key, group, method, impl, batching=batching)
        v.mem_spec = {"kind": "ltune", "overrides": [f"method={method}", *extra], "label_texts": label_texts}
        try:
            v.runner = LtuneTrain(cfg_for(method, *extra), bb or backbone, label_texts, enc, device, autocast,
                                  **kw)
            v.label_tokens = v.runner.label_tokens
        except LtuneError as e:
            v.skipped = str(e)
        except Exception as e:  # noqa: BLE001 - a what-if this machine lacks (compile)
            if group != "whatif":
                raise
            v.skipped = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        variants.append(v)
        return v

    for m in ("prefix", "prompt", "lt_prefix", "lt_prompt"):
        add_ltune(f"ltune {m}", "main", m, words)
    for m in ("lt_prefix", "lt_prompt"):
        add_ltune(f"re-encode {m}", "main", m, words, ["method.cache_label_states=false"], "ltune-reencode")
    if st.peft:
        for kind in ("prefix", "prompt"):
            v = TrainVariant(f"peft {kind}", "main", kind, "peft")
            v.mem_spec = {"kind": "peft", "overrides": [f"method={kind}"], "peft": kind}
            v.skipped = _peft_unavailable()
            if not v.skipped:
                try:
                    v.runner = PeftTrain(kind, cfg_for(kind), backbone, len(words), enc, device, dtype, autocast)
                except Exception as e:  # noqa: BLE001 - reported in the table, with the reason
                    v.skipped = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            variants.append(v)
    described = [describe(w) for w in words]
    for n in st.label_lens:
        for m in ("lt_prefix", "lt_prompt"):
            for impl, extra in (("ltune", []), ("ltune-reencode", ["method.cache_label_states=false"])):
                tag = "ltune" if impl == "ltune" else "re-encode"
                add_ltune(f"{tag} {m} l={n}", "label_len", m, described, [f"method.label_len={n}", *extra], impl)
    add_ltune("ltune lt_prefix, random batches", "batching", "lt_prefix", words, batching="random")
    # What-ifs (not what `ltune train` runs): torch's default for-loop AdamW (the engine's is fused
    # where torch has it), and torch.compile (--compile).
    add_ltune("ltune lt_prefix, for-loop AdamW", "whatif", "lt_prefix", words, loop_adamw=True)
    if st.compile:
        compiled = load_backbone(cfg_for("prefix", "hardware.compile=true").model,
                                 cfg_for("prefix", "hardware.compile=true").hardware)
        for m in ("prefix", "lt_prefix"):
            add_ltune(f"ltune {m}, compiled", "whatif", m, words, ["hardware.compile=true"], bb=compiled)
    live = [v for v in variants if v.runner is not None]
    for v in variants:
        if v.skipped:
            say(f"[{cfg0.model.name}] skipped {v.key}: {v.skipped}")

    # ------------------------------------------------------------------ timing
    say(f"[{cfg0.model.name}] timing {len(live)} training variants: {st.repeats} repeats x {st.steps} steps "
        f"of batch {B}")
    for v in live:  # warm-up round (allocations, lazily created optimizer state, compilation)
        with measure.Clock(device) as c:
            for idx in batches[v.batching][: st.warmup]:
                v.runner.step(idx)
        v.extra["warmup_s"] = c.seconds
    # A repeat = st.steps rounds; a round = every variant takes one step on the round's batch
    # (order reversed every other round), after a dense matmul probe. Steps of different
    # variants are seconds apart, so load that drifts on a shared machine hits all alike.
    peaks: list[float] = []
    for r in range(st.repeats):
        per_step: dict[str, list[float]] = {v.key: [] for v in live}
        probes = []
        for j in range(st.steps):
            probes.append(measure.matmul_peak(device, dtype, st.probe_n, reps=2))
            for v in (live if (r * st.steps + j) % 2 == 0 else live[::-1]):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                with measure.Clock(device) as c:
                    v.runner.step(batches[v.batching][st.warmup + j])
                per_step[v.key].append(c.seconds)
                if device.type == "cuda":
                    v.cuda_peak = max(v.cuda_peak, torch.cuda.max_memory_allocated(device))
        peaks += probes
        for v in live:
            v.times.append(sum(per_step[v.key]))
            v.step_times.append(per_step[v.key])
            v.peaks.append(float(np.mean(probes)))  # utilisation divides by this repeat's probes
        say(f"[{cfg0.model.name}] repeat {r + 1}/{st.repeats}: matmul peak {np.median(probes) / 1e9:.1f} GFLOP/s, "
            + ", ".join(f"{v.key} {_eps(v, batches, st):.1f}" for v in live[:6]) + " ex/s")

    train_rows = [_train_row(v, batches, st, N) for v in variants]
    by_key = {v.key: v for v in variants}

    def ratio(a: str, b: str) -> dict | None:
        va, vb = by_key.get(a), by_key.get(b)
        if not va or not vb or not va.times or not vb.times:
            return None
        ea, eb = _examples(va, batches, st), _examples(vb, batches, st)
        return measure.summary([(ea / ta) / (eb / tb) for ta, tb in zip(va.times, vb.times, strict=True)])

    ratios = {
        "ltune prefix / peft prefix": ratio("ltune prefix", "peft prefix"),
        "ltune prompt / peft prompt": ratio("ltune prompt", "peft prompt"),
        "lt_prefix / prefix": ratio("ltune lt_prefix", "ltune prefix"),
        "lt_prompt / prompt": ratio("ltune lt_prompt", "ltune prompt"),
        "lt_prefix with the engine's AdamW / for-loop AdamW": ratio("ltune lt_prefix",
                                                                     "ltune lt_prefix, for-loop AdamW"),
        "prefix compiled / eager": ratio("ltune prefix, compiled", "ltune prefix"),
        "lt_prefix compiled / eager": ratio("ltune lt_prefix, compiled", "ltune lt_prefix"),
        "length-grouped / random batches (lt_prefix)": ratio("ltune lt_prefix", "ltune lt_prefix, random batches"),
    }
    label_len = []
    for m in ("lt_prefix", "lt_prompt"):
        pts = [("words", f"ltune {m}", f"re-encode {m}")] + [
            (n, f"ltune {m} l={n}", f"re-encode {m} l={n}") for n in st.label_lens]
        for n, a, b in pts:
            if by_key.get(a) and by_key[a].times and by_key.get(b) and by_key[b].times:
                label_len.append({"method": m, "label_texts": "label words" if n == "words" else "descriptive",
                                  "label_tokens": by_key[a].label_tokens,
                                  "cached_examples_per_s": _row(train_rows, a)["examples_per_s"]["median"],
                                  "reencode_examples_per_s": _row(train_rows, b)["examples_per_s"]["median"],
                                  "speedup": ratio(a, b)})

    # ------------------------------------------------------------------ evaluation
    # Eval texts come from the length band of the median timed training batch, so that eval
    # pairs/s and training examples/s on that batch are over texts of the same lengths. One
    # eval batch of all of them (x K pairs): a sorted eval split batches similar lengths too.
    mid = st.steps // 2
    ref = batches["grouped"][st.warmup + mid]
    lo, hi = int(enc.lengths[ref].min()), int(enc.lengths[ref].max())
    band = np.flatnonzero((enc.lengths >= lo) & (enc.lengths <= hi))
    rng = np.random.default_rng(seed)
    n_eval = st.eval_texts or hw.eval_batch_size  # default: one eval batch of the engine's size
    eval_idx = np.sort(rng.choice(band, size=min(n_eval, len(band)), replace=False))
    eval_enc = subset(enc, eval_idx)
    pool = label_pool(words, backbone.tokenizer)
    passes = []
    ks = sorted(k for k in st.eval_ks if k <= len(pool))
    for m in ("prefix", "prompt", "lt_prefix", "lt_prompt"):
        # prefix / prompt score every label with one K-way head (one forward per text, any K):
        # timed at the smallest K only. The pair methods run K forwards per text.
        for K in (ks if m.startswith("lt_") else ks[:1]):
            if by_key[f"ltune {m}"].skipped:
                continue
            passes.append((m, K, EvalPass(cfg_for(m), backbone, pool[:K], eval_enc, device, autocast,
                                          batch_size=len(eval_enc))))
    say(f"[{cfg0.model.name}] timing evaluation: {len(passes)} passes over {len(eval_enc)} texts, K in {ks}")
    eval_times: dict[tuple, list[float]] = {(m, K): [] for m, K, _ in passes}
    warmed = set()
    for m, _, p in passes:  # warm-up: one (smallest-K) pass per method
        if m not in warmed:
            p.run()
            warmed.add(m)
    # Each repeat also re-times the method's training step on the reference batch, so eval pairs/s
    # over training examples/s is a same-repeat ratio (load drifting between phases cancels).
    train_ref: dict[str, list[float]] = {m: [] for m, _, _ in passes}
    eval_peaks: dict[tuple, list[float]] = {(m, K): [] for m, K, _ in passes}
    for r in range(st.eval_repeats):
        for m, K, p in (passes if r % 2 == 0 else passes[::-1]):
            if len(train_ref[m]) == r:
                with measure.Clock(device) as c:
                    by_key[f"ltune {m}"].runner.step(ref)
                train_ref[m].append(c.seconds)
            eval_peaks[(m, K)].append(measure.matmul_peak(device, dtype, st.probe_n, reps=2))
            with measure.Clock(device) as c:
                p.run()
            eval_times[(m, K)].append(c.seconds)
    eval_tokens = real_tokens(eval_enc, np.arange(len(eval_enc)))
    eval_rows = []
    for m, K, p in passes:
        ts = eval_times[(m, K)]
        pps = measure.summary([p.pairs / t for t in ts])
        train = measure.summary([len(ref) / t for t in train_ref[m]])
        # 2*N per position of a forward, positions counted by the pass's hook: each pair's text (pair
        # methods) or each text once (K-way heads), + prompt positions.
        flops = 2 * N * p.positions()
        eval_rows.append({"method": m, "K": K, "texts": p.texts, "pairs": p.pairs,
                          "utilisation": measure.summary(
                              [flops / t / pk for t, pk in zip(ts, eval_peaks[(m, K)], strict=True)]),
                          "label_tokens": int(p.setup.method.label_len) if m.startswith("lt_") else None,
                          "pairs_per_s": pps, "us_per_pair": 1e6 / pps["median"],
                          "text_tokens_per_s": eval_tokens * K / float(np.median(ts)),
                          "train_examples_per_s_same_lengths": train["median"],
                          "vs_train_examples_per_s": measure.summary(
                              [(p.pairs / te) / (len(ref) / tt) for te, tt in zip(ts, train_ref[m], strict=True)])})
    del passes
    gc.collect()

    # ------------------------------------------------------------------ profile of one step
    profile = None
    if st.profile:
        prof = {}
        for key in ("ltune lt_prefix", "ltune prompt"):
            v = by_key.get(key)
            if v and v.runner is not None:
                idx = batches["grouped"][st.warmup + st.steps // 2]  # the median timed batch
                prof[key] = measure.profile_steps(lambda v=v, idx=idx: v.runner.step(idx), device)
                prof[key]["batch_shape"] = [len(idx), int(max(len(enc.input_ids[i]) for i in idx))]
        profile = prof

    info = {
        "model": cfg0.model.name, "path": cfg0.model.path, "family": backbone.geo.family,
        "kind": backbone.geo.kind, "layers": backbone.geo.layers, "hidden": backbone.geo.hidden,
        "params_total": sum(p.numel() for p in backbone.model.parameters()), "params_matmul": N,
        "device": str(device), "dtype": hw.dtype, "batch_size": B, "eval_batch_size": hw.eval_batch_size,
        "max_length": cfg0.model.max_length, "dataset": cfg0.dataset.name, "train_texts": len(enc),
        "label_words": words, "load_s": load_s, "encode_s": encode_s,
        "timed_batches": [[len(b), int(max(len(enc.input_ids[i]) for i in b))]
                          for b in batches["grouped"][st.warmup:]],
        "eval_texts": len(eval_enc), "eval_mean_tokens": eval_tokens / max(1, len(eval_enc)),
        "eval_length_band": [lo, hi], "eval_reference_batch": [len(ref), hi],
        "timed_mean_tokens": float(np.mean([enc.lengths[b].mean() for b in batches["grouped"][st.warmup:]])),
        "train_mean_tokens": float(enc.lengths.mean()),
    }
    result = {"info": info, "matmul_peak_flops": measure.summary(peaks), "train": train_rows,
              "ratios": ratios, "label_length": label_len,
              "batching": {"grouped": _pad_stats(enc.lengths, B, seed, True),
                           "random": _pad_stats(enc.lengths, B, seed, False),
                           "throughput_gain": ratios["length-grouped / random batches (lt_prefix)"]},
              "eval": eval_rows, "profile": profile}
    # Free this model before the memory child starts (and before the next model loads).
    mem_variants = [v for v in variants if v.group == "main" and v.runner is not None]
    for v in variants:
        v.runner = None
    backbone = live = None
    gc.collect()
    if st.memory:
        say(f"[{cfg0.model.name}] peak memory: {len(mem_variants)} variants, each from a clean state "
            f"in a child process")
        mem = run_memory_child(base_ov, mem_variants, batches["grouped"][st.warmup:][-st.memory_steps:],
                               len(words), hw.num_threads)
        result["memory"] = mem
        for row in train_rows:
            row["memory"] = (mem.get("variants") or {}).get(row["key"])
    result["targets"] = targets(result)
    return result


def _peft_unavailable() -> str | None:
    try:
        import peft  # noqa: F401
    except ImportError:
        return "peft is not installed (pip install -e '.[bench]', i.e. peft==0.21.2)"
    return None


def _examples(v: TrainVariant, batches, st) -> int:
    return sum(len(b) for b in batches[v.batching][st.warmup:])


def _eps(v: TrainVariant, batches, st) -> float:
    return _examples(v, batches, st) / v.times[-1] if v.times else float("nan")


def _row(rows: list[dict], key: str) -> dict:
    return next(r for r in rows if r["key"] == key)


def _train_row(v: TrainVariant, batches, st: BenchSettings, N: int) -> dict:
    row = {"key": v.key, "group": v.group, "method": v.method, "impl": v.impl, "batching": v.batching,
           "label_tokens": v.label_tokens, "skipped": v.skipped, **v.extra}
    if v.skipped or not v.times:
        return row
    timed = batches[v.batching][st.warmup:]
    ex = sum(len(b) for b in timed)
    real = sum(real_tokens(v.runner.enc, b) for b in timed)
    padded = sum(padded_tokens(v.runner.enc, b) for b in timed)
    through = sum(v.runner.count.positions(b) for b in timed)
    flops = 4 * N * through
    row.update({
        "trainable_params": v.runner.num_trainable(),
        "examples": ex, "text_tokens": real, "padded_text_tokens": padded, "tokens_through_layers": through,
        "examples_per_s": measure.summary([ex / t for t in v.times]),
        "ms_per_step": measure.summary([1e3 * t / len(timed) for t in v.times]),
        "flops_per_s": measure.summary([flops / t for t in v.times]),
        "utilisation": measure.summary([flops / t / p for t, p in zip(v.times, v.peaks, strict=True)]),
        "matmul_peak_flops": measure.summary(v.peaks),
    })
    if v.cuda_peak:
        row["cuda_max_allocated_mib"] = v.cuda_peak / 2**20
    return row


def targets(res: dict) -> list[dict]:
    """The issue's targets, checked on this run's numbers (medians of per-repeat ratios)."""
    out = []
    name = res["info"]["model"]

    def add(what, value, goal, ok):
        out.append({"target": what, "measured": value, "goal": goal,
                    "pass": None if value is None else bool(ok(value))})

    def med(s):
        return None if s is None else s["median"]

    r = res["ratios"]
    add("ltune prefix / PEFT PrefixTuning throughput", med(r["ltune prefix / peft prefix"]), ">= 1.0",
        lambda x: x >= 1.0)
    add("ltune prompt / PEFT PromptTuning throughput", med(r["ltune prompt / peft prompt"]), ">= 1.0",
        lambda x: x >= 1.0)
    add("lt_prefix / prefix throughput", med(r["lt_prefix / prefix"]), ">= 1.0", lambda x: x >= 1.0)
    add("lt_prompt / prompt throughput", med(r["lt_prompt / prompt"]), ">= 1.0", lambda x: x >= 1.0)
    pts = res["label_length"]
    if pts:
        worst = min(p["speedup"]["median"] for p in pts)
        add("cached / per-step re-encoding, worst label length", worst, ">= 1.0 (never slower)",
            lambda x: x >= 1.0)
        at16 = [p for p in pts if p["label_tokens"] == 16]
        for p in at16:
            goal = ">= 1.2" if "smollm2" in name else "reported"
            add(f"cached / re-encoding at 16 label tokens ({p['method']})", p["speedup"]["median"], goal,
                (lambda x: x >= 1.2) if "smollm2" in name else (lambda x: True))
    ltune = [row for row in res["train"] if row["impl"] == "ltune" and row.get("utilisation")
             and row["group"] == "main"]
    if ltune:
        best = max(ltune, key=lambda row: row["utilisation"]["median"])
        goal = 0.8 if "smollm2" in name else 0.65
        add(f"utilisation of matmul peak, best ltune method ({best['method']})", best["utilisation"]["median"],
            f">= {goal}", lambda x: x >= goal)
    add("padded / real tokens, length-grouped SST-2 training batches",
        res["batching"]["grouped"]["pad_ratio"], "<= 1.15", lambda x: x <= 1.15)
    gain = res["batching"]["throughput_gain"]
    add("length-grouped / random batching throughput", med(gain), "reported", lambda x: True)
    ev = {(e["method"], e["K"]): e for e in res["eval"]}
    for m in ("lt_prefix", "lt_prompt"):
        ks = sorted(k for (mm, k) in ev if mm == m)
        if not ks:
            continue
        e2 = ev[(m, ks[0])]
        add(f"eval pairs/s / train ex/s ({m}, K={ks[0]})", med(e2["vs_train_examples_per_s"]), ">= 2.5",
            lambda x: x >= 2.5)
        if len(ks) > 1:
            flat = ev[(m, ks[-1])]["us_per_pair"] / e2["us_per_pair"]
            add(f"cost per pair K={ks[-1]} / K={ks[0]} ({m})", flat, "<= 1.1 (flat)", lambda x: x <= 1.1)
    return out


# --------------------------------------------------------------------------- memory (child process)
def run_memory_child(base_ov: list[str], variants: list[TrainVariant], batches: list[np.ndarray],
                     num_labels: int, num_threads: int | None) -> dict:
    """Peak memory per variant, measured in a fresh process where freed memory goes back to the OS.

    glibc keeps freed memory for reuse, so RSS in the timing process says little about one
    variant. The child sets MALLOC_MMAP_THRESHOLD_ (large blocks are mmap'ed and unmapped on
    free) and measures each variant in turn from the same clean state; on CUDA it reads
    max_memory_allocated instead.
    """
    spec = {"overrides": base_ov, "num_labels": num_labels, "num_threads": num_threads,
            "batches": [b.tolist() for b in batches],
            "variants": [{"key": v.key, **v.mem_spec} for v in variants]}
    with tempfile.TemporaryDirectory() as d:
        sp, op = Path(d) / "spec.json", Path(d) / "out.json"
        sp.write_text(json.dumps(spec))
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="131072")
        proc = subprocess.run([sys.executable, "-m", "ltune_cli.bench.memory", str(sp), str(op)],
                              env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not op.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": f"memory child exited {proc.returncode}: {' | '.join(tail)}"}
        return json.loads(op.read_text())
