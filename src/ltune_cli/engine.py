"""The one training loop every method shares: setup, train, evaluate, save.

It is the experimental control of every comparison ltune makes, so it never asks which
method it runs: it calls `method.training_loss`, `method.scores`, `method.score_loss`
and `method.extra_metrics` (see methods/base.py) and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltune_cli import runfolder
from ltune_cli.batching import BatchOrder, Encoded, collate, encode_examples, eval_batches
from ltune_cli.errors import LtuneError
from ltune_cli.metrics import classification_scores

log = logging.getLogger("ltune")


@dataclass
class Setup:
    """Everything a run needs, built from a config: shared by train and eval."""

    cfg: object
    data: object  # data.Splits
    backbone: object
    method: object
    train_enc: Encoded | None
    eval_enc: Encoded
    device: torch.device
    autocast: object  # () -> context manager


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(cfg, *, backbone=None, with_train: bool = True) -> Setup:
    """Data, frozen base, method and tokenised splits, in that order (seeded)."""
    from ltune_cli.data import load_splits
    from ltune_cli.methods import build_method
    from ltune_cli.models.backbone import DTYPES, load_backbone

    hw = cfg.hardware
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)
    seed_everything(cfg.seed)
    data = load_splits(cfg.dataset)
    if with_train and not data.train:
        raise LtuneError(f"dataset '{cfg.dataset.name}': the train split is empty.")
    if not data.eval:
        raise LtuneError(f"dataset '{cfg.dataset.name}': the eval split is empty.")
    if backbone is None:
        backbone = load_backbone(cfg.model, hw)
    device = backbone.device
    seed_everything(cfg.seed)  # method init does not depend on how many draws loading took
    method = build_method(cfg.method, backbone, data.label_texts).to(device)
    tok, L = backbone.tokenizer, cfg.model.max_length
    train_enc = encode_examples(data.train, tok, L, what="train") if with_train else None
    eval_enc = encode_examples(data.eval, tok, L, what="eval")
    dtype = DTYPES[hw.dtype]

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    return Setup(cfg, data, backbone, method, train_enc, eval_enc, device, autocast)


# --------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def evaluate(s: Setup, batch_size: int | None = None) -> tuple[dict, np.ndarray]:
    """Score every eval text against all labels; returns (metrics, predictions in data order)."""
    method, enc = s.method, s.eval_enc
    was_training = method.training
    method.eval()
    n = len(enc)
    preds = np.zeros(n, dtype=np.int64)
    loss_sum, extra_sum = 0.0, {}
    for idx in eval_batches(enc.lengths, batch_size or s.cfg.hardware.eval_batch_size):
        batch = collate(enc, idx, s.backbone.pad_id, s.backbone.padding_side, s.device)
        with s.autocast():
            scores = method.scores(batch).float()
        loss_sum += method.score_loss(scores, batch["labels"]).sum().item()
        for k, v in method.extra_metrics(scores, batch["labels"]).items():
            extra_sum[k] = extra_sum.get(k, 0.0) + v.sum().item()
        preds[idx] = scores.argmax(-1).cpu().numpy()
    method.train(was_training)
    metrics = {"val_loss": loss_sum / n, **classification_scores(preds, enc.labels)}
    metrics.update({k: v / n for k, v in extra_sum.items()})
    return metrics, preds


# --------------------------------------------------------------------------- training
def lr_lambda(warmup: int, total: int):
    """Linear warm-up, then linear decay to 0 (the usual schedule for prefix/prompt tuning)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def train(cfg, *, backbone=None, console=None) -> Path:
    """Run one training job from a composed config; returns the run folder."""
    t_start = time.time()
    run_dir = make_run_dir(cfg)
    runfolder.atomic_write_text(run_dir / "config.yaml", _yaml(cfg))
    (run_dir / "metrics.jsonl").write_text("")
    try:
        return _train(cfg, run_dir, t_start, backbone, console)
    except BaseException as e:
        _record_failure(run_dir, cfg, e, t_start)
        raise


