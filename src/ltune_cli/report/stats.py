"""Numbers behind the report: seed summaries, the paired bootstrap and steps-to-target.

Everything here is pure numpy on plain arrays so it can be tested without run folders.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from ltune_cli.metrics import METRICS

# Metrics the bootstrap can recompute from predictions.json (gold/pred only).
PREDICTION_METRICS = ("accuracy", "mcc", "macro_f1")


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: METRICS declares it; anything named *loss* is lower-better."""
    if metric in METRICS:
        return METRICS[metric].higher_is_better
    return "loss" not in metric


def summarize(values: Sequence[float]) -> tuple[float, float | None, int]:
    """(mean, sample std with ddof=1 or None for a single seed, n) of per-seed values."""
    arr = np.asarray([v for v in values if v is not None and not _isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), None, 0
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return float(arr.mean()), std, int(arr.size)


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def cell_rng(seed: int, key: str) -> np.random.Generator:
    """A generator per table cell, so a cell's interval does not depend on which other cells exist."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode("utf-8"))]))


def _confusions(gold: np.ndarray, pred: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """(B, k, k) confusion matrices (rows gold, cols pred) of B resamples given by idx (B, N)."""
    b = idx.shape[0]
    codes = gold[idx] * k + pred[idx] + (np.arange(b)[:, None] * (k * k))
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k).astype(np.float64)


def metric_from_confusion(cm: np.ndarray, metric: str) -> np.ndarray:
    """Vectorised accuracy / MCC / macro-F1 over a batch of confusion matrices.

    Same definitions as `ltune_cli.metrics` (MCC is 0 when undefined; macro-F1 averages
    the classes present in gold or pred), but for thousands of resamples at once.
    """
    s = cm.sum(axis=(1, 2))
    tp = np.diagonal(cm, axis1=1, axis2=2)
    t, p = cm.sum(2), cm.sum(1)  # per-class gold and predicted counts
    if metric == "accuracy":
        return tp.sum(1) / s
    if metric == "mcc":
        c = tp.sum(1)
        denom = np.sqrt(s**2 - (p**2).sum(1)) * np.sqrt(s**2 - (t**2).sum(1))
        num = c * s - (t * p).sum(1)
        return np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), 0.0)
    if metric == "macro_f1":
        present = (t + p) > 0
        f1 = np.where(present, 2 * tp / np.where(present, t + p, 1.0), 0.0)
        return f1.sum(1) / present.sum(1)
    raise ValueError(f"metric {metric!r} cannot be computed from predictions")


def paired_bootstrap(
    gold: Sequence[int],
    base_preds: Sequence[Sequence[int]],
    lt_preds: Sequence[Sequence[int]],
    metric: str,
    rng: np.random.Generator,
    n_boot: int = 2000,
    chunk: int = 250,
) -> tuple[float, float, float]:
    """Crossed paired bootstrap of mean_seeds[metric(lt) - metric(base)]; returns (diff, lo, hi).

    `base_preds[j]` and `lt_preds[j]` are the two methods' predictions for seed j on the
    same eval set. Each replicate draws ONE resample of the eval examples, shared by all
    seeds and both methods (the eval set is common to every run, so its sampling noise
    is shared), and independently draws the seeds with replacement; the replicate's value
    is the mean over the drawn seeds of the difference on the resampled examples. With
    one seed this is the ordinary paired example bootstrap. The interval is the 2.5 and
    97.5 percentiles of the replicates.
    """
    gold_a = np.asarray(gold, dtype=np.int64)
    base = [np.asarray(p, dtype=np.int64) for p in base_preds]
    lt = [np.asarray(p, dtype=np.int64) for p in lt_preds]
    m, n = len(base), gold_a.size
    k = int(max([gold_a.max(initial=0)] + [a.max(initial=0) for a in base + lt])) + 1
    full = np.arange(n)[None, :]
    diff = float(np.mean([
        metric_from_confusion(_confusions(gold_a, lt[j], full, k), metric)[0]
        - metric_from_confusion(_confusions(gold_a, base[j], full, k), metric)[0]
        for j in range(m)
    ]))
    per_seed = np.empty((m, n_boot))
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for j in range(m):
            per_seed[j, start:start + idx.shape[0]] = metric_from_confusion(
                _confusions(gold_a, lt[j], idx, k), metric
            ) - metric_from_confusion(_confusions(gold_a, base[j], idx, k), metric)
    boot = _resample_seeds(per_seed, rng)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def _resample_seeds(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replicate b = mean over m seeds drawn with replacement of per_seed[seed, b]."""
    m, n_boot = per_seed.shape
    if m == 1:
        return per_seed[0]
    sel = rng.integers(0, m, size=(n_boot, m))
    return per_seed[sel, np.arange(n_boot)[:, None]].mean(axis=1)


def seed_bootstrap(
    diffs: Sequence[float], rng: np.random.Generator, n_boot: int = 2000
) -> tuple[float, float | None, float | None]:
    """Bootstrap over seeds only, for metrics not recomputable from predictions.

    With a single seed there is nothing to resample, so the interval is (None, None).
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        return float(d.mean()) if d.size else float("nan"), None, None
    boot = _resample_seeds(np.repeat(d[:, None], n_boot, axis=1), rng)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def excludes_zero(lo: float | None, hi: float | None) -> bool:
    """True when the interval lies strictly on one side of 0 (a difference the data supports)."""
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def mean_curve(curves: Sequence[Sequence[dict]], key: str) -> list[tuple[int, float]]:
    """Seed-mean of one eval quantity per step: averages whichever seeds logged that step."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for rec in curve:
            v = rec.get(key)
            if v is None or _isnan(v):
                continue
            by_step.setdefault(int(rec["step"]), []).append(float(v))
    return [(s, float(np.mean(v))) for s, v in sorted(by_step.items())]


def first_step_reaching(curve: Sequence[tuple[int, float]], target: float, higher: bool) -> int | None:
    """First step whose value reaches the target (>= if higher is better, else <=), or None."""
    for step, v in curve:
        if (v >= target) if higher else (v <= target):
            return step
    return None
