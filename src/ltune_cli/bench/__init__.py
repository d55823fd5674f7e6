"""`ltune bench`: throughput, memory and utilisation of every method, side by side, in one run.

Per model (default: MiniLM and SmolLM2-135M, offline) it measures, on the same frozen
weights, data, batch size and batches:
  - training examples/s, ms/step, achieved FLOP/s and utilisation of the measured dense
    matmul peak for prefix, prompt, lt_prefix, lt_prompt; the L-Tuning methods again in the
    reference design's per-step label re-encoding mode; HF PEFT PrefixTuning/PromptTuning;
  - the cached-vs-re-encoding speed-up as the label text grows (label words, then
    descriptive label texts cut to 4/16/32 tokens);
  - length-grouped vs random batching (epoch padding ratio and throughput);
  - evaluation (text, label) pairs/s for K = 2, 5, 20 labels (engine.evaluate);
  - a profile of one step; peak memory (CPU RSS or CUDA max allocated) in a child process.
Writes <out>/bench.json and <out>/bench.md. See BENCHMARKS.md for a run and its analysis.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from ltune_cli.bench.settings import BenchSettings, quick

__all__ = ["BenchSettings", "quick", "run"]


def run(st: BenchSettings, out_dir: str | Path, say=print, command: str | None = None) -> dict:
    """Benchmark every model of `st`; write bench.json + bench.md under out_dir; return the results."""
    import torch

    from ltune_cli.bench import measure, report, runner

    t0 = time.time()
    load_start = measure.load_average()
    res = {"schema": runner.SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "command": command or shlex.join(["ltune", "bench", *sys.argv[2:]]),
           "settings": st.to_dict(), "versions": measure.versions(), "machine": None,
           "conventions": {"flops": runner.FLOPS_CONVENTION,
                           "spread": "(max - min) / median over the repeats",
                           "eval_texts": "training texts from the length band of the median timed training "
                                         "batch, so eval pairs/s compares with training examples/s on "
                                         "texts of the same lengths"},
           "models": []}
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # e.g. PEFT prompt tuning's padding notice, once per model
    try:
        for spec in st.models:
            res["models"].append(runner.bench_model(spec, st, say))
    finally:
        hf_logging.set_verbosity(verbosity)
    res["machine"] = measure.machine(torch.device(res["models"][0]["info"]["device"]) if res["models"]
                                     else torch.device("cpu"))
    res["machine"]["load_average_at_start"] = load_start
    res["machine"]["load_average_at_end"] = measure.load_average()
    res["wall_s"] = time.time() - t0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / "bench.md").write_text(report.render(res))
    return res
