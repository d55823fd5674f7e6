"""Prefix tuning (P-tuning v2): P trainable key/value vectors at every layer, K-way head.

Trainable: prefix (L, 2, kv_heads, P, head_dim) + head (d*K + K). With method.pair_framing=true
(PrefixPairs): a prefix of P positions per label, read by the text of each (text, label) pair,
pair head: K*P*L*2*kv_dim + 2d + 2.

init=vocab (default): the prefix starts as the key/values the frozen LM writes when it reads
P random vocabulary tokens, so at step 0 a text reads as "P words, then text" (prompt tuning's
init=vocab, in key/value form). init=normal: N(0, 1) like PEFT's PrefixEncoder embedding.
N(0, 1) is far off a real model's scale (SmolLM2-135M writes values of rms 0.04 at layer 0,
0.4-1.2 above) and erases the text from the pooled state: a logistic probe on SmolLM2's
step-0 encodings fell from 0.72 (no prefix) to 0.47 under an N(0, 1) prefix (docs/methods.md,
scripts/step0_probe.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ltune_cli.methods import register
from ltune_cli.methods.base import ClassifierMethod, PairBaseline, encode_with_prefix


class PrefixPairs(PairBaseline):
    name = "prefix"
    needs_kv_cache = True

    def initial_table(self):
        g = self.backbone.geo
        if self.cfg.init == "vocab":  # label k's prefix: the key/values of reading P random words
            ids = self.random_ids()
            return self.backbone.reading_kv(ids, torch.ones_like(ids)).cpu()  # (K, P, L, 2, kv_heads, head_dim)
        return torch.randn(self.num_labels, self.P, g.layers, 2, g.kv_heads, g.head_dim)

    def encode_with(self, batch, prefix, mask, idx):
        return encode_with_prefix(self, batch, prefix, mask, idx)


@register("prefix")
class Prefix(ClassifierMethod):
    needs_kv_cache = True
    in_pairs = PrefixPairs

    def __init__(self, backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        g = backbone.geo
        P = cfg.num_virtual_tokens
        if cfg.init == "vocab":
            vocab = backbone.model.get_input_embeddings().weight.shape[0]
            ids = torch.randint(0, vocab, (1, P)).to(backbone.device)
            kv = backbone.reading_kv(ids, torch.ones_like(ids))[0]  # (P, L, 2, kv_heads, head_dim)
            init = kv.permute(1, 2, 3, 0, 4).contiguous().cpu()
        else:
            init = torch.randn(g.layers, 2, g.kv_heads, P, g.head_dim)
        self.prefix = nn.Parameter(init)

    def encode(self, batch):
        B = batch["input_ids"].shape[0]
        # Per layer (key, value), each a view (B, kvh, P, hd). unbind + expand, not indexing an
        # expanded (L, 2, B, ...) tensor: the backward of x[i] zero-fills a B-times copy per layer.
        prefix = [tuple(t.unsqueeze(0).expand(B, -1, -1, -1) for t in layer.unbind(0))
                  for layer in self.prefix.unbind(0)]
        return self.backbone.encode(**self.text_inputs(batch), prefix=prefix)
