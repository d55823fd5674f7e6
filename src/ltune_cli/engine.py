"""The one training loop every method shares: setup, train, evaluate, save.

It is the experimental control of every comparison ltune makes, so it never asks which
method it runs: it calls `method.training_loss`, `method.scores`, `method.score_loss`
and `method.extra_metrics` (see methods/base.py) and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
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
    matmuls: object = contextlib.nullcontext  # () -> the context of backward's half products (backbone.half_matmuls)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(cfg, *, backbone=None, with_train: bool = True) -> Setup:
    """Data, frozen base, method and tokenised splits, in that order (seeded)."""
    from ltune_cli.data import load_splits

    hw = cfg.hardware
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)
    seed_everything(cfg.seed)
    data = load_splits(cfg.dataset)
    if with_train and not data.train:
        raise LtuneError(f"dataset '{cfg.dataset.name}': the train split is empty.")
    if not data.eval:
        raise LtuneError(f"dataset '{cfg.dataset.name}': the eval split is empty.")
    backbone, method = build_model(cfg, data.label_texts, backbone=backbone)
    device = backbone.device
    from ltune_cli.models.backbone import HalfMatmulsInFp32, half_matmuls, half_matmuls_note

    matmuls = half_matmuls(device, hw.dtype)
    if matmuls is HalfMatmulsInFp32:
        log.info(half_matmuls_note(hw.dtype))
    tok, L = backbone.tokenizer, cfg.model.max_length
    P = method.positions_before_text()  # texts longer than the position table: an error, not a silent cut
    room = (backbone.max_positions or 0) - P
    backbone.check_positions(L + P, f"model.max_length={L} plus the method's {P} positions before the text",
                             fix=f"set model.max_length<={room}" if room > 0 else
                             "use fewer positions before the text (method.num_virtual_tokens, method.label_len)")
    train_enc = encode_examples(data.train, tok, L, what="train") if with_train else None
    eval_enc = encode_examples(data.eval, tok, L, what="eval")
    return Setup(cfg, data, backbone, method, train_enc, eval_enc, device, autocaster(device, hw.dtype), matmuls)


def autocaster(device: torch.device, dtype_name: str):
    """() -> the autocast context of hardware.dtype on `device` (a no-op for fp32), with the
    half-precision products of a CPU without instructions for them on fp32 copies
    (backbone.half_matmuls)."""
    from ltune_cli.models.backbone import DTYPES, half_matmuls

    dtype = DTYPES[dtype_name]
    matmuls = half_matmuls(device, dtype_name)

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
        stack.enter_context(matmuls())
        return stack

    return autocast


def build_model(cfg, label_texts: list[str], *, backbone=None):
    """(frozen base, method on its device): what train, eval, predict and export all load."""
    from ltune_cli.methods import build_method
    from ltune_cli.models.backbone import load_backbone

    if backbone is None:
        backbone = load_backbone(cfg.model, cfg.hardware)
    seed_everything(cfg.seed)  # method init does not depend on how many draws loading took
    return backbone, _to_device(build_method(cfg.method, backbone, label_texts), backbone, backbone.device)


def _to_device(method, backbone, device: torch.device):
    """Move the method's own weights; the frozen base stays where loading put it (it may be
    spread over devices by device_map, quantized, or sharded by FSDP)."""
    for child in method.children():
        if child is not backbone:
            child.to(device)
    with torch.no_grad():
        for p in method.parameters(recurse=False):
            p.data = p.data.to(device)
    for name, b in list(method.named_buffers(recurse=False)):
        method._buffers[name] = b.to(device)
    return method


# --------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def evaluate(s: Setup, batch_size: int | None = None, on_batch=None, limit: int | None = None,
             also_first: int | None = None) -> tuple[dict, np.ndarray]:
    """Score every eval text against all labels; returns (metrics, predictions in data order).

    on_batch(done, total): called after each batch (a progress bar), if given.
    limit: only the first `limit` eval texts (train.curve_eval_limit's intermediate evaluations).
    also_first: the metrics of the first `also_first` texts too, as `curve_<metric>` (the last
    evaluation of a run whose curve scores a subset: its curve ends on the same texts).

    With several processes each scores every world-th batch and the (N, K) score matrix is
    assembled on all of them (distributed.gather_rows); metrics come from the whole matrix.
    """
    from ltune_cli import distributed

    method, enc = s.method, s.eval_enc
    if limit is not None and limit < len(enc):
        enc = Encoded(enc.input_ids[:limit], enc.token_type_ids and enc.token_type_ids[:limit],
                      enc.labels[:limit], 0)
    was_training = method.training
    method.eval()
    n = len(enc)
    all_scores = np.zeros((n, method.num_labels), dtype=np.float32)
    E = batch_size or s.cfg.hardware.eval_batch_size
    try:
        batches = list(distributed.shard_even(eval_batches(enc.lengths, E)))  # FSDP: a short rank runs one unkept
        for j, (idx, keep) in enumerate(batches):
            batch = collate(enc, idx, s.backbone.pad_id, s.backbone.padding_side, s.device)
            with s.autocast():
                scores = method.scores(batch).float().cpu().numpy()
            if keep:
                all_scores[idx] = scores
            if on_batch is not None:
                on_batch(j + 1, len(batches))
    except torch.OutOfMemoryError:
        raise LtuneError(f"out of memory while evaluating at hardware.eval_batch_size={E} "
                         f"({method.num_labels} labels scored per text); use hardware.eval_batch_size="
                         f"{max(1, E // 2)} (it changes no score).") from None
    method.train(was_training)
    scores = torch.from_numpy(distributed.gather_rows(all_scores))
    labels = torch.from_numpy(enc.labels)
    metrics = _metrics(method, scores, labels)
    if also_first is not None and also_first < n:
        metrics.update({f"curve_{k}": v for k, v in _metrics(method, scores[:also_first], labels[:also_first]).items()},
                       curve_eval_examples=also_first)
    return metrics, scores.argmax(-1).numpy()


def _metrics(method, scores: torch.Tensor, labels: torch.Tensor) -> dict:
    preds = scores.argmax(-1).numpy()
    metrics = {"val_loss": method.score_loss(scores, labels).mean().item(),
               **classification_scores(preds, labels.numpy())}
    metrics.update({k: v.float().mean().item() for k, v in method.extra_metrics(scores, labels).items()})
    return metrics


# --------------------------------------------------------------------------- training
def make_scheduler(opt, tc):
    """transformers' schedule `train.scheduler` (linear | cosine | constant_with_warmup), warming
    up over warmup_ratio x max_steps: the same functions as HF Trainer's lr_scheduler_type."""
    from transformers import get_scheduler

    return get_scheduler(tc.scheduler, opt, num_warmup_steps=int(tc.warmup_ratio * tc.max_steps),
                         num_training_steps=tc.max_steps)


class RunInterrupted(LtuneError):
    """Ctrl-C / SIGTERM / SIGHUP: the run stopped where resume can continue it; the message says how."""

    exit_code = 130


def train(cfg, *, backbone=None, console=None) -> Path:
    """Run (or, with cfg.resume, continue) one training job; returns the run folder.

    Several processes (hardware.strategy=ddp|fsdp): under torchrun every rank runs this and
    rank 0 writes the folder; otherwise the workers are started here (distributed.launch).
    """
    from ltune_cli import distributed, loggers

    loggers.require(cfg.logger.name)  # a missing extra: before a run folder or minutes of loading
    if distributed.needs_launch(cfg.hardware):
        return _launch(cfg)
    t_start = time.time()
    # Workers that `ltune train` started (_launch) write under the lock their launcher holds.
    lock = not os.environ.get(distributed.LAUNCHED_ENV)
    with distributed.session(cfg.hardware) as d:
        run_dir, resuming = distributed.on_main(lambda: runfolder.prepare_run_dir(cfg, lock=lock))
        try:
            with _stop_signals() as stop:
                try:
                    return _train(cfg, run_dir, t_start, backbone, console, resuming, stop)
                except KeyboardInterrupt:
                    if stop.hard is None:
                        raise
                    stop.hand_over(stop.hard)  # SIGUSR2 while loading: requeued, resumes from the last checkpoint
                    raise _hard_stop(stop, run_dir) from None
        except RunInterrupted:
            raise  # not a failure: the checkpoint is the state, and resume continues it
        except BaseException as e:
            err = runfolder.os_error_for_user(e, run_dir)  # a full disk, a read-only folder
            if d.is_main:
                runfolder.record_failure(run_dir, cfg, err or e, t_start)
            if err is not None:
                raise err from None
            raise
        finally:
            if d.is_main:
                runfolder.release(run_dir)


def _hard_stop(stop: _StopFlag, run_dir: Path) -> RunInterrupted:
    """A signal that stopped the run at once (during setup, or a second Ctrl-C): nothing new was
    saved; the newest checkpoint (or step 0) is where resume continues."""
    from ltune_cli import checkpoint

    last = checkpoint.list_checkpoints(run_dir)
    where = f"at step {stop.step} (a second signal)" if stop.in_loop else "while loading the model and data"
    since = f"its last checkpoint ({last[-1].name})" if last else "step 0"
    return RunInterrupted(f"{stop.hard} {where}: stopped without saving; continue from {since} with "
                          f"`{runfolder.resume_command(run_dir)}`")


def _launch(cfg) -> Path:
    """`ltune train hardware=ddp hardware.nproc=N` outside torchrun: make the run folder, then
    let torchrun start N workers that continue it (`ltune train --resume <folder>` with no
    checkpoint starts at step 0), with this config's layout keys."""
    from omegaconf import OmegaConf

    from ltune_cli import distributed

    t_start = time.time()
    run_dir, _ = runfolder.prepare_run_dir(cfg)  # resolved, locked: the workers all get this one folder
    try:
        layout = [f"{k}={_override_value(OmegaConf.select(cfg, k))}" for k in distributed.LAYOUT_KEYS]
        code = distributed.launch(cfg.hardware, ["train", "--resume", str(run_dir), *layout])
        return _launched(cfg, run_dir, code, t_start)
    finally:
        runfolder.release(run_dir)


def _launched(cfg, run_dir: Path, code: int, t_start: float) -> Path:
    from ltune_cli import distributed

    if code == 0:
        return run_dir
    if code == RunInterrupted.exit_code:
        raise RunInterrupted(f"interrupted: checkpoint saved; continue with `{runfolder.resume_command(run_dir)}`")
    res = runfolder.read_results(run_dir) if (run_dir / "results.json").is_file() else {}
    err = LtuneError(f"the {distributed.resolve_nproc(cfg.hardware)} workers failed (exit code {code}): "
                     f"{res.get('error') or 'see their output above'} (run folder {run_dir}).")
    if not res:  # rank 0 was stopped before it could record the failure
        runfolder.record_failure(run_dir, cfg, err, t_start)
    raise err


def _override_value(v) -> str:
    return "null" if v is None else str(v)


def make_optimizer(groups: list[dict], weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all weights) where torch has it for the weights' device.

    The default for-loop AdamW makes a full-size temporary per op; fused, the update of
    lt_prefix's 1.8M-weight label map (MiniLM) is 1.1 ms of a 100 ms step, and the step runs
    1.06x the for-loop optimizer's (`ltune bench`, BENCHMARKS.md).
    Sharded (DTensor) or mixed-device weights keep the default implementation.
    """
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    fused = (len(devices) == 1 and devices <= {"cpu", "cuda"} and not any(hasattr(p, "to_local") for p in params)
             and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params))
    return torch.optim.AdamW(groups, weight_decay=weight_decay, **({"fused": True} if fused else {}))


def _train(cfg, run_dir: Path, t_start: float, backbone, console, resuming: bool, stop: _StopFlag) -> Path:
    from ltune_cli import checkpoint, distributed, loggers, memory
    from ltune_cli.selection import Selection

    d = distributed.state()
    s = build(cfg, backbone=backbone)
    method, tc, hw = s.method, cfg.train, cfg.hardware
    ckpt = checkpoint.load_latest(run_dir) if resuming else None
    if ckpt is not None:  # N processes' checkpoint on this many: keep its micro-batches per step
        hw.grad_accum = distributed.resume_grad_accum(ckpt.get("micro_batches", hw.grad_accum * d.world),
                                                      d.world, hw.grad_accum)
    lr = tc.lr if tc.lr is not None else method.default_lr()
    params = method.trainable_parameters()
    opt = make_optimizer(method.param_groups(lr), tc.weight_decay)
    sched = make_scheduler(opt, tc)
    # fp16 (5 exponent bits) underflows small gradients and overflows large ones: scale the loss,
    # and skip a step whose gradients overflowed (the scale is then lowered). bf16/fp32: a no-op.
    scaler = torch.amp.GradScaler(s.device.type, enabled=hw.dtype == "fp16")
    # The global batch: every rank draws the same one and runs its own micro-batches of it.
    order = BatchOrder(s.train_enc.lengths, hw.batch_size * hw.grad_accum * d.world, cfg.seed,
                       tc.group_by_length)
    pairs_gen = torch.Generator().manual_seed(cfg.seed)
    metrics_path = run_dir / "metrics.jsonl"
    # Loss accumulated since the last "train" record, so records are the same after a resume.
    window = {"loss": 0.0, "n": 0, "skipped": 0}
    step = 0
    # train.keep_best / train.early_stop_patience: the best evaluation so far (selection.py).
    sel = Selection(cfg.dataset.primary_metric, tc.keep_best, tc.early_stop_patience)
    stopped_at = None
    # Wall and training seconds of the earlier sittings of a resumed run, up to the checkpoint it
    # resumes from: results.json and the records' time_s count the whole run, not its last sitting.
    before = {"wall": 0.0, "train": 0.0}
    # Each sitting's machine, steps and wall seconds (results.json "sittings"): the earlier ones
    # from the checkpoint, this one from its first step.
    sittings, here = [], runfolder.machine(s.device)

    def elapsed() -> dict:
        now = time.time()
        return {"wall": before["wall"] + now - t_start, "train": before["train"] + now - t_train}

    def all_sittings() -> list[dict]:
        return sittings + [{"machine": here, "steps": [first_step, step], "wall_s": time.time() - t_start}]

    def snapshot() -> dict:
        return {"step": step, "trainable": method.trainable_state(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "order": order.state_dict(),
                "pairs_gen": pairs_gen.get_state(), "rng": checkpoint.rng_state(), "window": dict(window),
                "scaler": scaler.state_dict(), "selection": sel.state_dict(), "elapsed": elapsed(),
                "sittings": all_sittings(),
                "metrics_bytes": metrics_path.stat().st_size, "micro_batches": hw.grad_accum * d.world}

    if ckpt is not None:
        method.load_trainable_state({k: v.to(s.device) for k, v in ckpt["trainable"].items()})
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        order.load_state_dict(ckpt["order"])
        pairs_gen.set_state(ckpt["pairs_gen"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        checkpoint.set_rng_state(ckpt["rng"])
        window, step = ckpt["window"], ckpt["step"]
        before.update(ckpt.get("elapsed") or {})  # checkpoints before this key: the last sitting only
        # checkpoints from before "sittings": their steps' machine was not recorded
        sittings = ckpt.get("sittings") or [{"machine": None, "steps": [0, step], "wall_s": before["wall"]}]
        sel.load_state_dict(ckpt.get("selection"))
        if sel.exhausted() and step < tc.max_steps:  # interrupted at the very evaluation that stopped it
            stopped_at = step
        if d.is_main:
            with open(metrics_path, "r+b") as f:  # drop records written after that checkpoint
                f.truncate(ckpt["metrics_bytes"])
        log.info("resuming %s from step %d", run_dir, step)
    elif resuming:
        if d.is_main:
            metrics_path.write_text("")
        if not os.environ.get(distributed.LAUNCHED_ENV):  # workers `ltune train` started: a fresh run
            log.info("no checkpoint in %s: starting it from step 0", run_dir)
    distributed.broadcast_params(params)
    history = [r for r in runfolder.read_jsonl(metrics_path) if r["kind"] == "eval"] if d.is_main else []
    log.info("run folder %s: %s on %s/%s, %d trainable parameters", run_dir, cfg.method.name,
             cfg.model.name, cfg.dataset.name, method.num_trainable())
    mem_estimate = memory.estimate(s, cfg, d.world)
    log.info(memory.describe(mem_estimate))
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    if d.enabled:
        log.info("%s over %d processes (%s): global batch %d = %d per micro-batch x %d micro-batches", d.strategy,
                 d.world, d.backend, hw.batch_size * hw.grad_accum * d.world, hw.batch_size, hw.grad_accum * d.world)

    method.train()
    t_train, window_t = time.time(), time.time()
    first_step = step
    preds = last_eval = None
    stop.in_loop, stop.step = True, step
    # metrics.jsonl, the logger= backend and the console (loggers.py): one call per record
    with loggers.RunLog(cfg, run_dir, start_step=step, main=d.is_main, console=console) as runlog:
        while step < tc.max_steps and stopped_at is None:
            idx = next(order)
            step += 1
            stop.step = step
            loss_val = _step(s, method, idx, pairs_gen, hw, scaler)
            if not math.isfinite(loss_val):
                opt.zero_grad(set_to_none=True)
                last = checkpoint.list_checkpoints(run_dir)
                kept = f"the last good checkpoint ({last[-1].name}) is kept" if last else "no checkpoint yet"
                window["skipped"] += 1
                if tc.on_nonfinite == "stop" or window["skipped"] > 10:
                    raise LtuneError(f"training loss became {loss_val} at step {step}; {kept}. Lower train.lr "
                                     f"(now {lr}), {_DTYPE_HINT.get(hw.dtype, '')}or train.on_nonfinite=skip.")
                log.warning("step %d: loss %s, batch skipped (train.on_nonfinite=skip)", step, loss_val)
            else:
                scaler.unscale_(opt)  # the true gradients, for clipping (fp16 only; else a no-op)
                if tc.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
                scaler.step(opt)  # fp16: skipped when a gradient overflowed
                scaler.update()
                opt.zero_grad(set_to_none=True)
                window["loss"] += loss_val
                window["n"] += 1
            sched.step()
            if step % tc.log_every == 0 or step == tc.max_steps:
                dt = time.time() - window_t
                n = window["n"]
                # A window whose every batch was skipped (on_nonfinite=skip) has no loss: null, not 0.0.
                rec = {"kind": "train", "step": step, "train_loss": window["loss"] / n if n else None,
                       "lr": sched.get_last_lr()[0], "examples_per_s": n * len(idx) / max(dt, 1e-9),
                       "time_s": elapsed()["train"]}
                runlog.record(rec)
                window.update(loss=0.0, n=0)
                window_t = time.time()
            if step % tc.eval_every == 0 or step == tc.max_steps:
                limit = tc.curve_eval_limit if step < tc.max_steps else None
                m, preds = evaluate(s, on_batch=runlog.report.eval_progress(), limit=limit,
                                    also_first=tc.curve_eval_limit if limit is None else None)
                rec = {"kind": "eval", "step": step, **m, "time_s": elapsed()["train"]}
                if limit is not None and limit < len(s.eval_enc):
                    rec["eval_examples"] = limit
                runlog.record(rec)
                history.append(rec)
                last_eval = rec
                if "eval_examples" not in rec:  # a curve's subset is no ground to choose weights on
                    sel.update(rec, method, preds)
                if sel.exhausted() and step < tc.max_steps:
                    stopped_at = step
                window_t = time.time()  # evaluation time is not training throughput
            runlog.advance(step)
            stopping = stop.requested
            if d.enabled and distributed.any_true(bool(stopping)):  # all ranks stop at the same step
                stopping = stopping or "SIGTERM"
            if stopping and (step >= tc.max_steps or stopped_at is not None):
                # the last step and its evaluation are done: stopping would throw that evaluation
                # away for a resume to redo; what is left (writing the results) takes a moment
                log.info("%s after the run's last step: it completes (only its results are left to write)",
                         stopping)
                stopping = None
            if stopping or (tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.max_steps):
                if d.is_main:
                    checkpoint.save(run_dir, snapshot(), tc.keep_checkpoints)
                distributed.barrier()
            if stopping:
                stop.hand_over(stopping)  # SIGUSR2 under submitit: it requeues the job, which resumes here
                raise RunInterrupted(f"{stopping} at step {step}: checkpoint saved; continue with "
                                     f"`{runfolder.resume_command(run_dir)}`")
            if stopped_at is not None:
                log.info("early stop at step %d: %s has not improved for %d evaluations (best %.4f at step %d)",
                         step, sel.metric, sel.patience, sel.best[sel.metric], sel.best["step"])
                break
    train_time = elapsed()["train"]
    if preds is None:  # resumed exactly at the end: score the final weights once more
        m, preds = evaluate(s)
        last_eval = {"kind": "eval", "step": step, **m}
    if sel.keep_best and sel.weights is not None:  # the best evaluation's weights are the run's
        method.load_trainable_state({k: v.to(s.device) for k, v in sel.weights.items()})
        preds = sel.preds

    if d.is_main:
        runfolder.save_trainable(method, run_dir)
        runfolder.write_json(run_dir / "predictions.json",
                             {"gold": s.eval_enc.labels, "pred": preds, "label_texts": s.data.label_texts})
        results = runfolder.result_record(cfg, s, status="completed", history=history, steps=step,
                                          wall=elapsed()["wall"], train_time=train_time,
                                          saved=sel.best if sel.keep_best else None)
        results.update(sel.summary(last_eval, stopped_at))
        results["distributed"] = {"strategy": d.strategy, "world_size": d.world, "backend": d.backend,
                                  "global_batch": hw.batch_size * hw.grad_accum * d.world}
        results["memory"] = {**mem_estimate, **memory.peak(s.device)}
        results["sittings"] = all_sittings()
        runfolder.write_json(run_dir / "results.json", results)
        import shutil

        shutil.rmtree(run_dir / checkpoint.CKPT_DIR, ignore_errors=True)  # the run is complete
    distributed.barrier()  # every rank returns once the folder is complete
    return run_dir


# What a non-finite loss message suggests per hardware.dtype: fp16's range (max 65504) is the usual
# cause in fp16; bf16 keeps fp32's range in the same memory, so a model that only fits in half
# precision should move to bf16, not fp32.
_DTYPE_HINT = {"fp16": "use hardware.dtype=bf16 (fp32's range in half the memory; GPUs since Ampere), "}


def _step(s: Setup, method, idx, pairs_gen, hw, scaler=None) -> float:
    """Forward + backward of one global batch; returns its loss (summed over processes).

    The batch is cut into grad_accum x processes micro-batches; this process runs its own
    ones (all of them with one process). With more than one micro-batch, each draws its
    random numbers (wrong labels, dropout) from a generator of its own, seeded from
    `pairs_gen`, so a step computes the same whichever process runs which micro-batch.
    """
    from ltune_cli import distributed

    d = distributed.state()
    micros = distributed.micro_batches(idx, hw.grad_accum, d.world)
    seeds = ([int(torch.randint(0, 2**62, (1,), generator=pairs_gen)) for _ in micros]
             if len(micros) > 1 else None)
    loss_val = 0.0
    try:
        for j in distributed.my_micro_batches(d, hw.grad_accum):
            micro = micros[j]
            if len(micro) == 0:  # a short last batch of an epoch left this micro-batch empty
                if d.strategy != "fsdp":
                    continue
                micro = idx[:1]  # FSDP: every rank joins every sharded forward/backward; weight 0 below
            batch = collate(s.train_enc, micro, s.backbone.pad_id, s.backbone.padding_side, s.device)
            with _micro_rng(seeds[j] if seeds else None, s.device) as gen:
                with s.autocast():
                    loss = method.training_loss(batch, gen or pairs_gen) * (len(micros[j]) / len(idx))
                with s.matmuls():
                    (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_val += loss.item()
    except torch.OutOfMemoryError:
        B, A = hw.batch_size, hw.grad_accum
        raise LtuneError(f"out of memory at hardware.batch_size={B} (grad_accum={A}); keep the effective batch "
                         f"with hardware.batch_size={max(1, B // 2)} hardware.grad_accum={A * 2}, or use "
                         f"hardware.dtype=bf16.") from None
    distributed.all_reduce_grads(method.trainable_parameters())
    return distributed.all_reduce_sum(loss_val)


@contextlib.contextmanager
def _micro_rng(seed: int | None, device: torch.device):
    """A micro-batch's own random numbers: a pair generator and the global (dropout) RNG,
    both from `seed`; the global RNG is restored afterwards. None: the run's streams as they are."""
    if seed is None:
        yield None
        return
    cuda = device.type == "cuda"
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


class _StopFlag:
    requested: str | None = None  # a signal asked the loop to checkpoint and stop after this step
    hard: str | None = None  # a signal stopped the run at once (KeyboardInterrupt raised)
    in_loop: bool = False  # False while loading: nothing to checkpoint yet, so a signal stops at once
    step: int = 0
    previous: dict = {}

    def hand_over(self, name: str) -> None:
        """After the checkpoint: give SIGUSR2 to the handler that was there before the run (submitit's,
        which resubmits the job and exits; the requeued job resumes from the checkpoint)."""
        import signal

        sig = getattr(signal, name, None)
        h = self.previous.get(sig)
        if name == "SIGUSR2" and callable(h):
            for s, old in self.previous.items():
                if old is not None:
                    signal.signal(s, old)
            self.previous = {}
            h(sig, None)


@contextlib.contextmanager
def _stop_signals():
    """SIGINT/SIGTERM/SIGHUP/SIGUSR2 (Ctrl-C, a scheduler, a closed terminal, SLURM's pre-emption
    warning) during the training loop set a flag: the loop finishes its step, checkpoints and exits
    cleanly (SIGUSR2 then hands over to submitit's requeue). Before the loop (loading) or on a second
    signal they raise KeyboardInterrupt at once, which train() turns into the same resume hint
    (nothing new is saved then)."""
    import signal
    import threading

    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    first = {"t": 0.0}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if flag.requested and flag.hard is None:
            # One within a second of the first is the same request delivered twice (torchrun
            # forwards the terminal's SIGINT to workers that got it too); later: stop now.
            if time.time() - first["t"] <= 1.0:
                return
        elif flag.in_loop and flag.hard is None:
            flag.requested = name
            first["t"] = time.time()
            return
        flag.hard = name
        raise KeyboardInterrupt(name)

    old = {sig: signal.signal(sig, handler) for sig in runfolder.stop_signals()}
    flag.previous = dict(old)
    try:
        yield flag
    finally:
        for sig, h in old.items():
            if h is not None:
                signal.signal(sig, h)
