"""train.keep_best and train.early_stop_patience: the best evaluation so far, by the primary metric.

The primary metric is the dataset's (`dataset.primary_metric`: accuracy, MCC for CoLA, macro-F1),
the one `ltune compare` ranks by; all of them are higher-is-better, and a later evaluation counts
as better only when strictly higher (a tie keeps the earlier weights: fewer steps, same score).

keep_best: the trainable weights (and predictions) of the best evaluation are kept on the CPU
and become the run's trainable.safetensors / predictions.json, and results.json "final" holds
that evaluation's scores (so `ltune eval` re-scores exactly those weights); "last" holds the last
evaluation's. early_stop_patience=N (0 = off): training stops after N evaluations in a row
without improvement. Both states go into every checkpoint, so a resumed run selects and stops
exactly as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np


class Selection:
    def __init__(self, metric: str, keep_best: bool, patience: int):
        self.metric, self.keep_best, self.patience = metric, bool(keep_best), int(patience or 0)
        self.best: dict | None = None  # the best eval record so far
        self.weights: dict | None = None  # its trainable weights (CPU), keep_best only
        self.preds: np.ndarray | None = None  # its predictions, keep_best only
        self.since_best = 0  # evaluations since the best one

    def update(self, rec: dict, method, preds: np.ndarray) -> None:
        """Record one evaluation (its record, the method's weights now, its predictions)."""
        if self.best is None or rec[self.metric] > self.best[self.metric]:
            self.best, self.since_best = dict(rec), 0
            if self.keep_best:
                self.weights = {k: v.detach().to("cpu", copy=True) for k, v in method.trainable_state().items()}
                self.preds = np.array(preds, copy=True)
        else:
            self.since_best += 1

    def exhausted(self) -> bool:
        """Early stopping's verdict: `patience` evaluations in a row without improvement."""
        return self.patience > 0 and self.since_best >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "weights": self.weights, "preds": self.preds, "since_best": self.since_best}

    def load_state_dict(self, state: dict | None) -> None:
        if state:  # a checkpoint from before these options: nothing selected yet
            self.best, self.weights = state["best"], state["weights"]
            self.preds, self.since_best = state["preds"], state["since_best"]

    def summary(self, last: dict, stopped_at: int | None) -> dict:
        """results.json's record of which weights were saved (`last`: the last evaluation's
        record) and whether training stopped early."""
        saved = self.best if self.keep_best and self.best is not None else last
        return {
            "saved_weights": {"which": "best" if saved is not last else "last", "step": saved["step"],
                              "metric": self.metric, "value": saved[self.metric]},
            "early_stopping": {"patience": self.patience, "stopped_early": stopped_at is not None,
                               "stopped_at_step": stopped_at, "best_step": self.best["step"] if self.best else None},
        }
