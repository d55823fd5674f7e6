"""Self-describing run folders: the contract between `train`, `eval`, `compare` and plots.

Layout of `outputs/<run>/` (schema `ltune.results/1`)::

    config.yaml            the resolved config (what `ltune eval` rebuilds the method from)
    metrics.jsonl          one JSON object per line, in step order:
                             {"kind": "train", "step", "train_loss", "lr", "examples_per_s", "time_s"}
                             (train_loss null when train.on_nonfinite=skip skipped every batch since the last)
                             {"kind": "eval",  "step", "val_loss", "accuracy", "mcc", "macro_f1",
                              ["pair_accuracy"], "time_s"}
    results.json           fixed schema, see `RESULT_KEYS`; "final" scores the saved weights (the last
                           evaluation's, or the best one's with train.keep_best), "last" the last
                           evaluation; a completed run adds "saved_weights" {which, step, metric,
                           value} and "early_stopping" {patience, stopped_early, stopped_at_step,
                           best_step} (selection.py), and "sittings": [{machine (`machine()`; null:
                           not recorded, a checkpoint from before this key), steps [from, to],
                           wall_s}], one per sitting of a resumed run
    predictions.json       {"gold": [int], "pred": [int], "label_texts": [str]} of the final eval
    trainable.safetensors  the trainable weights only (the frozen base is never saved)
    error.txt              present when the run failed (results.json then has status "failed")
    metrics.csv | tensorboard/ | mlflow/ + logger.json | wandb/ + logger.json
                           the logger= backend's copy of metrics.jsonl (loggers.py)

The lifecycle of a run folder lives here too: choosing and creating it, checking that a
resumed run has the same config, writing config.yaml / results.json / error.txt, and the
trainable weights' file. The training loop (engine.py) only calls into it.

Every JSON file is strict JSON: a NaN or infinite number is written as null (`dumps`).

This module imports no torch at import time (only inside the functions that save/load
weights or report versions): `compare` and the reports use it alone.
"""

from __future__ import annotations

import contextlib
import json
import math
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


