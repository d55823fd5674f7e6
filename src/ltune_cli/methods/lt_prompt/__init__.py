"""L-Tuning for prompt: label states -> trainable G (d x d) -> soft prompt before the text.

Trainable (paper A.5): G d*d + head C 2d (+2 biases) = d(d+2) + 2.
With init_from_label (default) G starts as the map that turns each label state into that
label token's input embedding; otherwise as the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from ltune_cli.methods import register
from ltune_cli.methods.base import PairMethod, encode_with_prompt, fit_linear


@register("lt_prompt")
class LTPrompt(PairMethod):
    def __init__(self, backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        d = backbone.geo.hidden
        self.G = nn.Linear(d, d, bias=False)
        self.maps_to(backbone.device)  # the warm start runs where the label states are
        if cfg.init_from_label:
            # At step 0 the prompt is the label's own input embeddings: the text reads as
            # "label, then text". (G maps the fixed label states; min-norm least squares.)
            lab = self.labels_frozen
            K, l, _ = lab.states.shape
            fit_linear(self.G, lab.states.reshape(K * l, d), backbone.embed(lab.ids).reshape(K * l, d),
                       rows=lab.mask.reshape(-1))
        else:
            with torch.no_grad():
                self.G.weight.copy_(torch.eye(d))

    def transform(self, states, mask):
        return self.G(states) * mask[..., None]  # (N, l, d)

    def encode_with(self, batch, prompt, mask, idx):
        return encode_with_prompt(self, batch, prompt, mask, idx)
