"""Where a run's records go: metrics.jsonl, the `logger=` backend and the console.

The engine hands every train/eval record to one `RunLog.record` call. It appends the record to
metrics.jsonl (the run folder's contract, runfolder.py), gives it to the backend chosen by
`logger=` (conf/logger/*.yaml), and reports it on the console:

- csv (default): metrics.csv beside metrics.jsonl (one row per record, the columns of both kinds).
- tensorboard: `torch.utils.tensorboard.SummaryWriter` event files in <run>/tensorboard.
- mlflow: `MlflowClient` on a sqlite store in <run>/mlflow (or `logger.tracking_uri`).
- wandb: `wandb.init(mode="offline")` files in <run>/wandb (`logger.mode=online` logs live).

Scalars are named `<kind>/<key>` (train/train_loss, eval/accuracy, ...) at the record's step.

Resume: metrics.jsonl is cut back to the checkpoint first (engine.py), and every backend then
holds each step once. metrics.csv is rewritten from metrics.jsonl; tensorboard drops the events
written after the checkpoint (SummaryWriter's purge_step); mlflow and wandb continue the same run
(its id is in <run>/logger.json) and skip the steps they already hold: resume recomputes the same
losses and scores (bit for bit on CPU), while those steps' timings stay the first attempt's.

Console: in a terminal, a rich bar (step, last logged loss, ex/s, ETA), a bar per evaluation and
a line with each evaluation's scores; elsewhere (SLURM logs, nohup, pipes) a plain line per train
record (every train.log_every steps) and per evaluation: step, loss or scores, ex/s, ETA.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import sys
import time
from pathlib import Path

from ltune_cli import runfolder
from ltune_cli.errors import LtuneError

STATE_FILE = "logger.json"  # mlflow / wandb: which backend run this folder logs to, and its last step
#: logger= name -> (module it needs, pyproject extra)
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
NOT_SCALARS = ("kind", "step")


def require(name: str) -> None:
    """A one-line error (exit 2) when `logger=<name>` lacks its package."""
    import importlib.util

    if name in EXTRAS:
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise LtuneError(f"logger={name} needs the {module} package: pip install -e '.[{extra}]' "
                             f"(or use logger=csv).")


def scalars(rec: dict) -> dict[str, float]:
    """A record's numbers as `<kind>/<key>` (a null train_loss, a window of skipped batches, is left out)."""
    return {f"{rec['kind']}/{k}": float(v) for k, v in rec.items()
            if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# --------------------------------------------------------------------------- backends
class CsvLogger:
    """metrics.csv: the records of metrics.jsonl as rows; rewritten when a record brings a new column."""

    def __init__(self, run_dir: Path, history: list[dict]):
        self.path = run_dir / "metrics.csv"
        self.rows = list(history)
        self.columns: list[str] = []
        self._rewrite()

    def _widen(self, rec: dict) -> bool:
        new = [k for k in rec if k not in self.columns]
        self.columns += new
        return bool(new)

    def _rewrite(self) -> None:
        for r in self.rows:
            self._widen(r)
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        runfolder.atomic_write_bytes(self.path, buf.getvalue().encode())

    def log(self, rec: dict) -> None:
        self.rows.append(rec)
        if self._widen(rec):  # a new column (the first eval record): rewrite with the wider header
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.columns, lineterminator="\n").writerow(rec)

    def close(self, status: str) -> None:
        pass


