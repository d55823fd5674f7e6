"""Tokenise once, then serve padded batches: seeded, length-grouped, resumable.

Texts are tokenised a single time per run (no per-step tokenizer calls). Each batch is
padded to its own longest sequence. Training batches are length-grouped: indices are
shuffled, cut into mega-batches of `group` batches, sorted by length inside each, cut
into batches, and the batch order shuffled again, so batches stay random across groups
while padding stays small. The order depends only on (seed, epoch).
"""

from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger("ltune")


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray  # (N,) int64
    n_truncated: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    @functools.cached_property
    def packed(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """All rows concatenated once: (ids, token_type_ids or None, row starts, row lengths).

        Lets `collate` build a batch with a few array ops instead of a loop over its rows.
        """
        lengths = self.lengths
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        total = int(lengths.sum())
        ids = np.fromiter(itertools.chain.from_iterable(self.input_ids), dtype=np.int64, count=total)
        tt = (np.fromiter(itertools.chain.from_iterable(self.token_type_ids), dtype=np.int64, count=total)
              if self.token_type_ids is not None else None)
        return ids, tt, starts, lengths


def encode_examples(examples, tokenizer, max_length: int, *, what: str = "data") -> Encoded:
    """Tokenise (text[, text_pair]) examples; count (and log) rows cut at max_length."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    has_pairs = any(p is not None for p in pairs)
    if has_pairs and getattr(tokenizer, "sep_token", None) is None:
        # Tokenizers without a pair template (GPT-2, Llama) would glue the two texts together.
        texts = [f"{t}\n{p or ''}" for t, p in zip(texts, pairs)]
        has_pairs = False
    kw = dict(truncation=True, max_length=max_length, return_attention_mask=False)
    enc = tokenizer(texts, pairs, **kw) if has_pairs else tokenizer(texts, **kw)
    ids = enc["input_ids"]
    at_cap = [i for i, x in enumerate(ids) if len(x) >= max_length]
    n_trunc = 0
    if at_cap:  # only rows at the cap can have been cut: re-check those alone
        sub_t = [texts[i] for i in at_cap]
        full = (tokenizer(sub_t, [pairs[i] for i in at_cap], return_attention_mask=False) if has_pairs
                else tokenizer(sub_t, return_attention_mask=False))["input_ids"]
        n_trunc = sum(len(x) > max_length for x in full)
    if n_trunc:
        log.warning("%s: %d of %d rows are longer than model.max_length=%d tokens and were truncated",
                    what, n_trunc, len(ids), max_length)
    tt = enc.get("token_type_ids")
    labels = np.fromiter((e.label for e in examples), dtype=np.int64, count=len(examples))
    return Encoded(ids, tt, labels, n_trunc)


def collate(enc: Encoded, idx, pad_id: int, padding_side: str = "right", device="cpu") -> dict:
    """Pad the rows `idx` to their longest; returns input_ids, attention_mask, [token_type_ids], labels."""
    idx = np.asarray(idx, dtype=np.int64)
    flat_ids, flat_tt, starts, lengths = enc.packed
    lens = lengths[idx]
    B, T = len(idx), int(lens.max())
    # Positions of the batch's tokens in the packed arrays, row after row.
    ends = np.cumsum(lens)
    take = np.repeat(starts[idx] - (ends - lens), lens) + np.arange(int(ends[-1]))
    cols = np.arange(T)
    real = cols < lens[:, None] if padding_side == "right" else cols >= (T - lens)[:, None]
    ids = np.full((B, T), pad_id, dtype=np.int64)
    ids[real] = flat_ids[take]  # boolean assignment fills row-major: each row's tokens in order
    mask = real.astype(np.int64)
    tt = None
    if flat_tt is not None:
        tt = np.zeros((B, T), dtype=np.int64)
        tt[real] = flat_tt[take]
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
           "labels": torch.from_numpy(enc.labels[idx])}
    if tt is not None:
        out["token_type_ids"] = torch.from_numpy(tt)
    return {k: v.to(device, non_blocking=True) for k, v in out.items()}


class BatchOrder:
    """An endless, seeded stream of training index batches; `position` makes it resumable."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group_by_length: bool = True,
                 group: int = 50):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.group = group
        self.epoch = 0
        self.index = 0  # next batch within the epoch
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        B = self.batch_size
        if self.group_by_length:
            mega = B * self.group
            chunks = [perm[i:i + mega] for i in range(0, len(perm), mega)]
            perm = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])
        batches = [perm[i:i + B] for i in range(0, len(perm), B)]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        if self.index >= len(self._batches):
            self.epoch += 1
            self.index = 0
            self._batches = self._epoch_batches(self.epoch)
        b = self._batches[self.index]
        self.index += 1
        return b

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self.index = state["index"]
        self._batches = self._epoch_batches(self.epoch)


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches sorted by length (less padding); results are put back in order."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
