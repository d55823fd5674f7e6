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
import io
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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, payload: dict, keep: int) -> Path:
    """Write checkpoints/step-<N>.pt atomically, then drop all but the newest `keep`."""
    d = Path(run_dir) / CKPT_DIR
    d.mkdir(exist_ok=True)
    path = d / f"step-{payload['step']:08d}.pt"
    buf = io.BytesIO()
    torch.save(payload, buf)
    try:
        runfolder.atomic_write_bytes(path, buf.getvalue())
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
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the previous one
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, type(e).__name__)
    return None