class TensorBoardLogger:
    def __init__(self, run_dir: Path, cfg, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard discards this folder's events from that step on (those written
        # after the checkpoint, before the interruption), so a resumed run shows each step once.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if not start_step:
            self.writer.add_text("config", "```\n" + runfolder.config_yaml(cfg) + "\n```", 0)

    def log(self, rec: dict) -> None:
        for tag, v in scalars(rec).items():
            self.writer.add_scalar(tag, v, rec["step"])
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class _Resumable:
    """mlflow / wandb: one backend run per run folder; its id and the last record logged in logger.json."""

    name = ""
    ORDER = {"train": 0, "eval": 1}  # a step's train record comes before its eval record

    def __init__(self, run_dir: Path, start_step: int):
        self.state_path = run_dir / STATE_FILE
        # From step 0 (a new run, or a resume that found no checkpoint): a new backend run.
        state = json.loads(self.state_path.read_text()) if start_step and self.state_path.is_file() else {}
        self.run_id = state.get("run_id") if state.get("logger") == self.name else None
        self.last = tuple(state.get("last") or (0, -1)) if self.run_id else (0, -1)

    def _save(self) -> None:
        runfolder.write_json(self.state_path, {"logger": self.name, "run_id": self.run_id, "last": list(self.last)})

    def log(self, rec: dict) -> None:
        key = (rec["step"], self.ORDER.get(rec["kind"], 2))
        if key <= self.last:
            return  # logged before the interruption; the resumed run recomputes it
        self._log(rec)
        self.last = key
        self._save()


class MlflowLogger(_Resumable):
    name = "mlflow"

    def __init__(self, run_dir: Path, cfg, start_step: int):
        super().__init__(run_dir, start_step)
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." per run
            logging.getLogger(noisy).setLevel(logging.WARNING)

        store = run_dir / "mlflow"
        if cfg.logger.tracking_uri:
            uri = str(cfg.logger.tracking_uri)
        else:
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store.resolve()}/mlflow.db"
        self.client = MlflowClient(tracking_uri=uri)
        if self.run_id is None:
            exp = self.client.get_experiment_by_name(cfg.logger.project)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                cfg.logger.project, artifact_location=None if cfg.logger.tracking_uri else (store / "artifacts").resolve().as_uri())
            run = self.client.create_run(exp_id, run_name=run_dir.name, tags={"ltune.run_dir": str(run_dir.resolve())})
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in runfolder._flatten(runfolder_config(cfg)).items()]
            for i in range(0, len(params), 100):  # log_batch takes at most 100 params a call
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            self._save()
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def _log(self, rec: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, rec["step"]) for k, v in scalars(rec).items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))


class WandbLogger(_Resumable):
    name = "wandb"

    def __init__(self, run_dir: Path, cfg, start_step: int):
        super().__init__(run_dir, start_step)
        import wandb

        self.run = wandb.init(project=cfg.logger.project, name=run_dir.name, dir=str(run_dir), mode=cfg.logger.mode,
                              id=self.run_id, resume="allow", config=runfolder_config(cfg),
                              settings=wandb.Settings(silent=True, console="off"))
        if self.run_id is None:
            self.run_id = self.run.id
            self._save()

    def _log(self, rec: dict) -> None:
        self.run.log(scalars(rec), step=rec["step"])

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


def runfolder_config(cfg) -> dict:
    from ltune_cli.config import to_container

    c = to_container(cfg)
    c.pop("hydra", None)
    return c


def open_backend(cfg, run_dir: Path, history: list[dict], start_step: int):
    """The `logger=` backend for this run folder (history: metrics.jsonl's records, cut to the checkpoint)."""
    name = cfg.logger.name
    require(name)
    if name == "tensorboard":
        return TensorBoardLogger(run_dir, cfg, start_step)
    if name == "mlflow":
        return MlflowLogger(run_dir, cfg, start_step)
    if name == "wandb":
        return WandbLogger(run_dir, cfg, start_step)
    return CsvLogger(run_dir, history)


# --------------------------------------------------------------------------- console
def hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


EVAL_KEYS = ("val_loss", "accuracy", "mcc", "macro_f1", "pair_accuracy")


def describe(rec: dict, total: int, eta: float | None = None) -> str:
    """One plain line for a record: what a SLURM log or a pipe shows."""
    head = f"[{rec['kind']}] step {rec['step']}/{total}"
    if rec["kind"] == "train":
        loss = "n/a (batches skipped)" if rec.get("train_loss") is None else f"{rec['train_loss']:.4f}"
        parts = [f"loss {loss}", f"lr {rec['lr']:.3g}", f"{rec['examples_per_s']:.1f} ex/s"]
    else:
        parts = [f"{k} {rec[k]:.4f}" for k in EVAL_KEYS if rec.get(k) is not None]
        parts += [f"{k} {v:.4f}" for k, v in rec.items() if k not in (*EVAL_KEYS, "kind", "step", "time_s")
                  and isinstance(v, float)]
    if "time_s" in rec:
        parts.append(f"elapsed {hms(rec['time_s'])}")
    if eta is not None:
        parts.append(f"ETA {hms(eta)}")
    return " | ".join([head, *parts])


