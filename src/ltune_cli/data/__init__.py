"""Datasets: the vendored GLUE tasks, your own CSV/TSV/JSONL files, or the Hugging Face hub.

`load_splits(cfg.dataset)` is the one entry point. It returns `Splits` (train/eval lists of
`Example`, label ids 0..K-1 indexing `cfg.label_texts`), or raises a one-line `LtuneError`
naming the file, line and column at fault and the fix; no other exception escapes for any
file content.

Texts are stripped of surrounding whitespace. `train_limit` / `eval_limit` keep the first N
examples of a split in file order (deterministic, no shuffling); for local files the whole
file is still checked, for the hub only the first N rows are read.

`holdout: N` tunes without touching the eval split: N train examples, drawn once with a fixed
seed (`HOLDOUT_SEED`, the same slice for every method and run seed), become the eval split and
training uses the rest (then `train_limit`/`eval_limit` apply). Learning rates and lengths
chosen on it never saw the dev set.
"""

from __future__ import annotations

import random

from ltune_cli.data.examples import Columns
from ltune_cli.data.files import load_files
from ltune_cli.data.glue import load_glue
from ltune_cli.data.hub import load_hub
from ltune_cli.data.splits import Example, Splits
from ltune_cli.data.tables import show
from ltune_cli.errors import LtuneError, suggest

__all__ = ["Example", "Splits", "load_splits", "LOADERS"]

#: dataset.kind -> loader(cfg, columns, label_texts) -> (train, eval, source)
LOADERS = {"glue": load_glue, "files": load_files, "hub": load_hub}


def _label_texts(cfg) -> list[str]:
    """cfg.label_texts as a list of distinct, non-empty strings (their order defines class ids)."""
    raw = cfg.label_texts
    texts = [str(t).strip() for t in raw] if raw is not None and not isinstance(raw, str) else []
    if len(texts) < 2:
        raise LtuneError("config key 'dataset.label_texts' needs at least two label texts, "
                         "e.g. dataset.label_texts='[negative,positive]'.")
    for i, t in enumerate(texts):
        if not t:
            raise LtuneError(f"config key 'dataset.label_texts': label text {i} is empty.")
        if t in texts[:i]:
            raise LtuneError(f"config key 'dataset.label_texts': '{t}' appears twice; each class needs its own text.")
    return texts


def _limit(value, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LtuneError(f"config key '{key}' must be a positive integer or null, got {show(value)}.")
    return value


def load_splits(cfg) -> Splits:
    """Load the train and eval splits that `cfg` (the dataset config) describes."""
    loader = LOADERS.get(str(cfg.kind))
    if loader is None:
        raise LtuneError(f"config key 'dataset.kind': '{cfg.kind}' is not one of {', '.join(LOADERS)}."
                         f"{suggest(cfg.kind, LOADERS)}")
    label_texts = _label_texts(cfg)
    columns = Columns.from_cfg(cfg)
    train_limit = _limit(cfg.train_limit, "dataset.train_limit")
    eval_limit = _limit(cfg.eval_limit, "dataset.eval_limit")
    holdout = _limit(getattr(cfg, "holdout", None), "dataset.holdout")
    train, eval_, source = loader(cfg, columns, label_texts)
    if holdout:
        train, eval_, source = _hold_out(train, holdout, source)
    return Splits(name=str(cfg.name), label_texts=label_texts, train=train[:train_limit],
                  eval=eval_[:eval_limit], primary_metric=str(cfg.primary_metric), source=source)


HOLDOUT_SEED = 20240201  # fixed: every method, run seed and sweep tunes on the same slice


def _hold_out(train: list[Example], n: int, source: dict) -> tuple[list[Example], list[Example], dict]:
    """(train without the slice, the slice as eval split, source noting it); file order is kept."""
    if n >= len(train):
        raise LtuneError(f"config key 'dataset.holdout' is {n} but the train split has {len(train)} examples; "
                         f"hold out fewer (e.g. dataset.holdout={max(len(train) // 5, 1)}).")
    picked = set(random.Random(HOLDOUT_SEED).sample(range(len(train)), n))
    held = [e for i, e in enumerate(train) if i in picked]
    rest = [e for i, e in enumerate(train) if i not in picked]
    return rest, held, {**source, "eval": f"holdout: {n} train examples (seed {HOLDOUT_SEED})"}
