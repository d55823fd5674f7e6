"""Self-describing run folders: the contract between `train`, `eval`, `compare` and plots.

Layout of `outputs/<run>/` (schema `ltune.results/1`)::

    config.yaml            the resolved config (what `ltune eval` rebuilds the method from)
    metrics.jsonl          one JSON object per line, in step order:
                             {"kind": "train", "step", "train_loss", "lr", "examples_per_s", "time_s"}
                             {"kind": "eval",  "step", "val_loss", "accuracy", "mcc", "macro_f1",
                              ["pair_accuracy"], "time_s"}
    results.json           fixed schema, see `RESULT_KEYS`
    predictions.json       {"gold": [int], "pred": [int], "label_texts": [str]} of the final eval
    trainable.safetensors  the trainable weights only (the frozen base is never saved)
    error.txt              present when the run failed (results.json then has status "failed")

The lifecycle of a run folder lives here too: choosing and creating it, checking that a
resumed run has the same config, writing config.yaml / results.json / error.txt, and the
trainable weights' file. The training loop (engine.py) only calls into it.

This module imports no torch at import time (only inside the functions that save/load
weights or report versions): `compare` and the reports use it alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ltune_cli.errors import LtuneError

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
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o):
    if hasattr(o, "tolist"):  # numpy/torch arrays and scalars
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=_jsonable) + "\n")
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


# --------------------------------------------------------------------------- lifecycle
def run_name(cfg) -> str:
    return cfg.name or f"{cfg.method.name}-{cfg.model.name}-{cfg.dataset.name}-s{cfg.seed}"


def prepare_run_dir(cfg) -> tuple[Path, bool]:
    """A new run folder, or (cfg.resume) the existing one in out_dir; returns (folder, resuming)."""
    if cfg.resume:
        if not cfg.out_dir:
            raise LtuneError("resume=true needs out_dir=<run folder> (or use `ltune train --resume <run folder>`).")
        d = Path(cfg.out_dir)
        if (d / "config.yaml").is_file():
            check_same_config(cfg, d)
            if (d / "results.json").is_file():
                status = read_results(d).get("status")
                if status == "completed":
                    raise LtuneError(f"{d} already holds a completed run; nothing to resume.")
                (d / "results.json").unlink()  # a failed run: continue from its last checkpoint
            return d, True
    d = make_run_dir(cfg)
    atomic_write_text(d / "config.yaml", config_yaml(cfg))
    (d / "metrics.jsonl").write_text("")
    return d, False


def check_same_config(cfg, d: Path) -> None:
    from omegaconf import OmegaConf

    from ltune_cli.config import load_stored
    from ltune_cli.distributed import LAYOUT_KEYS

    stored = OmegaConf.to_container(load_stored(d / "config.yaml"), resolve=True)  # + keys added since
    now = OmegaConf.to_container(cfg, resolve=True)
    diffs = sorted(k for k in _flatten(now).keys() | _flatten(stored).keys()  # layout: N -> M processes
                   if k != "resume" and k not in LAYOUT_KEYS and _flatten(now).get(k) != _flatten(stored).get(k))
    if diffs:
        raise LtuneError(f"cannot resume {d}: its config.yaml differs at {', '.join(diffs[:5])}; resume with "
                         f"`ltune train --resume {d}` (uses the stored config) or pick a new out_dir.")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def make_run_dir(cfg) -> Path:
    from ltune_cli.paths import outputs_dir

    if cfg.out_dir:
        d = Path(cfg.out_dir)
        if (d / "results.json").exists() or (d / "checkpoints").is_dir():
            raise LtuneError(f"out_dir={d} already holds a run; choose another out_dir, remove that folder, "
                             f"or continue it with `ltune train --resume {d}`.")
    else:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        d = outputs_dir() / f"{stamp}_{run_name(cfg)}"
        k = 1
        while d.exists():
            d = outputs_dir() / f"{stamp}_{run_name(cfg)}_{k}"
            k += 1
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_trainable(method, run_dir: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().float().cpu().contiguous() for k, v in method.trainable_state().items()}
    atomic_write_bytes(run_dir / "trainable.safetensors", save(state, metadata={"format": "pt"}))


def load_trainable(method, run_dir: Path) -> None:
    from safetensors.torch import load_file

    path = run_dir / "trainable.safetensors"
    if not path.is_file():
        raise LtuneError(f"{path} is missing: the run did not finish; re-run it (or resume it).")
    state = load_file(str(path))
    try:
        method.load_trainable_state({k: v.to(method.backbone.device) for k, v in state.items()})
    except ValueError as e:
        raise LtuneError(f"{path} does not fit the run's method/model: {e}") from None


def result_record(cfg, s, *, status: str, history: list[dict], steps: int, wall: float,
                  train_time: float, error: str | None = None) -> dict:
    primary = cfg.dataset.primary_metric
    evals = [h for h in history if h.get("kind", "eval") == "eval"]
    keep = ("step", "accuracy", "mcc", "macro_f1", "val_loss", "pair_accuracy")
    final = {k: evals[-1][k] for k in keep if k in evals[-1]} if evals else None
    best = None
    if evals:
        b = max(evals, key=lambda h: h[primary])
        best = {k: b[k] for k in keep if k in b}
    total = sum(p.numel() for p in s.backbone.parameters()) + s.method.num_trainable() if s else None
    return {
        "schema": SCHEMA, "status": status, "error": error,
        "ltune_version": _version(), "versions": versions(), "git": git_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": {"name": run_name(cfg), "method": cfg.method.name,
                "variant": cfg.method.variant if cfg.method.name == "lt_prefix" else None,
                "model": cfg.model.name, "model_path": cfg.model.path,
                "family": s.backbone.geo.family if s else None, "dataset": cfg.dataset.name, "seed": cfg.seed},
        "seed": cfg.seed,
        "trainable_params": s.method.num_trainable() if s else None, "total_params": total,
        "steps": steps, "train_examples": len(s.train_enc) if s and s.train_enc else None,
        "eval_examples": len(s.eval_enc) if s else None,
        "primary_metric": primary, "final": final, "best": best,
        "wall_time_s": wall, "train_time_s": train_time,
    }


def record_failure(run_dir: Path, cfg, e: BaseException, t_start: float) -> None:
    import traceback

    msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
    if isinstance(e, KeyboardInterrupt):
        msg = "interrupted (KeyboardInterrupt)"
    (run_dir / "error.txt").write_text(msg + "\n\n" + "".join(traceback.format_exception(e)))
    if not (run_dir / "results.json").exists():
        write_json(run_dir / "results.json", {
            "schema": SCHEMA, "status": "failed", "error": msg, "ltune_version": _version(),
            "versions": versions(), "git": git_info(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": {"name": run_name(cfg), "method": cfg.method.name,
                    "variant": cfg.method.variant if cfg.method.name == "lt_prefix" else None,
                    "model": cfg.model.name, "model_path": cfg.model.path, "family": None,
                    "dataset": cfg.dataset.name, "seed": cfg.seed},
            "seed": cfg.seed, "trainable_params": None, "total_params": None, "steps": None,
            "train_examples": None, "eval_examples": None,
            "primary_metric": cfg.dataset.primary_metric, "final": None, "best": None,
            "wall_time_s": time.time() - t_start, "train_time_s": None})


def config_yaml(cfg) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def _version() -> str:
    from ltune_cli import __version__

    return __version__


def versions() -> dict:
    import platform

    import numpy as np
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__}


def git_info() -> dict:
    import subprocess

    from ltune_cli.paths import REPO_ROOT

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}
