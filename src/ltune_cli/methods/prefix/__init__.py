"""Prefix tuning (P-tuning v2): P trainable key/value vectors at every layer, K-way head.

Trainable: prefix (L, 2, kv_heads, P, head_dim) + head (d*K + K).
Initialised N(0, 1) like PEFT's PrefixEncoder embedding (no reparameterisation).
"""

from __future__ import annotations

import torch
from torch import nn

from ltune_cli.methods import register
from ltune_cli.methods.base import ClassifierMethod


@register("prefix")
class Prefix(ClassifierMethod):
    needs_kv_cache = True

    def __init__(self, backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        g = backbone.geo
        self.prefix = nn.Parameter(torch.randn(g.layers, 2, g.kv_heads, cfg.num_virtual_tokens, g.head_dim))

    def encode(self, batch):
        B = batch["input_ids"].shape[0]
        # Per layer (key, value), each a view (B, kvh, P, hd). unbind + expand, not indexing an
        # expanded (L, 2, B, ...) tensor: the backward of x[i] zero-fills a B-times copy per layer.
        prefix = [tuple(t.unsqueeze(0).expand(B, -1, -1, -1) for t in layer.unbind(0))
                  for layer in self.prefix.unbind(0)]
        return self.backbone.encode(**self.text_inputs(batch), prefix=prefix)
