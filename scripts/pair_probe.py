"""Diagnostic: can a linear head on the *frozen* joint encoding of (label, text) tell true
pairs from false ones? (No training of the LM, no prefix: the best a head alone can do.)

    python scripts/pair_probe.py minilm      # 600 SST-2 train texts, 300 dev texts

Prints the argmax-over-labels accuracy of a logistic probe for each pooling.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from ltune_cli.config import compose
from ltune_cli.data import load_splits
from ltune_cli.models.backbone import load_backbone

LABELS = ["negative", "positive"]


def features(bb, examples, pooling: str) -> dict[int, np.ndarray]:
    """Pooled frozen states of "label, text" for every example and each label."""
    out = {}
    for k, label in enumerate(LABELS):
        rows = []
        for i in range(0, len(examples), 32):
            chunk = examples[i:i + 32]
            if bb.geo.kind == "encoder":
                enc = bb.tokenizer([label] * len(chunk), [e.text for e in chunk], padding=True,
                                   truncation=True, max_length=64, return_tensors="pt")
            else:
                bb.tokenizer.padding_side = "right"
                if bb.tokenizer.pad_token is None:
                    bb.tokenizer.pad_token = bb.tokenizer.eos_token
                enc = bb.tokenizer([f"{label}\n{e.text}" for e in chunk], padding=True, truncation=True,
                                   max_length=64, return_tensors="pt")
            with torch.no_grad():
                h = bb.hidden_states(enc["input_ids"], enc["attention_mask"])
            bb.pooling = pooling
            rows.append(bb.pool(h, enc["attention_mask"]))
        out[k] = torch.cat(rows).numpy()
    return out


def probe(tr: dict, ev: dict, ytr: np.ndarray, yev: np.ndarray) -> float:
    """Logistic regression on (label, text) features, y = label is the true one; argmax accuracy."""
    x = torch.tensor(np.concatenate([tr[0], tr[1]]), dtype=torch.float32)
    y = torch.tensor(np.concatenate([ytr == 0, ytr == 1]).astype(float), dtype=torch.float32)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(((x - mu) / sd) @ w + b, y)
                + 1e-3 * (w ** 2).sum())
        loss.backward()
        return loss

    opt.step(closure)

    def score(f):
        return (((torch.tensor(f) - mu) / sd) @ w + b).detach().numpy()

    return float(((score(ev[1]) > score(ev[0])).astype(int) == yev).mean())


def main(model: str) -> None:
    torch.set_num_threads(2)
    cfg = compose([f"model={model}", "dataset.train_limit=600", "dataset.eval_limit=300"])
    bb = load_backbone(cfg.model, cfg.hardware)
    data = load_splits(cfg.dataset)
    ytr = np.array([e.label for e in data.train])
    yev = np.array([e.label for e in data.eval])
    for pooling in (["cls", "mean"] if bb.geo.kind == "encoder" else ["last", "mean"]):
        acc = probe(features(bb, data.train, pooling), features(bb, data.eval, pooling), ytr, yev)
        print(f"{model} {pooling} frozen joint-encoding linear probe: eval accuracy (argmax over labels) "
              f"{acc:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minilm")