def atomic_write(path: str | Path, write) -> None:
    """Call write(f) on a temporary file in the same folder, then rename: a reader never sees half
    a file, and large contents (checkpoints) stream to disk instead of being built in memory.

    The file gets the permissions a plain open() would (0666 less the umask), not mkstemp's
    0600, so colleagues on a shared filesystem can read results and reports.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it, then put it back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


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


# The signals on which a run checkpoints and stops (engine._stop_signals) and which `study run`
# passes on to its runs (study._Stop): Ctrl-C, a scheduler's SIGTERM, a closed terminal, and
# SIGUSR2, SLURM's warning before a pre-emption or the time limit (submitit asks for it).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR2")


def stop_signals() -> list:
    """STOP_SIGNALS as signal numbers, those this platform has."""
    import signal

    return [getattr(signal, n) for n in STOP_SIGNALS if hasattr(signal, n)]


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def read_results(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "results.json"
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise LtuneError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0]}); re-run that run, "
                         f"or remove the folder.") from None
    if not isinstance(res, dict):
        raise LtuneError(f"{path} is damaged (a JSON {type(res).__name__}, not an object); re-run that run, "
                         f"or remove the folder.")
    return res


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


def resume_command(run_dir: str | Path) -> str:
    """The command that continues `run_dir`, quoted so it can be pasted into a shell."""
    import shlex

    return f"ltune train --resume {shlex.quote(str(run_dir))}"


def prepare_run_dir(cfg, *, lock: bool = True) -> tuple[Path, bool]:
    """A new run folder, or (cfg.resume) the existing one in out_dir; returns (folder, resuming).

    The folder comes back resolved (absolute, symlinks followed) and, with `lock`, held by
    this process until `release(folder)` (see `RunLock`). A new folder's resolved path is
    stored as config.yaml's out_dir, so the default out_dir (null) resumes like any other.
    """
    if cfg.resume:
        return _open_for_resume(cfg, lock), True
    held = None
    if lock and cfg.out_dir and (Path(cfg.out_dir).expanduser() / RunLock.NAME).exists():
        held = Path(cfg.out_dir).expanduser().resolve()  # a run may be writing there: name its holder
        acquire(held)
    try:
        d = make_run_dir(cfg)
    except BaseException:
        if held:
            release(held)
        raise
    if lock:
        acquire(d)
    try:
        _refuse_to_overwrite(d, f"out_dir={cfg.out_dir}" if cfg.out_dir else str(d))  # again, under the lock
        _set_out_dir(cfg, d)
        atomic_write_text(d / "config.yaml", config_yaml(cfg))
        atomic_write_text(d / "metrics.jsonl", "")
    except BaseException:
        release(d)
        raise
    return d, False


def _open_for_resume(cfg, lock: bool) -> Path:
    if not cfg.out_dir:
        raise LtuneError("resume=true needs out_dir=<run folder> (or use `ltune train --resume <run folder>`).")
    given = Path(cfg.out_dir).expanduser()
    if not given.exists():
        raise LtuneError(f"cannot resume out_dir={cfg.out_dir}: no such folder. Check the path (the run folder "
                         f"that `ltune train` printed), or drop resume=true to start a new run.")
    if not (given / "config.yaml").is_file():
        raise LtuneError(f"cannot resume out_dir={cfg.out_dir}: not an ltune run folder (no config.yaml). "
                         f"Check the path, or drop resume=true to start a new run in an empty folder.")
    d = given.resolve()
    if lock:
        acquire(d)
    try:
        check_same_config(cfg, d)
        if (d / "results.json").is_file():
            if read_results(d).get("status") == "completed":
                raise LtuneError(f"{d} already holds a completed run; nothing to resume.")
            (d / "results.json").unlink()  # a failed run: continue from its last checkpoint
            (d / "error.txt").unlink(missing_ok=True)
        remove_stale_temporaries(d)
        _set_out_dir(cfg, d)
    except BaseException:
        release(d)
        raise
    return d


def _set_out_dir(cfg, d: Path) -> None:
    from omegaconf import DictConfig, read_write

    if isinstance(cfg, DictConfig):
        with read_write(cfg):
            cfg.out_dir = str(d)
    else:
        cfg.out_dir = str(d)


def remove_stale_temporaries(d: Path) -> None:
    """Half-written `.<name>.<random>.tmp` files a kill left behind (atomic_write_bytes'), in the
    run folder and its checkpoints/: never read, only taking space. Call with the folder's lock."""
    for folder in (d, d / "checkpoints"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                if p.is_file():
                    p.unlink(missing_ok=True)


def check_same_config(cfg, d: Path) -> None:
    """A resumed run must have the config it was started with, except where it lives (out_dir:
    any path to the same folder) and how its processes are laid out."""
    from omegaconf import OmegaConf

    from ltune_cli.config import load_stored
    from ltune_cli.distributed import LAYOUT_KEYS

    stored = _flatten(OmegaConf.to_container(load_stored(d / "config.yaml"), resolve=True))  # + keys added since
    now = _flatten(OmegaConf.to_container(cfg, resolve=True))
    ignored = {"resume", "out_dir", *LAYOUT_KEYS}  # layout: N -> M processes
    diffs = sorted(k for k in now.keys() | stored.keys() if k not in ignored and now.get(k) != stored.get(k))
    if diffs:
        raise LtuneError(f"cannot resume {d}: its config.yaml differs at {', '.join(diffs[:5])}; resume with "
                         f"`{resume_command(d)}` (uses the stored config) or pick a new out_dir.")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Entries a folder may hold and still take a new run: Hydra's job files in a sweep job's folder,
# a lock file, and the start of a run that never reached a checkpoint (nothing to lose).
_REUSABLE = {".hydra", ".ltune.lock", "config.yaml", "metrics.jsonl",
             "metrics.csv", "logger.json", "tensorboard", "mlflow", "wandb"}  # loggers.py's files


def _refuse_to_overwrite(d: Path, what: str) -> None:
    """An existing folder takes a new run only when it is empty (or holds only `_REUSABLE`)."""
    if not d.is_dir():
        return
    if (d / "results.json").exists() or (d / "checkpoints").is_dir():
        raise LtuneError(f"{what} already holds a run; choose another out_dir, remove that folder, "
                         f"or continue it with `{resume_command(d)}`.")
    foreign = sorted(p.name for p in d.iterdir() if p.name not in _REUSABLE and p.suffix != ".log")
    if foreign:
        kind = ("a sweep folder" if {"manifest.json", ".ltune", "multirun.yaml"} & set(foreign)
                else "not an ltune run folder")
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise LtuneError(f"{what} exists and is {kind} (it holds {shown}); ltune writes a run only into a new or "
                         f"empty folder: choose another out_dir.")


def make_run_dir(cfg) -> Path:
    """Create the run folder (out_dir, or a new one under LTUNE_OUTPUTS / outputs/); returns it resolved."""
    from ltune_cli.paths import outputs_dir

    if cfg.out_dir:
        d = Path(cfg.out_dir).expanduser()
        what = f"out_dir={cfg.out_dir}"
        if d.exists() and not d.is_dir():
            raise LtuneError(f"{what} is a file, not a folder; choose another out_dir.")
        _refuse_to_overwrite(d, what)
    else:
        root = outputs_dir()
        what = (f"LTUNE_OUTPUTS={os.environ['LTUNE_OUTPUTS']}" if os.environ.get("LTUNE_OUTPUTS")
                else f"the outputs folder {root.absolute()}")
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        d = root / f"{stamp}_{run_name(cfg)}"
        k = 1
        while d.exists():
            d = root / f"{stamp}_{run_name(cfg)}_{k}"
            k += 1
    make_dir(d, what, "set out_dir=<a writable folder>" if cfg.out_dir else
             "set LTUNE_OUTPUTS=<a writable folder> or out_dir=<a writable folder>")
    return d.resolve()


def make_dir(d: Path, what: str, fix: str) -> Path:
    """mkdir -p that fails with a one-line LtuneError naming `what` and `fix` (not an OSError)."""
    try:
        Path(d).mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=d, prefix=".ltune-write-test.", delete=True)
        probe.close()
    except OSError as e:
        raise LtuneError(f"cannot write to {what} ({os_reason(e)}); {fix}.") from None
    return Path(d)


def os_reason(e: OSError) -> str:
    """'Permission denied: /x/y' from an OSError (its message without the errno)."""
    reason = e.strerror or type(e).__name__
    return f"{reason}: {e.filename}" if e.filename else reason


class RunLock:
    """One writer per run folder: an exclusive `flock` on `<run>/.ltune.lock`.

    The kernel drops the lock when the process ends, however it ends (SIGKILL, a crash), so a
    stale lock never blocks a resume. The file names its holder (pid, host, start time) for
    the error the next process gets, and is removed on release (a process that locked a file
    just removed or replaced checks the inode and tries again, so two never both hold it).
    """

    NAME = ".ltune.lock"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl
        import socket

        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise LtuneError(f"cannot write to run folder {self.path.parent} ({os_reason(e)}); choose a "
                                 f"writable out_dir.") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise LtuneError(f"{self.path.parent} is being written by another ltune run ({holder}); wait for "
                                 f"it to finish or stop it (Ctrl-C checkpoints it), then "
                                 f"`{resume_command(self.path.parent)}`, or choose another out_dir.") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file between our open and flock: take the new one
        else:
            raise LtuneError(f"could not lock {self.path}: it keeps being replaced; is another process "
                             f"writing {self.path.parent}?")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      .encode(), 0)
        self.fd = fd

    def held_by(self) -> str | None:
        """Who holds the lock now ("pid ... on host, since ..."), or None when no process does. Only
        looks: the lock file is neither created nor removed, and no lock is kept."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None  # no lock file: nobody has locked this folder (or it was released)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


_LOCKS: dict[Path, RunLock] = {}


def acquire(run_dir: Path) -> None:
    """Take the run folder's lock for this process (a no-op when it already holds it)."""
    run_dir = Path(run_dir)
    if run_dir in _LOCKS:
        return
    lock = RunLock(run_dir)
    lock.acquire()
    _LOCKS[run_dir] = lock


