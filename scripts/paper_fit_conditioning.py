"""Conditioning of lt_prefix variant=paper's warm-start fit on a real model (issue 11 item 5).

For each label set: the singular values of the K x l pooled matrix F(h) * mask, and the
largest |Z| entry of the warm-start fit with the default ridge (LTPrefix.PAPER_RIDGE) and
without one, beside per_token's Z. Usage (CPU, ~20 s):
    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/paper_fit_conditioning.py [minilm]
"""

from __future__ import annotations

import sys

import torch

from ltune_cli.config import MethodConfig, ModelConfig
from ltune_cli.methods import build_method
from ltune_cli.methods.lt_prefix import LTPrefix
from ltune_cli.models.backbone import load_backbone

LABEL_SETS = {"sst2": ["negative", "positive"], "rte": ["entailment", "not entailment"],
              "5-class": ["very negative", "negative", "neutral", "positive", "very positive"]}


def main(model: str = "minilm") -> None:
    torch.set_num_threads(1)
    bb = load_backbone(ModelConfig(name=model, path=f"offline:{model}"))
    for name, labels in LABEL_SETS.items():
        row = {}
        for ridge in (0.0, LTPrefix.PAPER_RIDGE):
            LTPrefix.PAPER_RIDGE = ridge
            torch.manual_seed(0)
            m = build_method(MethodConfig(name="lt_prefix", variant="paper"), bb, labels)
            row[ridge] = m.Z.weight.abs().max().item()
        LTPrefix.PAPER_RIDGE = ridge
        lab = m.labels_frozen
        with torch.no_grad():
            sv = torch.linalg.svdvals(m.F(lab.states).squeeze(-1) * lab.mask)
        torch.manual_seed(0)
        pt = build_method(MethodConfig(name="lt_prefix"), bb, labels).Z.weight.abs().max().item()
        print(f"{name}: K x l = {tuple(lab.mask.shape)}, singular values {[round(v, 3) for v in sv.tolist()]}; "
              f"max |Z| paper ridge 0: {row[0.0]:.3g}, ridge {ridge}: {row[ridge]:.3g}; per_token: {pt:.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:])
