"""Self-describing run folders: the contract between `train`, `eval`, `compare` and plots.

Layout of `outputs/<run>/` (schema `ltune.results/1`)::

    config.yaml            the resolved config (what `ltune eval` rebuilds the method from)
    metrics.jsonl          one JSON object per line, in step order:
                             {"kind": "train", "step", "train_loss", "lr", "examples_per_s", "time_s"}
                             (train_loss null when train.on_nonfinite=skip skipped every batch since the last)
                             {"kind": "eval",  "step", "val_loss", "accuracy", "mcc", "macro_f1",
                              ["pair_accuracy"], "time_s"}
    results.json           fixed schema, see `RESULT_KEYS`
    predictions.json       {"gold": [int], "pred": [int], "label_texts": [str]} of the final eval
    trainable.safetensors  the trainable weights only (the frozen base is never saved)
    error.txt              present when the run failed (results.json then has status "failed")

Every JSON file is strict JSON: a NaN or infinite number is written as null (`dumps`).

This module imports no torch: `compare` and the reports use it alone.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = "ltune.results/1"
RESULT_KEYS = (
    "schema", "status", "error", "ltune_version", "versions", "git", "created", "run",
    "seed", "trainable_params", "total_params", "steps", "train_examples", "eval_examples",
    "primary_metric", "final", "best", "wall_time_s", "train_time_s",
)
REQUIRED_FILES = ("config.yaml", "metrics.jsonl", "results.json")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def dumps(obj: Any, **kw) -> str:
    """Strict JSON: a NaN or infinite number is written as null (Python's default writes a bare
    NaN, which other JSON readers reject), so no file ltune writes is non-standard JSON."""
    return json.dumps(_finite(obj), default=_jsonable, allow_nan=False, **kw)


def _finite(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _jsonable(o):
    if hasattr(o, "tolist"):  # numpy/torch arrays and scalars
        return _finite(o.tolist())
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(dumps(record) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def read_results(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))


def read_metrics(run_dir: str | Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "results.json").is_file()


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run folder at or below `root` (a run folder, a sweep folder, or outputs/)."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    return sorted(p.parent for p in root.rglob("results.json"))