class ConsoleReport:
    """The console side of a run: a rich bar in a terminal, plain lines elsewhere; silent when off."""

    def __init__(self, console, total: int, start_step: int, show: bool):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.total, self.start_step, self.show = total, start_step, show
        self.tty = show and self.console.is_terminal
        self.t0 = time.time()
        self.progress = self.task = None

    def __enter__(self):
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                                     TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()
            # No loss before the first train record (a resumed run too): "loss -", never "loss nan".
            self.task = self.progress.add_task("train", total=self.total, completed=self.start_step,
                                               loss="loss -", rate="")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def eta(self, step: int) -> float:
        done = step - self.start_step
        return (self.total - step) * (time.time() - self.t0) / done if done > 0 else math.nan

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def record(self, rec: dict) -> None:
        if not self.show:
            return
        if self.progress is not None and rec["kind"] == "train":
            loss = rec.get("train_loss")
            self.progress.update(self.task, loss="loss -" if loss is None else f"loss {loss:.4f}",
                                 rate=f"{rec['examples_per_s']:.1f} ex/s")
            return
        line = describe(rec, self.total, self.eta(rec["step"]))
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            _plain(self.console, line)

    def eval_progress(self, what: str = "eval"):
        """A per-batch callback (done, total) for engine.evaluate: a transient bar in a terminal."""
        if self.progress is None:
            return None
        return _bar_callback(self.progress, what)


def _plain(console, line: str) -> None:
    f = console.file if console is not None else sys.stderr
    f.write(line + "\n")
    f.flush()


def _bar_callback(progress, what: str):
    state = {"task": None}

    def on_batch(done: int, total: int) -> None:
        if state["task"] is None:
            state["task"] = progress.add_task(what, total=total, loss="", rate="")
        progress.update(state["task"], completed=done)
        if done >= total:
            progress.remove_task(state["task"])
            state["task"] = None

    return on_batch


@contextlib.contextmanager
def eval_progress(console, what: str, show: bool = True):
    """`ltune eval`: a bar over the eval batches in a terminal; elsewhere a line every ~10%."""
    from rich.console import Console

    console = console or Console(stderr=True)
    if not show:
        yield None
        return
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("batches"), TimeRemainingColumn(), console=console, transient=True) as p:
            task = p.add_task(what, total=None)
            yield lambda done, total: p.update(task, completed=done, total=total)
        return
    t0, shown = time.time(), {"tenth": -1}

    def on_batch(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth > shown["tenth"] or done == total:
            shown["tenth"] = tenth
            el = time.time() - t0
            _plain(console, f"[{what}] batch {done}/{total} | elapsed {hms(el)} | "
                            f"ETA {hms((total - done) * el / done if done else math.nan)}")

    yield on_batch


# --------------------------------------------------------------------------- what the engine calls
class RunLog:
    """Every record of a run, in one call: metrics.jsonl, the backend, the console.

    Only the main process writes files and backends; every process may report (only the main
    one shows anything: `show`)."""

    def __init__(self, cfg, run_dir: Path, *, start_step: int, main: bool, console=None):
        self.cfg, self.run_dir, self.main = cfg, run_dir, main
        self.metrics_path = run_dir / "metrics.jsonl"
        self.backend = None
        if main:
            history = runfolder.read_jsonl(self.metrics_path) if self.metrics_path.is_file() else []
            self.backend = open_backend(cfg, run_dir, history, start_step)
        self.report = ConsoleReport(console, cfg.train.max_steps, start_step, show=main and cfg.train.progress)

    def __enter__(self):
        self.report.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.report.__exit__(exc_type, exc, tb)
        if self.backend is not None:
            from ltune_cli.engine import RunInterrupted

            status = ("completed" if exc_type is None else
                      "interrupted" if issubclass(exc_type, (RunInterrupted, KeyboardInterrupt)) else "failed")
            self.backend.close(status)
        return False

    def record(self, rec: dict) -> None:
        if self.main:
            runfolder.append_jsonl(self.metrics_path, rec)
            self.backend.log(rec)
        self.report.record(rec)

    def advance(self, step: int) -> None:
        self.report.advance(step)
