"""Prompt tuning (Lester et al. 2021): P trainable soft tokens before the input, K-way head.

Trainable: prompt (P, d) + head (d*K + K). With method.pair_framing=true (PromptPairs): P soft
tokens per label, read before the text of each (text, label) pair, pair head: K*P*d + 2d + 2.
init=vocab copies P random vocabulary embeddings (Lester et al.'s better initialisation);
init=normal draws N(0, std of the embedding table).
"""

from __future__ import annotations

import torch
from torch import nn

from ltune_cli.methods import register
from ltune_cli.methods.base import ClassifierMethod, PairBaseline, encode_with_prompt


class PromptPairs(PairBaseline):
    name = "prompt"

    def initial_table(self):
        table = self.backbone.model.get_input_embeddings().weight.detach().float()
        if self.cfg.init == "vocab":
            return table[self.random_ids()].clone().cpu()  # (K, P, d)
        return torch.randn(self.num_labels, self.P, table.shape[1]) * table.std().item()

    def encode_with(self, batch, prompt, mask, idx):
        return encode_with_prompt(self, batch, prompt, mask, idx)


@register("prompt")
class Prompt(ClassifierMethod):
    in_pairs = PromptPairs

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
