"""The uniform interface every method implements, and the two shapes of method.

The engine only ever calls:
    method.training_loss(batch, generator) -> scalar loss
    method.scores(batch)                    -> (B, K) one score per label, argmax = prediction
    method.score_loss(scores, labels)       -> (B,) per-example validation loss
    method.extra_metrics(scores, labels)    -> dict of extra eval numbers (e.g. pair accuracy)
    method.trainable_state() / load_trainable_state(sd)
It never asks which method it runs.

`ClassifierMethod`: an ordinary K-way head on the pooled text (prefix / prompt baselines).
`PairMethod`: L-Tuning's NLI view: each (text, label) pair gets one logit; training uses
half true pairs and half pairs with a uniformly drawn wrong label (BCE); evaluation scores
every text against all K labels. The frozen LM's label states are constant, so they are
computed once per run and kept on the device (`cache_label_states=False` reproduces the
reference code's per-step re-encoding, for the benchmark).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ltune_cli.models.backbone import Backbone, LabelStates
from ltune_cli.models.families import resolve_label_echo


class Method(nn.Module):
    name = "method"
    # Whether the method hands the frozen base a key/value prefix: a family without a cache
    # (families.FAMILIES kv_cache=False) refuses it, here and in `ltune validate`.
    needs_kv_cache = False

    def __init__(self, backbone: Backbone, cfg, label_texts: list[str]):
        super().__init__()
        if self.needs_kv_cache:
            backbone.require_kv_cache(self.name)
        self.backbone = backbone
        self.cfg = cfg
        self.label_texts = list(label_texts)
        self.num_labels = len(label_texts)

    # --- the interface -------------------------------------------------------------------
    def training_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def score_loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores.float(), labels, reduction="none")

    def extra_metrics(self, scores: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example extra eval numbers (summed and averaged by the engine)."""
        return {}

    def positions_before_text(self) -> int:
        """Positions the method puts before every text (virtual tokens, label tokens): the text's
        positions start after them (engine.build checks the sum against the model's limit)."""
        return 0

    def texts_per_forward(self, texts: int, length: int, device: torch.device) -> float:
        """How many of `texts` texts of `length` tokens one scoring forward holds (memory.estimate)."""
        return float(texts)

    # --- trainable weights ---------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def default_lr(self) -> float:
        """The learning rate of everything but the head when train.lr is not set."""
        return self.cfg.lr

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the head at method.head_lr (when set), everything else at lr."""
        head = {id(p) for p in self.head.parameters()}
        body = [p for p in self.trainable_parameters() if id(p) not in head]
        head_lr = self.cfg.head_lr or lr
        return [g for g in ({"params": body, "lr": lr}, {"params": list(self.head.parameters()), "lr": head_lr})
                if g["params"]]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {id(p) for p in self.trainable_parameters()}
        return {k: v.detach() for k, v in self.named_parameters() if id(v) in names}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        missing = set(self.trainable_state()) - set(state)
        unexpected = set(state) - set(own)
        if missing or unexpected:
            raise ValueError(f"trainable weights do not match the method: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    # --- helpers -------------------------------------------------------------------------
    def maps_to(self, device: torch.device) -> None:
        """Move the method's own modules (not the frozen base) to `device`: a method's warm start
        runs on the label states the base computed there, before the engine moves anything."""
        for child in self.children():
            if child is not self.backbone:
                child.to(device)

    def head_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """dropout -> head on the pooled (N, d) encodings, in fp32 whatever autocast is on.

        Under bf16/fp16 autocast a Linear runs in half precision even on a `.float()` input;
        L-Tuning's pair logit is the difference of the head's two outputs, which bf16's 8-bit
        mantissa would round to a few hundredths. The head is tiny, so fp32 costs nothing."""
        with torch.autocast(pooled.device.type, enabled=False):
            return self.head(self.dropout(pooled.float()))

    def text_inputs(self, batch: dict) -> dict:
        return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "suffix_ids", "suffix_mask")
                if k in batch}


class ClassifierMethod(Method):
    """Pooled text -> dropout -> Linear(d, K). Subclasses say how the text is encoded."""

    def __init__(self, backbone: Backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(backbone.geo.hidden, self.num_labels)

    def encode(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def positions_before_text(self) -> int:
        return self.cfg.num_virtual_tokens  # the P prefix / prompt positions

    def scores(self, batch: dict) -> torch.Tensor:
        return self.head_logits(self.encode(batch))

    def training_loss(self, batch, generator):
        return self.score_loss(self.scores(batch), batch["labels"]).mean()


@torch.no_grad()
def ridge_operator(x: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """A (in, N) fp32 with W = A @ y minimising |x W - y|^2 + lam |W|^2, lam = ridge * mean |x_i|^2
    over the nonzero rows x_i.

    x: (N, in) with few rows N (the label tokens): the dual form W = x^T (x x^T + lam I)^+ y,
    so the only matrix decomposed is N x N (float64, on x's device); lam is relative to the
    rows' scale, so `ridge` means the same for any model. ridge=0 is the minimum-norm
    least-squares fit (eigenvalues below 1e-10 of the largest count as zero: duplicate rows,
    e.g. a shared first token, are fine).
    """
    xd = x.double()
    gram = xd @ xd.T  # (N, N)
    sq = gram.diagonal()  # squared row norms; a zeroed row (one fit_linear ignores) does not count
    lam = ridge * sq.sum() / (sq > 0).sum().clamp(min=1)  # tensors throughout: no host sync, any device
    evals, evecs = torch.linalg.eigh(gram)
    keep = evals > 1e-10 * evals.abs().max()
    inv = torch.where(keep, 1.0 / (evals.clamp(min=0) + lam).clamp(min=1e-300), torch.zeros_like(evals))
    return ((xd.T @ evecs) * inv @ evecs.T).float()


@torch.no_grad()
def fit_linear(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, ridge: float = 0.0,
               rows: torch.Tensor | None = None, chunk: int = 1 << 14) -> None:
    """Set `layer` to the ridge fit layer(x) ~ y (ridge_operator), bias as a column of ones.

    x: (N, in), y: (N, out); rows (N,) 0/1 picks the rows that count (a zeroed row, bias
    column included, is one the fit ignores: same shapes on every device, no boolean
    indexing). L-Tuning's maps only ever see the K fixed label states, so with N <= in and
    ridge=0 this reproduces the targets exactly: the warm start of `init_from_label`.
    Written `chunk` output rows of the weight at a time, in fp32 on the layer's device: no
    float64 copy of y or of the weight, whatever the map's width (a 7B model's L*2*kv_dim is
    262,144, its per_token Z 4 GiB in fp32).
    """
    dev = layer.weight.device
    w_rows = (rows if rows is not None else x.new_ones(x.shape[0])).to(dev, torch.float32)[:, None]
    x = x.to(dev, torch.float32) * w_rows
    if layer.bias is not None:
        x = torch.cat([x, w_rows], 1)
    a = ridge_operator(x, ridge)  # (in [+1], N)
    for c in range(0, y.shape[1], chunk):
        w = a @ (y[:, c:c + chunk].to(dev, torch.float32) * w_rows)  # (in [+1], chunk)
        layer.weight[c:c + chunk].copy_(w[: layer.in_features].T)
        if layer.bias is not None:
            layer.bias[c:c + chunk].copy_(w[layer.in_features])
        del w  # else the next chunk's product is allocated while this one is still alive


def draw_pairs(labels: torch.Tensor, num_labels: int, generator: torch.Generator):
    """Half the batch keeps its true label, half gets a uniformly drawn wrong one.

    Returns (label_idx (B,), target (B,) float: 1 for true pairs). Draws on the CPU
    generator so the sequence is seeded and identical on every device.
    """
    B = labels.shape[0]
    perm = torch.randperm(B, generator=generator)
    is_true = torch.zeros(B, dtype=torch.bool)
    is_true[perm[: (B + 1) // 2]] = True
    shift = torch.randint(1, num_labels, (B,), generator=generator)
    is_true, shift = is_true.to(labels.device), shift.to(labels.device)
    wrong = (labels + shift) % num_labels
    return torch.where(is_true, labels, wrong), is_true.float()


class PairMethod(Method):
    """L-Tuning: score (text, label) pairs with a head C: d -> 2 (logit = z_true - z_false).

    A 2-way head as in the paper/reference (its 2d weights are the "+2d" of A.5); the
    difference of its two outputs is the pair's logit, so BCE on it equals 2-way CE.
    """

    def __init__(self, backbone: Backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(backbone.geo.hidden, 2)
        self.labels_frozen: LabelStates = backbone.label_states(self.label_texts, cfg.label_len)
        self.label_len = self.labels_frozen.ids.shape[1]
        # The label echo: the label's own tokens (without a decoder's start token) after the text.
        self.echo = resolve_label_echo(backbone.geo.kind, cfg.label_echo)
        s = 0 if backbone.label_start_id() is None else 1
        self.echo_ids, self.echo_mask = self.labels_frozen.ids[:, s:], self.labels_frozen.mask[:, s:]

    def default_lr(self) -> float:
        """method.decoder_lr on a causal decoder when set (the label map's step is model-dependent:
        docs/methods.md "Decoders"), else method.lr."""
        if self.backbone.geo.kind == "decoder" and self.cfg.decoder_lr is not None:
            return self.cfg.decoder_lr
        return self.cfg.lr

    def positions_before_text(self) -> int:
        # the label's l prefix / prompt positions (+ its echo after the text: counted here, as
        # engine.build checks text + these against the position table)
        return self.label_len + (self.echo_ids.shape[1] if self.echo else 0)

    # Subclasses: label states (N, l, d) + mask (N, l) -> pooled text encodings of the pairs.
    def transform(self, states: torch.Tensor, mask: torch.Tensor):
        """Trainable map of label states to what the text is encoded with (prompt or prefix)."""
        raise NotImplementedError

    def encode_with(self, batch: dict, table, mask: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """Pooled encodings of the pairs: text i of `batch` read with row idx[i] of `table` (the
        transformed labels, mask (U, l)); idx None: row i (one table row per pair)."""
        raise NotImplementedError

    def pair_batch(self, batch: dict, label_idx: torch.Tensor) -> dict:
        """The pairs' text batch; with the label echo, each text followed by its label's real
        tokens (Backbone.encode puts them right after the text's last real token and pools there)."""
        if not self.echo:
            return batch
        return dict(batch, suffix_ids=self.echo_ids[label_idx], suffix_mask=self.echo_mask[label_idx])

    def _label_maps(self):
        """The K labels' trainable maps of their cached frozen states (transform of all K)."""
        return self.transform(self.labels_frozen.states, self.labels_frozen.mask)

    def _conditioning(self, label_idx: torch.Tensor, maps=None):
        """(table, mask, idx): transformed labels, their mask, and the row each pair reads.
        `maps`: the K label maps when the caller already computed them (_label_maps)."""
        if self.cfg.cache_label_states:
            # K label maps once; each pair reads its row (a gather, or a shared prompt read once).
            cond = self._label_maps() if maps is None else maps
            return cond, self.labels_frozen.mask, label_idx
        # Reference design: the label text goes through the frozen LM again for every pair.
        ids, mask = self.labels_frozen.ids[label_idx], self.labels_frozen.mask[label_idx]
        with torch.no_grad():
            states = self.backbone.hidden_states(ids, mask).float() * mask[..., None]
        return self.transform(states, mask), mask, None

    def pair_logits(self, batch: dict, label_idx: torch.Tensor, maps=None) -> torch.Tensor:
        table, mask, idx = self._conditioning(label_idx, maps)
        z = self.head_logits(self.encode_with(self.pair_batch(batch, label_idx), table, mask, idx))  # (N, 2), fp32
        return z[:, 1] - z[:, 0]

    def training_loss(self, batch, generator):
        label_idx, target = draw_pairs(batch["labels"], self.num_labels, generator)
        return F.binary_cross_entropy_with_logits(self.pair_logits(batch, label_idx), target)

    # Scoring cuts the B*K pairs of a batch into equal forwards of at most this many positions
    # (pairs x (text + label) length) on these devices; elsewhere all pairs go in one forward.
    # On a CPU a forward of 1-4k positions keeps its activations in cache: MiniLM, 20 labels x
    # 64 texts (~16k positions) in one piece cost 6-20% more per pair (scripts/eval_chunk_sizes.py).
    SCORE_CHUNK_POSITIONS = {"cpu": 2048}

    def scores(self, batch: dict) -> torch.Tensor:
        """(B, K): every text against every label, all pairs batched (in bounded chunks)."""
        B, T = batch["input_ids"].shape
        K, device = self.num_labels, batch["input_ids"].device
        expanded = {k: v.repeat_interleave(K, dim=0) for k, v in self.text_inputs(batch).items()}
        label_idx = torch.arange(K, device=device).repeat(B)
        n = B * K
        per = self._pairs_per_forward(n, T, device)
        # The K label maps once per batch, shared by its chunks.
        maps = self._label_maps() if self.cfg.cache_label_states else None
        logits = [self.pair_logits({k: v[i:i + per] for k, v in expanded.items()}, label_idx[i:i + per], maps)
                  for i in range(0, n, per)]
        return (logits[0] if len(logits) == 1 else torch.cat(logits)).view(B, K)

    def _pairs_per_forward(self, n: int, length: int, device: torch.device) -> int:
        """Pairs in each of the equal scoring forwards of n pairs (no small remainder forward)."""
        limit = self.SCORE_CHUNK_POSITIONS.get(device.type)
        chunks = 1 if limit is None else -(-n * (length + self.positions_before_text()) // limit)
        return -(-n // chunks)

    def texts_per_forward(self, texts, length, device):
        return self._pairs_per_forward(texts * self.num_labels, length, device) / self.num_labels

    def score_loss(self, scores, labels):
        """Mean BCE over the K pairs of each text (for K=2: one true, one wrong, as in training)."""
        target = F.one_hot(labels, self.num_labels).float()
        return F.binary_cross_entropy_with_logits(scores.float(), target, reduction="none").mean(1)

    def extra_metrics(self, scores, labels):
        target = F.one_hot(labels, self.num_labels).bool()
        return {"pair_accuracy": ((scores > 0) == target).float().mean(1)}


def encode_with_prefix(method: PairMethod, batch: dict, prefix, mask: torch.Tensor, idx) -> torch.Tensor:
    """Pooled encodings of texts read with a per-pair key/value prefix: `prefix` (U, l, L, 2,
    kv_heads, head_dim), `mask` (U, l) its real slots, text i reads row idx[i] (None: row i)."""
    if idx is not None:
        prefix, mask = prefix[idx], mask[idx]
    kv = prefix.permute(2, 3, 0, 4, 1, 5)  # (L, 2, N, kv_heads, l, head_dim)
    # unbind, not x[0]/x[1]: indexing's backward zero-fills a full-size copy per layer.
    layers = [tuple(x.unbind(0)) for x in kv.unbind(0)]
    return method.backbone.encode(**method.text_inputs(batch), prefix=layers, prefix_mask=mask)


def encode_with_prompt(method: PairMethod, batch: dict, prompt, mask: torch.Tensor, idx) -> torch.Tensor:
    """Pooled encodings of texts read after a per-pair soft prompt (U, l, d) with real slots `mask`
    (U, l); text i reads row idx[i]. The U prompts go to the backbone whole: a decoder reads each
    once (Backbone.shares_prompt)."""
    return method.backbone.encode(**method.text_inputs(batch), prompt=prompt, prompt_mask=mask, prompt_index=idx)


class PairBaseline(PairMethod):
    """A baseline (prefix / prompt tuning) in L-Tuning's pair framing (method.pair_framing=true):
    each label gets P trainable tokens of its own, drawn like the baseline's (init), in place of
    its text; the text is read with its label's tokens and the pair head C scores the pair, with
    L-Tuning's training (half true, half wrong pairs, BCE) and scoring. Against the K-way baseline
    it measures the framing; against L-Tuning, the label text. No label echo (it would put the
    label's text back); the baselines' learning rates (method.lr, head_lr)."""

    def __init__(self, backbone, cfg, label_texts):
        super().__init__(backbone, cfg, label_texts)
        self.echo = False
        self.P = cfg.num_virtual_tokens
        self.table = nn.Parameter(self.initial_table())  # (K, P, ...): label k's tokens

    def initial_table(self) -> torch.Tensor:
        raise NotImplementedError

    def random_ids(self) -> torch.Tensor:
        """(K, P) random vocabulary ids (init=vocab), drawn on the CPU like the baselines'."""
        vocab = self.backbone.model.get_input_embeddings().weight.shape[0]
        return torch.randint(0, vocab, (self.num_labels, self.P)).to(self.backbone.device)

    def default_lr(self) -> float:
        return self.cfg.lr

    def positions_before_text(self) -> int:
        return self.P

    def _label_maps(self):
        return self.table

    def _conditioning(self, label_idx, maps=None):
        return self.table, self.labels_frozen.mask.new_ones(self.num_labels, self.P), label_idx
