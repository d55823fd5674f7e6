"""L-Tuning for prefix: label states -> trainable map -> per-layer key/value prefix.

Two variants of the map from the label's frozen states h (l, d) to its prefix:

- per_token (default): each label token's state maps to its key and value at every
  layer, Z: d -> L * 2 * kv_dim (the reference code's non-pooling path). The prefix has
  one position per label token. Trainable: d*L*2*kv_dim + L*2*kv_dim (bias) + head 2d + 2.
- paper (A.5): a pooling F: d -> 1 turns each token into one scalar, and Z maps those l
  scalars to the whole prefix, Z: l -> l * L * 2 * kv_dim. Trainable: F d + Z 2*l^2*L*kv_dim
  + head 2d + 2 = 2*l^2*m*d + 3d (+2) for kv_dim = d, the paper's count.
  The prefix is then a linear function of l numbers per label, so labels differ by little
  more than a scale: on a 5-class task it stayed at chance where per_token learned (see
  docs/methods.md). Kept selectable for fidelity: method.variant=paper.
"""

from __future__ import annotations

from torch import nn

from ltune_cli.methods import register
from ltune_cli.methods.base import PairMethod, fit_linear


@register("lt_prefix")
class LTPrefix(PairMethod):
    needs_kv_cache = True

    def __init__(self, backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        g = backbone.geo
        out = g.layers * 2 * g.kv_dim
        self.variant = cfg.variant
        if self.variant == "paper":
            self.F = nn.Linear(g.hidden, 1, bias=False)
            self.Z = nn.Linear(self.label_len, self.label_len * out, bias=False)
        else:
            self.Z = nn.Linear(g.hidden, out)
        if cfg.init_from_label:
            self._start_from_reading()

    def _start_from_reading(self) -> None:
        """Fit Z so that each label's prefix is, at step 0, the key/values the frozen LM writes
        when it reads that label text: the text is then encoded as "label, then text" (an NLI
        input the LM understands), instead of under random vectors the head cannot tell apart."""
        lab = self.labels_frozen
        target = self.backbone.reading_kv(lab.ids, lab.mask)  # (K, l, L, 2, kvh, hd)
        K = lab.mask.shape[0]
        if self.variant == "paper":
            pooled = (self.F(lab.states).squeeze(-1) * lab.mask).detach()  # (K, l)
            fit_linear(self.Z, pooled, target.reshape(K, -1))
        else:
            real = lab.mask.bool()
            fit_linear(self.Z, lab.states[real], target[real].reshape(int(real.sum()), -1))

    def transform(self, states, mask):
        """(N, l, d) label states -> (N, l, L, 2, kv_heads, head_dim) prefix."""
        g = self.backbone.geo
        N, l, _ = states.shape
        if self.variant == "paper":
            pooled = self.F(states).squeeze(-1) * mask  # (N, l): one scalar per label token
            flat = self.Z(pooled)  # (N, l * L * 2 * kv_dim)
        else:
            flat = self.Z(states)  # (N, l, L * 2 * kv_dim)
        return flat.view(N, l, g.layers, 2, g.kv_heads, g.head_dim)

    def encode_with(self, batch, prefix, mask, idx):
        if idx is not None:
            prefix, mask = prefix[idx], mask[idx]
        # The paper variant's l positions are all produced by Z: every one is attended.
        pmask = mask if self.variant != "paper" else mask.new_ones(mask.shape)
        kv = prefix.permute(2, 3, 0, 4, 1, 5)  # (L, 2, N, kv_heads, l, head_dim)
        # unbind, not x[0]/x[1]: indexing's backward zero-fills a full-size copy per layer.
        layers = [tuple(x.unbind(0)) for x in kv.unbind(0)]
        return self.backbone.encode(**self.text_inputs(batch), prefix=layers, prefix_mask=pmask)
