"""Checkpoints: everything needed to continue a run bit for bit.

A checkpoint holds the trainable weights, optimizer and scheduler state, the step, the
data-order position, the pair sampler's generator and every RNG state (python, numpy,
torch, CUDA), plus how many bytes of metrics.jsonl belonged to the run at that step (a
resumed run cuts the file back there, so no record is duplicated). Files are written
atomically (temporary file + rename): a kill mid-write leaves the previous checkpoint
as the newest complete one, never a corrupt file that resume would trust.
"""

from __future__ import annotations

import errno
import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from ltune_cli import runfolder
from ltune_cli.errors import LtuneError

log = logging.getLogger("ltune")
CKPT_DIR = "checkpoints"
PATTERN = re.compile(r"step-(\d+)\.pt$")


def rng_state() -> dict:
    """Python, numpy, torch and this process's own CUDA generator (not every visible GPU's:
    a run may resume with fewer GPUs than it was saved with)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_device"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if not torch.cuda.is_available():
        return
    mine = state.get("cuda_device")
    if mine is None and state.get("cuda"):  # older checkpoints: one state per GPU visible at save time
        i = torch.cuda.current_device()
        mine = state["cuda"][i] if i < len(state["cuda"]) else None
    if mine is not None:
        torch.cuda.set_rng_state(mine, torch.cuda.current_device())


def save(run_dir: Path, payload: dict, keep: int) -> Path:
    """Write checkpoints/step-<N>.pt atomically, then drop all but the newest `keep`.

    torch.save streams into a temporary file in the same folder, renamed when complete: no
    in-memory copy of a multi-GB state; a kill mid-write leaves the previous checkpoint."""
    d = Path(run_dir) / CKPT_DIR
    d.mkdir(exist_ok=True)
    path = d / f"step-{payload['step']:08d}.pt"
    try:
        runfolder.atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise LtuneError(f"disk full while writing checkpoint {path}; the previous checkpoint is intact. "
                             f"Free space (or lower train.keep_checkpoints) and resume with "
                             f"`ltune train --resume {run_dir}`.") from None
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest(run_dir: Path) -> dict | None:
    """The newest checkpoint that loads; a damaged one is skipped with a warning."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            # mmap: tensors are read from the file as they are used, not copied into RAM on every rank
            return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the previous one
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, type(e).__name__)
    return None
