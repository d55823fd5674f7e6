"""`ltune` command line: thin commands that parse, then delegate.

torch and transformers are imported inside the commands that need them, so
`ltune --help` and `ltune compare` start fast.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import typer

from ltune_cli.errors import LtuneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Label-aware parameter-efficient fine-tuning (L-Tuning, prefix and prompt tuning).")

OVERRIDES = typer.Argument(None, help="Hydra-style overrides: model=minilm dataset=sst2 method=lt_prefix "
                                      "train.max_steps=300 ...", show_default=False)
DEBUG = typer.Option(False, "--debug", help="Show full tracebacks.")


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=_console(), show_path=False)], force=True)
    for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def user_errors(fn):
    """Print LtuneError as one line and exit 2; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except LtuneError as e:
            if debug:
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None
        except typer.Exit:
            raise
        except Exception as e:  # a bug, not bad input: one line, the trace on request
            if debug:
                raise
            typer.echo(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                       f"(run with --debug for the traceback; a run folder keeps it in error.txt)", err=True)
            raise typer.Exit(code=1) from None

    return wrapper


def _scores_table(title: str, scores: dict, keys=("accuracy", "mcc", "macro_f1", "val_loss", "pair_accuracy")):
    from rich.table import Table

    t = Table(title=title)
    for k in keys:
        if k in scores:
            t.add_column(k, justify="right")
    t.add_row(*[f"{scores[k]:.4f}" for k in keys if k in scores])
    return t


@app.command()
@user_errors
def train(overrides: list[str] = OVERRIDES,
          resume: Path | None = typer.Option(None, "--resume", help="Continue this run folder from its newest "
                                             "checkpoint, with its stored config."),
          debug: bool = DEBUG):
    """Train one method on one model and dataset; writes a run folder under outputs/."""
    from ltune_cli.config import compose, load_stored

    if resume is not None:
        if overrides:
            raise LtuneError("--resume uses the run's stored config; drop the overrides "
                             "(or use resume=true out_dir=<run> with the same overrides).")
        cfg = load_stored(resume / "config.yaml")
        cfg.resume, cfg.out_dir = True, str(resume)
    else:
        cfg = compose(overrides or [])
    _setup_logging()
    from ltune_cli import engine, runfolder

    run_dir = engine.train(cfg, console=_console())
    res = runfolder.read_results(run_dir)
    from rich.console import Console

    out = Console()
    out.print(_scores_table(f"{res['run']['name']}: final eval ({res['eval_examples']} examples)",
                            res["final"]))
    out.print(f"trainable parameters: {res['trainable_params']:,}   wall time: {res['wall_time_s']:.1f} s")
    print(f"run folder: {run_dir}")


@app.command("eval")
@user_errors
def eval_(run: Path = typer.Argument(..., help="A run folder written by `ltune train`."),
          overrides: list[str] = OVERRIDES, debug: bool = DEBUG):
    """Reload a run's trainable weights, re-score its eval split, write <run>/eval.json."""
    _setup_logging()
    from ltune_cli.evaluate import evaluate_run

    result = evaluate_run(run, overrides or [])
    from rich.console import Console

    out = Console()
    out.print(_scores_table(f"{run}: eval ({result['eval_examples']} examples)", result["scores"]))
    if result.get("reproduces") is not None:
        out.print("matches results.json final scores: " + ("yes" if result["reproduces"] else "NO"))
    print(f"eval written: {Path(run) / 'eval.json'}")


@app.command()
@user_errors
def validate(overrides: list[str] = OVERRIDES, debug: bool = DEBUG):
    """Check a configuration (keys, types, ranges, data files) without building a model."""
    from ltune_cli.config import compose

    cfg = compose(overrides or [])
    from ltune_cli.data import load_splits

    data = load_splits(cfg.dataset)
    typer.echo(f"ok: {cfg.method.name} on {cfg.model.name} ({cfg.model.path}), {cfg.dataset.name}: "
               f"{len(data.train)} train / {len(data.eval)} eval examples, labels {data.label_texts}")


@app.command()
@user_errors
def compare(paths: list[Path] = typer.Argument(..., help="Run folders, sweep folders or outputs/."),
            out: Path | None = typer.Option(None, "--out", help="Report folder."),
            debug: bool = DEBUG):
    """Tables (Markdown/CSV/LaTeX), L-Tuning minus baseline with bootstrap CIs, curves, HTML."""
    from ltune_cli.report import compare as run_compare
    from ltune_cli.report import render_console

    written = run_compare([str(p) for p in paths], str(out) if out else None)
    from rich.console import Console

    render_console(written, Console())
    for k, v in written.items():
        typer.echo(f"{k}: {v}")


def main() -> None:
    try:
        app()
    except SystemExit as e:
        sys.exit(e.code)
