"""Pure classification metrics, each declaring whether higher is better.

Every function takes integer arrays of predictions and gold labels and returns a float.
`compare` and the reports read `METRICS[name].higher_is_better` to mark the best cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else float("nan")


def matthews_corrcoef(pred: Sequence[int], gold: Sequence[int]) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); 0.0 when undefined, as sklearn."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    k = int(max(pred.max(initial=0), gold.max(initial=0))) + 1
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (gold, pred), 1)
    t, p = cm.sum(1), cm.sum(0)
    c, s = np.trace(cm), cm.sum()
    denom = np.sqrt(s**2 - (p**2).sum()) * np.sqrt(s**2 - (t**2).sum())
    return float((c * s - (t * p).sum()) / denom) if denom > 0 else 0.0


def macro_f1(pred: Sequence[int], gold: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or pred."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    classes = np.union1d(pred, gold)
    f1s = []
    for c in classes:
        tp = np.sum((pred == c) & (gold == c))
        fp = np.sum((pred == c) & (gold != c))
        fn = np.sum((pred != c) & (gold == c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s)) if f1s else float("nan")


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", accuracy),
        Metric("mcc", matthews_corrcoef),
        Metric("macro_f1", macro_f1),
        Metric("loss", lambda p, g: float("nan"), higher_is_better=False),
    )
}


def classification_scores(pred: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    """accuracy, mcc and macro_f1 for one prediction set."""
    return {name: METRICS[name].fn(pred, gold) for name in ("accuracy", "mcc", "macro_f1")}
