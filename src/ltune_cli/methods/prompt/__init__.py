"""Prompt tuning (Lester et al. 2021): P trainable soft tokens before the input, K-way head.

Trainable: prompt (P, d) + head (d*K + K). init=vocab copies P random vocabulary
embeddings (Lester et al.'s better initialisation); init=normal draws N(0, std of the
embedding table).
"""

from __future__ import annotations

import torch
from torch import nn

from ltune_cli.methods import register
from ltune_cli.methods.base import ClassifierMethod


@register("prompt")
class Prompt(ClassifierMethod):
    def __init__(self, backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        table = backbone.model.get_input_embeddings().weight.detach().float()
        P = cfg.num_virtual_tokens
        if cfg.init == "vocab":
            idx = torch.randint(0, table.shape[0], (P,))
            init = table[idx].clone().cpu()
        else:
            init = torch.randn(P, table.shape[1]) * table.std().item()
        self.prompt = nn.Parameter(init)

    def encode(self, batch):
        # One prompt for every text (a decoder reads it once per forward: Backbone.shares_prompt).
        return self.backbone.encode(**self.text_inputs(batch), prompt=self.prompt.unsqueeze(0))