def release(run_dir: Path) -> None:
    lock = _LOCKS.pop(Path(run_dir), None)
    if lock is not None:
        lock.release()


def save_trainable(method, run_dir: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().float().cpu().contiguous() for k, v in method.trainable_state().items()}
    atomic_write_bytes(run_dir / "trainable.safetensors", save(state, metadata={"format": "pt"}))


def read_trainable(run_dir: Path, name: str = "trainable.safetensors") -> dict:
    """The trainable weights stored in `run_dir` (CPU tensors); a missing or damaged file is a user error."""
    from safetensors.torch import load_file

    path = Path(run_dir) / name
    if not path.is_file():
        raise LtuneError(f"{path} is missing: the run did not finish; re-run it (or resume it).")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError: a truncated or overwritten file
        raise LtuneError(f"{path} is damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         f"re-run the training to write it again.") from None
    return state


def load_trainable(method, run_dir: Path, name: str = "trainable.safetensors") -> None:
    path = Path(run_dir) / name
    state = read_trainable(run_dir, name)
    try:
        method.load_trainable_state({k: v.to(method.backbone.device) for k, v in state.items()})
    except (ValueError, RuntimeError) as e:  # other names, or other shapes (another model.path)
        raise LtuneError(f"{path} does not fit the run's method/model (was model.path or method changed?): "
                         f"{str(e).splitlines()[0]}") from None


def result_record(cfg, s, *, status: str, history: list[dict], steps: int, wall: float,
                  train_time: float, error: str | None = None, saved: dict | None = None) -> dict:
    """results.json. "final": the scores of the saved weights: the last evaluation's, or with
    train.keep_best the best one's (`saved`); "last": the last evaluation's."""
    primary = cfg.dataset.primary_metric
    evals = [h for h in history if h.get("kind", "eval") == "eval"]
    keep = ("step", "accuracy", "mcc", "macro_f1", "val_loss", "pair_accuracy")
    last = {k: evals[-1][k] for k in keep if k in evals[-1]} if evals else None
    final = {k: saved[k] for k in keep if k in saved} if saved else last
    best = None
    if evals:
        b = max(evals, key=lambda h: h[primary])
        best = {k: b[k] for k in keep if k in b}
    total = sum(p.numel() for p in s.backbone.parameters()) + s.method.num_trainable() if s else None
    half = None  # how a CPU computed half-precision products (backbone.HalfMatmulsInFp32)
    if s and s.device.type == "cpu" and cfg.hardware.dtype in ("bf16", "fp16"):
        half = "fp32 copies, rounded once" if s.matmuls is not contextlib.nullcontext else "native"
    return {
        "schema": SCHEMA, "status": status, "error": error,
        "ltune_version": _version(), "versions": {**versions(), "cpu_half_products": half}, "git": git_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": {"name": run_name(cfg), "method": cfg.method.name,
                "variant": cfg.method.variant if cfg.method.name == "lt_prefix" else None,
                "model": cfg.model.name, "model_path": cfg.model.path,
                "family": s.backbone.geo.family if s else None, "dataset": cfg.dataset.name, "seed": cfg.seed},
        "seed": cfg.seed,
        "trainable_params": s.method.num_trainable() if s else None, "total_params": total,
        "steps": steps, "train_examples": len(s.train_enc) if s and s.train_enc else None,
        "eval_examples": len(s.eval_enc) if s else None,
        "primary_metric": primary, "final": final, "last": last, "best": best,
        "wall_time_s": wall, "train_time_s": train_time,
    }


