"""bf16 on a CPU: training-step time with SDPA's math kernel (what Backbone._forward picks) vs
torch's default kernel (flash attention), interleaved on the same batches, one thread.

    python scripts/bf16_attention_kernel.py minilm     # BENCHMARKS.md, "bf16 on a CPU"
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from ltune_cli.batching import encode_examples
from ltune_cli.bench.variants import LtuneTrain
from ltune_cli.config import compose
from ltune_cli.data import load_splits
from ltune_cli.engine import autocaster
from ltune_cli.models import backbone as bbm


def main(model: str) -> None:
    torch.set_num_threads(1)
    over = [f"model={model}", "hardware.num_threads=1", "hardware.dtype=bf16"]
    cfg0 = compose(over)
    bb = bbm.load_backbone(cfg0.model, cfg0.hardware)
    data = load_splits(cfg0.dataset)
    enc = encode_examples(data.train[:3000], bb.tokenizer, cfg0.model.max_length)
    lens = np.array([len(x) for x in enc.input_ids])
    autocast = autocaster(bb.device, "bf16")
    math_kernel = bbm.Backbone._forward

    def default_kernel(self, **kw):
        return self.model(**kw)

    for m in ("prefix", "lt_prefix", "lt_prompt"):
        runner = LtuneTrain(compose([*over, f"method={m}"]), bb, list(cfg0.dataset.label_texts), enc,
                            bb.device, autocast)
        for length in (10, 24):
            idx = np.flatnonzero(lens == length)[:16]
            times: dict[str, list[float]] = {"math": [], "default": []}
            for _ in range(3):
                for name, fwd in (("math", math_kernel), ("default", default_kernel)):
                    bbm.Backbone._forward = fwd
                    runner.step(idx)  # warm
                    t = time.perf_counter()
                    for _ in range(3):
                        runner.step(idx)
                    times[name].append((time.perf_counter() - t) / 3)
            bbm.Backbone._forward = math_kernel
            mt, dt = np.median(times["math"]), np.median(times["default"])
            print(f"{model} {m}, batch 16 x {length} tokens: math kernel {mt * 1e3:.0f} ms/step, "
                  f"default kernel {dt * 1e3:.0f} ms/step, default / math {dt / mt:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minilm")
