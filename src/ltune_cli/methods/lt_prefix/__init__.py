"""L-Tuning for prefix: label states -> trainable map -> per-layer key/value prefix.

Two variants of the map from the label's frozen states h (l, d) to its prefix:

- per_token (default): each label token's state maps to its key and value at every
  layer, Z: d -> L * 2 * kv_dim (the reference code's non-pooling path). The prefix has
  one position per label token. Trainable: d*L*2*kv_dim + L*2*kv_dim (bias) + head 2d + 2.
- paper (A.5): a pooling F: d -> 1 turns each token into one scalar, and Z maps those l
  scalars to the whole prefix, Z: l -> l * L * 2 * kv_dim. Trainable: F d + Z 2*l^2*L*kv_dim
  + head 2d + 2 = 2*l^2*L*kv_dim + 3d (+2); the paper's 2*l^2*m*d is the case kv_dim = d
  (not so under GQA/MQA). Kept selectable for fidelity: method.variant=paper; how it
  compares with per_token is measured in docs/methods.md.

Both variants attend only the real slots of a label's prefix (a shorter label's pad slots
are masked out). With init_from_label (default) the map starts so that each label's prefix
is the key/values the frozen LM writes reading that label alone: on a causal decoder the
text is then encoded exactly as "label, then text" (then the label again: the echo of
PairMethod.pair_batch, on for decoders); on a bidirectional encoder it is not
(in one joint forward the label would also attend to the text): the text attends to the
label's standalone reading (tests/test_exactness.py::test_warm_start_reads_label_then_text).
"""

from __future__ import annotations

import torch
from torch import nn

from ltune_cli.methods import register
from ltune_cli.methods.base import PairMethod, encode_with_prefix, fit_linear, ridge_operator


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
        # Drawn on the CPU (the same seeded init on any device), then moved to the backbone's
        # device, where the warm start below runs on the label states.
        self.maps_to(backbone.device)
        if cfg.init_from_label:
            self._start_from_reading()

    # Ridge of the paper variant's warm start (ridge_operator: lambda = PAPER_RIDGE x the mean
    # squared norm of the pooled rows that count in the slot fitted). Without it the K x l
    # pooled matrix is ill-conditioned (smallest singular values 0.03-0.12 on MiniLM's labels)
    # and Z entries reach 1e3 (per_token: ~1); docs/methods.md has the measurements.
    PAPER_RIDGE = 1e-2

    @torch.no_grad()
    def _start_from_reading(self) -> None:
        """Fit Z so that each label's prefix is, at step 0, the key/values the frozen LM writes
        when it reads that label text alone (pad slots excluded from the fit; they are masked
        out of attention). On a causal decoder the text is then encoded exactly as "label, then
        text" (+ the label echo); on a bidirectional encoder the label's keys/values are those of the label read
        without the text (docs/methods.md): a reading the LM knows, not random vectors."""
        lab = self.labels_frozen
        target = self.backbone.reading_kv(lab.ids, lab.mask)  # (K, l, L, 2, kvh, hd)
        K, l = lab.mask.shape
        if self.variant == "paper":
            pooled = (self.F(lab.states).squeeze(-1) * lab.mask).detach()  # (K, l)
            out, chunk = target[0, 0].numel(), 1 << 14
            # Slot j's outputs are fitted on the labels that have a real token there only (a
            # zeroed row is one the fit ignores, see fit_linear).
            for j in range(l):
                real = lab.mask[:, j, None].float()  # (K, 1)
                a = ridge_operator(pooled * real, self.PAPER_RIDGE)  # (l, K)
                y = target[:, j].reshape(K, out) * real
                for c in range(0, out, chunk):
                    self.Z.weight[j * out + c: j * out + min(c + chunk, out)] = (a @ y[:, c:c + chunk]).T
        else:
            fit_linear(self.Z, lab.states.reshape(K * l, -1), target.reshape(K * l, -1),
                       rows=lab.mask.reshape(-1))

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
        # Pad slots of a shorter label are masked out of attention (both variants).
        return encode_with_prefix(self, batch, prefix, mask, idx)
