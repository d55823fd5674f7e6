"""Diagnostic: how much of SST-2 can a linear head read from a method's *step-0* encodings?

    python scripts/step0_probe.py smollm2_135m prefix [n_train=300] [n_eval=200] [overrides...]

Encodes n_train sampled SST-2 train texts (seed 0) and the first n_eval dev texts exactly as
the method does before any training (its prefix / prompt / label conditioning), then fits a
logistic regression (standardised features, L-BFGS, L2 1e-3) and prints its dev accuracy:
for prefix / prompt on the pooled text (argmax of a 2-way head), for lt_prefix / lt_prompt on
the (text, label) pairs (a 1-logit pair head, argmax over labels), the task their heads face.
method=none probes the frozen base with no method at all (the issue's frozen-feature probe).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from ltune_cli.batching import collate, encode_examples
from ltune_cli.config import compose
from ltune_cli.data import load_splits
from ltune_cli.methods import build_method
from ltune_cli.models.backbone import load_backbone


def step0_features(model: str, method: str, n_train: int, n_eval: int, overrides=()):
    """(x_train, y_train, x_eval, y_eval); x is (N, d), or (N, K, d) for the pair methods."""
    torch.set_num_threads(1)
    name = "prefix" if method == "none" else method
    cfg = compose([f"model={model}", f"method={name}", "hardware.num_threads=1", *overrides])
    bb = load_backbone(cfg.model, cfg.hardware)
    data = load_splits(cfg.dataset)
    torch.manual_seed(cfg.seed)
    m = build_method(cfg.method, bb, data.label_texts).eval()
    pick = np.random.default_rng(0).choice(len(data.train), n_train, replace=False)

    @torch.no_grad()
    def encode(examples):
        enc = encode_examples(examples, bb.tokenizer, cfg.model.max_length)
        out = []
        for i in range(0, len(examples), 32):
            b = collate(enc, np.arange(i, min(i + 32, len(examples))), bb.pad_id, "right", "cpu")
            if method == "none":
                out.append(bb.encode(b["input_ids"], b["attention_mask"]))
            elif hasattr(m, "encode_with"):  # pair methods: the text under each label
                table, mask, _ = m._conditioning(torch.zeros(1, dtype=torch.long))
                n = b["input_ids"].shape[0]
                out.append(torch.stack([m.encode_with(m.pair_batch(b, torch.full((n,), k)), table, mask,
                                                      torch.full((n,), k)) for k in range(m.num_labels)], 1))
            else:
                out.append(m.encode(b))
        return torch.cat(out).float(), torch.tensor(enc.labels)

    return (*encode([data.train[i] for i in pick]), *encode(data.eval[:n_eval]))


def probe(xtr, ytr, xev, yev, l2: float = 1e-3) -> float:
    """Standardised L-BFGS logistic regression; dev accuracy (argmax over labels for pairs)."""
    pairs = xtr.dim() == 3
    d = xtr.shape[-1]
    flat = xtr.reshape(-1, d)
    mu, sd = flat.mean(0), flat.std(0) + 1e-6
    a, b = (xtr - mu) / sd, (xev - mu) / sd
    w = torch.zeros(d, 1 if pairs else int(ytr.max()) + 1, requires_grad=True)
    c = torch.zeros(w.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=500, line_search_fn="strong_wolfe")

    def loss_fn():
        opt.zero_grad()
        z = a @ w + c
        loss = (F.binary_cross_entropy_with_logits(z[..., 0], F.one_hot(ytr, a.shape[1]).float()) if pairs
                else F.cross_entropy(z, ytr)) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(loss_fn)
    with torch.no_grad():
        z = b @ w + c
        pred = z[..., 0].argmax(1) if pairs else z.argmax(1)
    return float((pred == yev).float().mean())


if __name__ == "__main__":
    args = sys.argv[1:]
    model, method = args[0], args[1]
    nums = [int(a) for a in args[2:4] if a.isdigit()]
    n_train, n_eval = (nums + [300, 200][len(nums):])[:2]
    extra = [a for a in args[2:] if not a.isdigit()]
    acc = probe(*step0_features(model, method, n_train, n_eval, extra))
    print(f"{model} {method} {' '.join(extra)} step-0 probe: dev accuracy {acc:.3f} "
          f"({n_train} train / {n_eval} dev)")
