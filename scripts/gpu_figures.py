"""Memory and time of every method at 7B scale on one GPU, without downloading a 7B model.

Builds a conf/model preset's published architecture (`arch`, default Llama-2-7B) with random
weights straight on the device, in the preset's dtype, and trains each method a few steps on
RTE with the model's hardware preset (gpu_large: bf16, micro-batch 8 x 4, checkpointing).
Random weights make the accuracy meaningless; memory and time are those of the real model.
Each method runs in a process of its own; per method it prints one JSON line: the plan `ltune validate` prints before anything loads,
the estimate the run prints (probed), the CUDA allocator's peak, and seconds per step.
docs/gpu.md quotes its output.

    python scripts/gpu_figures.py --tokenizer DIR [--model llama2_7b] [--steps 6] [--out F.jsonl]
    python scripts/gpu_figures.py --tokenizer DIR --layers 2 --device cpu   # the script itself, on a CPU

DIR: any Hugging Face tokenizer folder (its ids must stay below the model's vocab).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch

GiB = 2**30


def llama_config(arch: dict, layers: int | None):
    from transformers import LlamaConfig

    if arch["model_type"] != "llama":
        raise SystemExit(f"gpu_figures builds Llama-type presets only (got {arch['model_type']})")
    return LlamaConfig(hidden_size=arch["hidden"], num_hidden_layers=layers or arch["layers"],
                       num_attention_heads=arch["heads"], num_key_value_heads=arch["kv_heads"],
                       intermediate_size=arch["intermediate"], vocab_size=arch["vocab"],
                       max_position_embeddings=arch["max_positions"], pad_token_id=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--model", default="llama2_7b")
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
            lines += rows if i == 0 else rows[1:]
            print("\n".join(json.dumps(r) for r in (rows if i == 0 else rows[1:])), flush=True)
        if a.out:
            Path(a.out).write_text("".join(json.dumps(x) + "\n" for x in lines))
        return

    from transformers import AutoModel, AutoTokenizer

    from ltune_cli import engine, memory, runfolder
    from ltune_cli.config import compose
    from ltune_cli.data import load_splits
    from ltune_cli.models.backbone import DTYPES, load_backbone

    tmp = Path(tempfile.mkdtemp(prefix="gpu-figures-"))
    base = [f"model={a.model}", "dataset=rte", f"train.max_steps={a.steps}", "train.eval_every=100000",
            "train.log_every=1", "train.progress=false"]
    if a.device:
        base += [f"hardware.device={a.device}"]
    cfg0 = compose(base + ["method=prefix", f"out_dir={tmp / 'x'}"])
    hw = cfg0.hardware
    config = llama_config(dict(cfg0.model.arch), a.layers)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(hw.device):
        model = AutoModel.from_config(config, dtype=DTYPES[hw.dtype]).eval()
    built_s = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    bb = load_backbone(cfg0.model, hw, model=model, tokenizer=tok)  # the preset's checkpointing etc.
    params = sum(p.numel() for p in model.parameters())
    dev = torch.device(hw.device)
    head = {"model": a.model, "layers": config.num_hidden_layers, "params": params, "hardware": hw.name,
            "dtype": hw.dtype, "micro_batch": hw.batch_size, "grad_accum": hw.grad_accum,
            "checkpointing": bool(hw.gradient_checkpointing), "built_s": round(built_s, 1),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__}
    print(json.dumps(head), flush=True)
    lines = [head]
    for method in methods:
        cfg = compose(base + [f"method={method}", f"out_dir={tmp / method}"])
        plan = memory.plan(cfg, load_splits(cfg.dataset)) if a.layers is None else None
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        run = engine.train(cfg, backbone=bb)
        wall = time.perf_counter() - t0
        res = runfolder.read_results(run)
        mem = res["memory"]
        steps = [r for r in runfolder.read_metrics(run) if r["kind"] == "train"]
        per_step = (steps[-1]["time_s"] - steps[0]["time_s"]) / max(1, len(steps) - 1)
        row = {"method": method, "trainable_params": res["trainable_params"],
               "plan_gib": round(plan["estimate_bytes"] / GiB, 2) if plan else None,
               "estimate_gib": round(mem["estimate_bytes"] / GiB, 2),
               "peak_cuda_gib": round(mem.get("peak_cuda_allocated_bytes", 0) / GiB, 2),
               "estimate_over_peak": (round(mem["estimate_bytes"] / mem["peak_cuda_allocated_bytes"], 3)
                                      if mem.get("peak_cuda_allocated_bytes") else None),
               "s_per_step": round(per_step, 3), "longest_train_tokens": mem.get("longest_train_tokens"),
               "wall_s": round(wall, 1), "final_loss": res["final"].get("val_loss")}
        print(json.dumps(row), flush=True)
        lines.append(row)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