def record_failure(run_dir: Path, cfg, e: BaseException, t_start: float) -> None:
    """error.txt (message + traceback) and, unless there is one, a results.json with status "failed".

    Best effort: on a full disk these writes may fail too, and must not hide the error itself.
    """
    import logging
    import traceback

    msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
    if isinstance(e, KeyboardInterrupt):
        msg = "interrupted (KeyboardInterrupt)"
    try:
        (run_dir / "error.txt").write_text(msg + "\n\n" + "".join(traceback.format_exception(e)))
        if not (run_dir / "results.json").exists():
            write_json(run_dir / "results.json", result_record(  # no setup: the size fields are null
                cfg, None, status="failed", history=[], steps=None, wall=time.time() - t_start,
                train_time=None, error=msg))
    except OSError as err:
        logging.getLogger("ltune").warning("could not record the failure in %s (%s)", run_dir, os_reason(err))


def os_error_for_user(e: BaseException, run_dir: Path) -> LtuneError | None:
    """A run's OSError that the user can fix (full disk, no permission, read-only filesystem)
    as a one-line LtuneError naming the file and the fix; None for anything else."""
    import errno

    if not isinstance(e, OSError) or e.errno is None:
        return None
    from ltune_cli import checkpoint

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        last = checkpoint.list_checkpoints(run_dir)
        kept = f"its last checkpoint ({last[-1].name}) is kept" if last else "it has no checkpoint yet"
        return LtuneError(f"disk full ({os_reason(e)}); the run is marked failed and {kept}. Free space, then "
                          f"`{resume_command(run_dir)}`.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LtuneError(f"{os_reason(e)}; fix that path's permissions (or choose another out_dir), then "
                          f"`{resume_command(run_dir)}`.")
    return None


def config_yaml(cfg) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def _version() -> str:
    from ltune_cli import __version__

    return __version__


def machine(device=None) -> dict:
    """What a sitting of a run ran on: results.json "sittings" (its wall time means nothing
    without it; a study's runs may span machines). cpu: the model name Linux reports (else
    platform.processor()); accelerator: the CUDA device's name when the run used one."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    accel = None
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        accel = torch.cuda.get_device_name(device)
    return {"host": platform.node(), "cpu": cpu, "logical_cpus": os.cpu_count(), "accelerator": accel}


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
