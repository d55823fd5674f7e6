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


class RunInterrupted(LtuneError):
    """Ctrl-C / SIGTERM: a checkpoint was saved; the message says how to resume."""

    exit_code = 130


def train(cfg, *, backbone=None, console=None) -> Path:
    """Run (or, with cfg.resume, continue) one training job; returns the run folder."""
    t_start = time.time()
    run_dir, resuming = prepare_run_dir(cfg)
    try:
        return _train(cfg, run_dir, t_start, backbone, console, resuming)
    except RunInterrupted:
        raise  # not a failure: the checkpoint is the state, and resume continues it
    except BaseException as e:
        _record_failure(run_dir, cfg, e, t_start)
        raise


def _train(cfg, run_dir: Path, t_start: float, backbone, console, resuming: bool) -> Path:
    from ltune_cli import checkpoint

    s = build(cfg, backbone=backbone)
    method, tc, hw = s.method, cfg.train, cfg.hardware
    lr = tc.lr if tc.lr is not None else cfg.method.lr
    params = method.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    warmup = int(tc.warmup_ratio * tc.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, tc.max_steps))
    order = BatchOrder(s.train_enc.lengths, hw.batch_size * hw.grad_accum, cfg.seed, tc.group_by_length)
    pairs_gen = torch.Generator().manual_seed(cfg.seed)
    metrics_path = run_dir / "metrics.jsonl"
    # Loss accumulated since the last "train" record, so records are the same after a resume.
    window = {"loss": 0.0, "n": 0, "skipped": 0}
    step = 0

    def snapshot() -> dict:
        return {"step": step, "trainable": method.trainable_state(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "order": order.state_dict(),
                "pairs_gen": pairs_gen.get_state(), "rng": checkpoint.rng_state(), "window": dict(window),
                "metrics_bytes": metrics_path.stat().st_size}

    ckpt = checkpoint.load_latest(run_dir) if resuming else None
    if ckpt is not None:
        method.load_trainable_state({k: v.to(s.device) for k, v in ckpt["trainable"].items()})
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        order.load_state_dict(ckpt["order"])
        pairs_gen.set_state(ckpt["pairs_gen"])
        checkpoint.set_rng_state(ckpt["rng"])
        window, step = ckpt["window"], ckpt["step"]
        with open(metrics_path, "r+b") as f:  # drop records written after that checkpoint
            f.truncate(ckpt["metrics_bytes"])
        log.info("resuming %s from step %d", run_dir, step)
    elif resuming:
        metrics_path.write_text("")
        log.info("no checkpoint in %s: starting it from step 0", run_dir)
    history = [r for r in runfolder.read_jsonl(metrics_path) if r["kind"] == "eval"]
    log.info("run folder %s: %s on %s/%s, %d trainable parameters", run_dir, cfg.method.name,
             cfg.model.name, cfg.dataset.name, method.num_trainable())

    method.train()
    t_train, window_t = time.time(), time.time()
    preds = None
    with _progress(console, tc) as progress, _stop_signals() as stop:
        task = progress.add_task("train", total=tc.max_steps, completed=step, loss=float("nan"), rate=0.0)
        while step < tc.max_steps:
            idx = next(order)
            step += 1
            loss_val = _step(s, method, idx, pairs_gen, hw)
            if not math.isfinite(loss_val):
                opt.zero_grad(set_to_none=True)
                last = checkpoint.list_checkpoints(run_dir)
                kept = f"the last good checkpoint ({last[-1].name}) is kept" if last else "no checkpoint yet"
                window["skipped"] += 1
                if tc.on_nonfinite == "stop" or window["skipped"] > 10:
                    raise LtuneError(f"training loss became {loss_val} at step {step}; {kept}. Lower train.lr "
                                     f"(now {lr}), use hardware.dtype=fp32, or train.on_nonfinite=skip.")
                log.warning("step %d: loss %s, batch skipped (train.on_nonfinite=skip)", step, loss_val)
            else:
                if tc.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                window["loss"] += loss_val
                window["n"] += 1
            sched.step()
            if step % tc.log_every == 0 or step == tc.max_steps:
                dt = time.time() - window_t
                n = max(window["n"], 1)
                rec = {"kind": "train", "step": step, "train_loss": window["loss"] / n,
                       "lr": sched.get_last_lr()[0], "examples_per_s": n * len(idx) / max(dt, 1e-9),
                       "time_s": time.time() - t_train}
                runfolder.append_jsonl(metrics_path, rec)
                progress.update(task, loss=rec["train_loss"], rate=rec["examples_per_s"])
                window.update(loss=0.0, n=0)
                window_t = time.time()
            if step % tc.eval_every == 0 or step == tc.max_steps:
                m, preds = evaluate(s)
                rec = {"kind": "eval", "step": step, **m, "time_s": time.time() - t_train}
                runfolder.append_jsonl(metrics_path, rec)
                history.append(rec)
                window_t = time.time()  # evaluation time is not training throughput
            progress.update(task, completed=step)
            if stop.requested or (tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.max_steps):
                checkpoint.save(run_dir, snapshot(), tc.keep_checkpoints)
            if stop.requested:
                raise RunInterrupted(f"{stop.requested} at step {step}: checkpoint saved; continue with "
                                     f"`ltune train --resume {run_dir}`")
    train_time = time.time() - t_train
    if preds is None:  # resumed exactly at the end: score the final weights once more
        m, preds = evaluate(s)

    save_trainable(method, run_dir)
    runfolder.write_json(run_dir / "predictions.json",
                         {"gold": s.eval_enc.labels, "pred": preds, "label_texts": s.data.label_texts})
    results = result_record(cfg, s, status="completed", history=history, steps=tc.max_steps,
                            wall=time.time() - t_start, train_time=train_time)
    runfolder.write_json(run_dir / "results.json", results)
    import shutil

    shutil.rmtree(run_dir / checkpoint.CKPT_DIR, ignore_errors=True)  # the run is complete
    return run_dir


def _step(s: Setup, method, idx, pairs_gen, hw) -> float:
    """Forward + backward of one (possibly accumulated) batch; returns the loss."""
    loss_val = 0.0
    try:
        for micro in np.array_split(idx, hw.grad_accum):
            batch = collate(s.train_enc, micro, s.backbone.pad_id, s.backbone.padding_side, s.device)
            with s.autocast():
                loss = method.training_loss(batch, pairs_gen) * (len(micro) / len(idx))
            loss.backward()
            loss_val += loss.item()
    except torch.OutOfMemoryError:
        B, A = hw.batch_size, hw.grad_accum
        raise LtuneError(f"out of memory at hardware.batch_size={B} (grad_accum={A}); keep the effective batch "
                         f"with hardware.batch_size={max(1, B // 2)} hardware.grad_accum={A * 2}, or use "
                         f"hardware.dtype=bf16.") from None
    return loss_val


class _StopFlag:
    requested: str | None = None


@contextlib.contextmanager
def _stop_signals():
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits cleanly."""
    import signal
    import threading

    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        flag.requested = signal.Signals(signum).name

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# --------------------------------------------------------------------------- run folders
def run_name(cfg) -> str:
    return cfg.name or f"{cfg.method.name}-{cfg.model.name}-{cfg.dataset.name}-s{cfg.seed}"


def prepare_run_dir(cfg) -> tuple[Path, bool]:
    """A new run folder, or (cfg.resume) the existing one in out_dir; returns (folder, resuming)."""
    if cfg.resume:
        if not cfg.out_dir:
            raise LtuneError("resume=true needs out_dir=<run folder> (or use `ltune train --resume <run folder>`).")
        d = Path(cfg.out_dir)
        if (d / "config.yaml").is_file():
            _check_same_config(cfg, d)
            if (d / "results.json").is_file():
                status = runfolder.read_results(d).get("status")
                if status == "completed":
                    raise LtuneError(f"{d} already holds a completed run; nothing to resume.")
                (d / "results.json").unlink()  # a failed run: continue from its last checkpoint
            return d, True
    d = make_run_dir(cfg)
    runfolder.atomic_write_text(d / "config.yaml", _yaml(cfg))
    (d / "metrics.jsonl").write_text("")
    return d, False


def _check_same_config(cfg, d: Path) -> None:
    from omegaconf import OmegaConf

    stored = OmegaConf.to_container(OmegaConf.load(d / "config.yaml"), resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True)
    diffs = sorted(k for k in _flatten(now).keys() | _flatten(stored).keys()
                   if k != "resume" and _flatten(now).get(k) != _flatten(stored).get(k))
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