def _train(cfg, run_dir: Path, t_start: float, backbone, console) -> Path:
    s = build(cfg, backbone=backbone)
    method, tc, hw = s.method, cfg.train, cfg.hardware
    lr = tc.lr if tc.lr is not None else cfg.method.lr
    params = method.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    warmup = int(tc.warmup_ratio * tc.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, tc.max_steps))
    order = BatchOrder(s.train_enc.lengths, hw.batch_size * hw.grad_accum, cfg.seed, tc.group_by_length)
    pairs_gen = torch.Generator().manual_seed(cfg.seed)
    log.info("run folder %s: %s on %s/%s, %d trainable parameters", run_dir, cfg.method.name,
             cfg.model.name, cfg.dataset.name, method.num_trainable())

    metrics_path = run_dir / "metrics.jsonl"
    history: list[dict] = []
    method.train()
    t_train = time.time()
    seen, window_loss, window_n, window_t = 0, 0.0, 0, time.time()
    with _progress(console, tc) as progress:
        task = progress.add_task("train", total=tc.max_steps, loss=float("nan"), rate=0.0)
        for step in range(1, tc.max_steps + 1):
            idx = next(order)
            loss_val = 0.0
            for micro in np.array_split(idx, hw.grad_accum):
                batch = collate(s.train_enc, micro, s.backbone.pad_id, s.backbone.padding_side, s.device)
                with s.autocast():
                    loss = method.training_loss(batch, pairs_gen) * (len(micro) / len(idx))
                loss.backward()
                loss_val += loss.item()
            if not math.isfinite(loss_val):
                raise LtuneError(f"training loss became {loss_val} at step {step}; lower train.lr "
                                 f"(now {lr}) or use hardware.dtype=fp32.")
            if tc.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            seen += len(idx)
            window_loss += loss_val
            window_n += 1
            if step % tc.log_every == 0 or step == tc.max_steps:
                dt = time.time() - window_t
                rec = {"kind": "train", "step": step, "train_loss": window_loss / window_n,
                       "lr": sched.get_last_lr()[0], "examples_per_s": window_n * len(idx) / max(dt, 1e-9),
                       "time_s": time.time() - t_train}
                runfolder.append_jsonl(metrics_path, rec)
                progress.update(task, loss=rec["train_loss"], rate=rec["examples_per_s"])
                window_loss, window_n, window_t = 0.0, 0, time.time()
            if step % tc.eval_every == 0 or step == tc.max_steps:
                m, preds = evaluate(s)
                rec = {"kind": "eval", "step": step, **m, "time_s": time.time() - t_train}
                runfolder.append_jsonl(metrics_path, rec)
                history.append(rec)
                window_t = time.time()  # evaluation time is not training throughput
            progress.update(task, advance=1)
    train_time = time.time() - t_train

    save_trainable(method, run_dir)
    runfolder.write_json(run_dir / "predictions.json",
                         {"gold": s.eval_enc.labels, "pred": preds, "label_texts": s.data.label_texts})
    results = result_record(cfg, s, status="completed", history=history, steps=tc.max_steps,
                            wall=time.time() - t_start, train_time=train_time)
    runfolder.write_json(run_dir / "results.json", results)
    return run_dir


# --------------------------------------------------------------------------- run folders
def run_name(cfg) -> str:
    return cfg.name or f"{cfg.method.name}-{cfg.model.name}-{cfg.dataset.name}-s{cfg.seed}"


def make_run_dir(cfg) -> Path:
    from ltune_cli.paths import outputs_dir

    if cfg.out_dir:
        d = Path(cfg.out_dir)
        if (d / "results.json").exists():
            raise LtuneError(f"out_dir={d} already holds a finished run (results.json); choose another "
                             f"out_dir or remove that folder.")
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
    runfolder.atomic_write_bytes(run_dir / "trainable.safetensors", save(state, metadata={"format": "pt"}))


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


def result_record(cfg, s: Setup, *, status: str, history: list[dict], steps: int, wall: float,
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
        "schema": runfolder.SCHEMA, "status": status, "error": error,
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


def _record_failure(run_dir: Path, cfg, e: BaseException, t_start: float) -> None:
    import traceback

    msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
    if isinstance(e, KeyboardInterrupt):
        msg = "interrupted (KeyboardInterrupt)"
    (run_dir / "error.txt").write_text(msg + "\n\n" + "".join(traceback.format_exception(e)))
    if not (run_dir / "results.json").exists():
        runfolder.write_json(run_dir / "results.json", {
            "schema": runfolder.SCHEMA, "status": "failed", "error": msg, "ltune_version": _version(),
            "versions": versions(), "git": git_info(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": {"name": run_name(cfg), "method": cfg.method.name,
                    "variant": cfg.method.variant if cfg.method.name == "lt_prefix" else None,
                    "model": cfg.model.name, "model_path": cfg.model.path, "family": None,
                    "dataset": cfg.dataset.name, "seed": cfg.seed},
            "seed": cfg.seed, "trainable_params": None, "total_params": None, "steps": None,
            "train_examples": None, "eval_examples": None,
            "primary_metric": cfg.dataset.primary_metric, "final": None, "best": None,
            "wall_time_s": time.time() - t_start, "train_time_s": None})


def _yaml(cfg) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def _version() -> str:
    from ltune_cli import __version__

    return __version__


def versions() -> dict:
    import platform

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


@contextlib.contextmanager
def _progress(console, tc):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.1f} ex/s"),
                        TimeRemainingColumn(), console=console, disable=not tc.progress, transient=False)
    with progress:
        yield progress
