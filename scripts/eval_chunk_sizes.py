"""Evaluation cost per (text, label) pair as a function of PairMethod.SCORE_CHUNK_POSITIONS
(the positions one scoring forward may hold on a CPU), for K = 2 and 20 labels, one thread.

    python scripts/eval_chunk_sizes.py minilm 64 10 lt_prefix,lt_prompt   # BENCHMARKS.md
    (model, texts, text length in tokens, methods)
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from ltune_cli.batching import collate, encode_examples
from ltune_cli.config import compose
from ltune_cli.data import load_splits
from ltune_cli.methods import build_method
from ltune_cli.methods.base import PairMethod
from ltune_cli.models.backbone import load_backbone

WORDS = ["negative", "positive", "good", "bad", "great", "poor", "nice", "awful", "fine", "sad", "happy",
         "dull", "fun", "best", "worst", "cool", "hot", "cold", "new", "old"]
LIMITS = [512, 1024, 2048, 4096, None]  # None: all pairs in one forward


def main(model: str, texts: int, length: int, methods: str, repeats: int = 3) -> None:
    torch.set_num_threads(1)
    cfg0 = compose([f"model={model}", "hardware.num_threads=1"])
    bb = load_backbone(cfg0.model, cfg0.hardware)
    data = load_splits(cfg0.dataset)
    enc = encode_examples(data.train[:3000], bb.tokenizer, cfg0.model.max_length)
    lens = np.array([len(x) for x in enc.input_ids])
    idx = np.flatnonzero(lens == length)[:texts]
    batch = collate(enc, idx, bb.pad_id, bb.padding_side, bb.device)
    saved = PairMethod.SCORE_CHUNK_POSITIONS
    for m in methods.split(","):
        for K in (2, 20):
            method = build_method(compose([f"model={model}", f"method={m}"]).method, bb, WORDS[:K]).eval()
            times: dict = {lim: [] for lim in LIMITS}
            with torch.inference_mode():
                method.scores(batch)
                for _ in range(repeats):
                    for lim in LIMITS:
                        PairMethod.SCORE_CHUNK_POSITIONS = {} if lim is None else {"cpu": lim}
                        t = time.perf_counter()
                        method.scores(batch)
                        times[lim].append(time.perf_counter() - t)
            PairMethod.SCORE_CHUNK_POSITIONS = saved
            pairs = len(idx) * K
            cells = ", ".join(f"{lim or 'one forward'}: {np.median(v) / pairs * 1e6:,.0f} us"
                              for lim, v in times.items())
            print(f"{model} {m} K={K}, {len(idx)} texts x {length} tokens, us/pair by chunk limit: {cells}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
