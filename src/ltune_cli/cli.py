"""`ltune` command line: thin commands that parse, then delegate.

torch and transformers are imported inside the commands that need them, so
`ltune --help` and `ltune compare` start fast.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import typer

from ltune_cli.errors import LtuneError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Label-aware parameter-efficient fine-tuning (L-Tuning, prefix and prompt tuning).")


def _complete_override(incomplete: str) -> list[str]:
    from ltune_cli.catalog import complete_override

    return complete_override(incomplete)


OVERRIDES = typer.Argument(None, help="Hydra-style overrides: model=minilm dataset=sst2 method=lt_prefix "
                                      "train.max_steps=300 ...", show_default=False,
                           autocompletion=_complete_override)
DEBUG = typer.Option(False, "--debug", help="Show full tracebacks.")
CONFIG_DIR = typer.Option(None, "--config-dir", envvar="LTUNE_CONFIG_DIR", show_default=False,
                          help="Your own config folder: <DIR>/model|dataset|method|hardware|logger|sweep/<name>.yaml "
                               "become options next to the shipped conf/ (docs/config-dir.md).")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"ltune {version('ltune-cli')}")
        except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
            from ltune_cli import __version__

            typer.echo(f"ltune {__version__} (not installed)")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the installed ltune version and exit.")):
    """Label-aware parameter-efficient fine-tuning (L-Tuning, prefix and prompt tuning)."""


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
        before = os.environ.get("LTUNE_CONFIG_DIR")
        try:
            if kwargs.get("config_dir") is not None:  # read by config.compose (and inherited by subprocesses)
                os.environ["LTUNE_CONFIG_DIR"] = str(Path(kwargs["config_dir"]).expanduser().absolute())
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
        finally:  # the process environment as it was (commands also run in-process, e.g. in tests)
            if before is None:
                os.environ.pop("LTUNE_CONFIG_DIR", None)
            else:
                os.environ["LTUNE_CONFIG_DIR"] = before

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
                                             "checkpoint, with its stored config (and, optionally, another "
                                             "process layout: hardware.nproc=M hardware.strategy=...)."),
          config_dir: Path | None = CONFIG_DIR, debug: bool = DEBUG):
    """Train one method on one model and dataset; writes a run folder under outputs/.

    Several GPUs/processes: hardware=ddp hardware.nproc=N (or run it under torchrun); see docs/gpu.md.
    """
    from ltune_cli.config import compose, load_stored

    if resume is not None:
        cfg = load_stored(resume / "config.yaml")
        if overrides:
            cfg = _layout_overrides(cfg, overrides)
        cfg.resume, cfg.out_dir = True, str(resume)
    else:
        cfg = compose(overrides or [])
    _setup_logging()
    from ltune_cli import distributed, engine, runfolder

    run_dir = engine.train(cfg, console=_console())
    if distributed.is_quiet_worker():  # the launching process (or rank 0 under torchrun) reports
        return
    res = runfolder.read_results(run_dir)
    from rich.console import Console

    out = Console()
    out.print(_scores_table(f"{res['run']['name']}: final eval ({res['eval_examples']} examples)",
                            res["final"]))
    out.print(f"trainable parameters: {res['trainable_params']:,}   wall time: {res['wall_time_s']:.1f} s")
    print(f"run folder: {run_dir}")


def _layout_overrides(cfg, overrides: list[str]):
    """--resume takes the stored config; only the process layout may change (N -> M processes)."""
    from omegaconf import OmegaConf

    from ltune_cli.config import check, translate_config_error
    from ltune_cli.distributed import LAYOUT_KEYS

    for o in overrides:
        if "=" not in o or o.split("=", 1)[0] not in LAYOUT_KEYS:
            raise LtuneError(f"--resume uses the run's stored config; '{o}' cannot change it (only the process "
                             f"layout can: {', '.join(LAYOUT_KEYS)}). Or use resume=true out_dir=<run> with the "
                             f"same overrides.")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # noqa: BLE001
        raise translate_config_error(e) from None
    check(cfg)
    return cfg


@app.command("eval")
@user_errors
def eval_(run: Path = typer.Argument(..., help="A run folder written by `ltune train`."),
          overrides: list[str] = typer.Argument(None, help="Only what eval honours: dataset.eval_limit=N, "
                                                "dataset.eval_path=... (dataset=files runs), dataset.eval_split=... "
                                                "(dataset=hub runs), model.path=..., hardware.device/dtype/"
                                                "eval_batch_size/num_threads/...; anything else is refused.",
                                                show_default=False),
          out: Path | None = typer.Option(None, "--out", help="Write eval.json and eval_predictions.json into "
                                          "this new folder instead of the run folder (keeps earlier evals)."),
          debug: bool = DEBUG):
    """Reload a run's trainable weights, re-score its eval split, write eval.json + eval_predictions.json.

    With the stored eval set, every score in results.json (accuracy, mcc, macro_f1, val_loss,
    pair_accuracy) and every prediction is compared; exit code 3 when they do not reproduce.
    """
    _setup_logging()
    from ltune_cli.evaluate import EXIT_MISMATCH, out_folder, score_run, write_eval
    from ltune_cli.loggers import eval_progress

    folder = out_folder(run, out)
    with eval_progress(_console(), "eval") as on_batch:  # a bar in a terminal, else a line every ~10%
        result, preds = score_run(run, overrides or [], on_batch=on_batch)
    from rich.console import Console

    con = Console()
    con.print(_scores_table(f"{run}: eval ({result['eval_examples']} examples)", result["scores"]))
    if result.get("reproduces") is None:
        con.print(result["compared"], markup=False)
    elif result["reproduces"]:
        con.print("reproduces results.json: yes (every stored score and prediction)", markup=False)
    else:
        con.print("reproduces results.json: NO", markup=False)
        for m in result["mismatches"]:
            con.print(f"  {m['score']}: stored {m['stored']}, now {m['now']} (tolerance {m['tolerance']})",
                      markup=False)
    eval_json, _ = write_eval(folder, result, preds)
    print(f"eval written: {eval_json}")
    if result.get("reproduces") is False:
        raise typer.Exit(code=EXIT_MISMATCH)


RUNTIME_OVERRIDES = typer.Argument(None, help="Only where the frozen base runs: model.path=..., hardware.device/"
                                               "dtype/eval_batch_size/num_threads/load_in/device_map/...; anything "
                                               "else is refused.", show_default=False)


@app.command("export")
@user_errors
def export_(run: Path = typer.Argument(..., help="A run folder written by `ltune train`."),
            overrides: list[str] = RUNTIME_OVERRIDES,
            format_: str = typer.Option("auto", "--format", help="peft: a PEFT adapter folder (prefix -> "
                                        "PREFIX_TUNING, prompt -> PROMPT_TUNING) + head.safetensors; ltune: the "
                                        "trainable weights + ltune.json (lt_prefix / lt_prompt, which PEFT cannot "
                                        "express); auto: peft where possible."),
            out: Path | None = typer.Option(None, "--out", help="A new or empty folder (default <run>/adapter-<format>)."),
            debug: bool = DEBUG):
    """Export a run's trained weights: a PEFT adapter that PeftModel.from_pretrained loads (checked
    against ltune's logits before it is kept), or ltune's own self-describing weights."""
    _setup_logging()
    from ltune_cli.export import default_out, export_run

    rec = export_run(run, out, format_, overrides or [])
    folder = out if out is not None else default_out(run, rec["format"])
    if rec["format"] == "peft":
        c = rec["check"]
        print(f"{rec['peft_type']} adapter for {rec['base_model']} ({rec['family']}), head.safetensors beside it; "
              f"loaded back with PEFT: logits match ltune's on {c['texts']} texts (max relative difference "
              f"{c['max_relative_difference']:.1e})")
    else:
        print(f"ltune format ({rec['why']}): adapter.safetensors + ltune.json, labels {rec['label_texts']}")
    print(f"exported: {folder}")


@app.command()
@user_errors
def predict(run: Path = typer.Argument(..., help="A run folder written by `ltune train`."),
            overrides: list[str] = RUNTIME_OVERRIDES,
            input_: str = typer.Option(..., "--input", "-i", help="Texts to label: a .csv/.tsv/.jsonl file, or - "
                                       "for standard input."),
            output: str = typer.Option("-", "--output", "-o", help="A .csv/.tsv/.jsonl file (by its extension), "
                                       "or - for standard output in the input's format."),
            batch_size: int | None = typer.Option(None, "--batch-size", help="Texts per forward (default: the "
                                                  "run's hardware.eval_batch_size)."),
            text_column: str | None = typer.Option(None, "--text-column", help="Column/key of the text (default: "
                                                   "the run's dataset.text_column)."),
            pair_column: str | None = typer.Option(None, "--pair-column", help="Column/key of the second text of "
                                                   "a pair (default: the run's dataset.text_pair_column)."),
            debug: bool = DEBUG):
    """Label new texts with a trained run: the label and one score per label for every row, in input order."""
    _setup_logging()
    from ltune_cli.predict import predict as run_predict

    rows, _ = run_predict(run, input_, output, overrides or [], batch_size=batch_size, text_column=text_column,
                          pair_column=pair_column, console=_console())
    if output != "-":
        typer.echo(f"{len(rows)} predictions written: {output}", err=True)


@app.command()
@user_errors
def validate(overrides: list[str] = OVERRIDES, config_dir: Path | None = CONFIG_DIR, debug: bool = DEBUG):
    """Check a configuration without loading weights: keys, types, ranges, data files, and what
    train would refuse (model folder and family, method x family, devices, optional packages)."""
    from ltune_cli import preflight
    from ltune_cli.config import compose

    preflight.check_launchers(overrides or [])
    cfg = compose(overrides or [])
    from ltune_cli.data import load_splits

    data = load_splits(cfg.dataset)
    from ltune_cli import memory

    est = memory.plan(cfg, data)  # from the model's published architecture; nothing loads
    memory.check_fits(est, cfg.hardware)  # before the device checks: it plans a GPU run from any machine
    info = preflight.check(cfg)
    typer.echo(f"ok: {cfg.method.name} on {cfg.model.name} ({cfg.model.path}: {info.summary()}), "
               f"{cfg.dataset.name}: {len(data.train)} train / {len(data.eval)} eval examples, "
               f"labels {data.label_texts}")
    if est is not None:
        typer.echo(f"{memory.describe(est)}; from conf/model/{cfg.model.name}.yaml arch, hardware={cfg.hardware.name}")


COMPARE_FORMATS = {"console": None, "md": "markdown", "latex": "latex", "csv": "csv", "html": "html"}


@app.command()
@user_errors
def compare(paths: list[Path] = typer.Argument(..., help="Run folders, sweep folders or outputs/."),
            out: Path | None = typer.Option(None, "--out", help="Report folder."),
            metric: str | None = typer.Option(None, "--metric", help="Judge every column by this score "
                                              "(accuracy, mcc, macro_f1, val_loss, ...; default: each "
                                              "dataset's primary metric)."),
            seed: int = typer.Option(0, "--seed", min=0, help="Seed of the bootstrap resampling."),
            n_boot: int = typer.Option(2000, "--n-boot", min=1, help="Bootstrap replicates per interval."),
            fmt: str = typer.Option("console", "--format", help="What to print: console (tables), or the text "
                                    "of report.md (md), tables.tex (latex), results.csv (csv) or report.html "
                                    "(html) for a pipe; every file is written either way."),
            debug: bool = DEBUG):
    """Tables (Markdown/CSV/LaTeX), L-Tuning minus baseline with bootstrap CIs, curves, HTML."""
    from ltune_cli.errors import suggest

    if fmt not in COMPARE_FORMATS:
        raise LtuneError(f"compare: unknown --format {fmt!r}.{suggest(fmt, COMPARE_FORMATS)}")
    from ltune_cli.report import compare as run_compare
    from ltune_cli.report import render_console

    written = run_compare([str(p) for p in paths], str(out) if out else None, metric=metric, n_boot=n_boot,
                          seed=seed)
    if COMPARE_FORMATS[fmt] is None:
        from rich.console import Console

        render_console(written, Console())
    else:
        sys.stdout.write(written[COMPARE_FORMATS[fmt]].read_text(encoding="utf-8"))
    for k, v in written.items():
        typer.echo(f"{k}: {v}", err=fmt != "console")  # stdout holds only the chosen view


@app.command()
@user_errors
def bench(overrides: list[str] = OVERRIDES,
          model: list[str] | None = typer.Option(None, "--model", "-m",
                                                 help="A conf/model name or a model folder; repeatable "
                                                      "(default: minilm and smollm2_135m)."),
          quick: bool = typer.Option(False, "--quick", help="A few steps on a text sample (seconds)."),
          out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Writes bench.json + bench.md."),
          repeats: int | None = typer.Option(None, "--repeats", min=1, help="Interleaved repeats."),
          steps: int | None = typer.Option(None, "--steps", min=1, help="Timed steps per variant per repeat."),
          label_lens: str | None = typer.Option(None, "--label-lens", help="Descriptive label lengths, e.g. 4,16,32."),
          eval_k: str | None = typer.Option(None, "--eval-k", help="Label counts K for evaluation, e.g. 2,5,20."),
          eval_texts: int | None = typer.Option(None, "--eval-texts", min=1, help="Texts per eval pass."),
          no_peft: bool = typer.Option(False, "--no-peft", help="Skip the HF PEFT baselines."),
          no_memory: bool = typer.Option(False, "--no-memory", help="Skip the peak-memory child process."),
          no_profile: bool = typer.Option(False, "--no-profile", help="Skip the one-step profile."),
          compile_: bool = typer.Option(False, "--compile", help="Also time prefix / lt_prefix on a "
                                                                 "torch.compile'd base (compiles for minutes)."),
          debug: bool = DEBUG):
    """Throughput, memory and utilisation of every method vs PEFT and the re-encoding design (one run)."""
    _setup_logging()
    from ltune_cli import bench as bench_mod

    def ints(text: str, what: str) -> list[int]:
        try:
            vals = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise LtuneError(f"{what}: '{text}' is not a comma-separated list of integers.") from None
        if not vals or min(vals) < 1:
            raise LtuneError(f"{what}: '{text}' needs positive integers, e.g. 2,5,20.")
        return vals

    st = (bench_mod.quick(model, overrides or []) if quick
          else bench_mod.BenchSettings(overrides=list(overrides or [])))
    if model:
        st.models = list(model)
    for name, val in (("repeats", repeats), ("steps", steps), ("eval_texts", eval_texts)):
        if val is not None:
            setattr(st, name, val)
    if label_lens is not None:
        st.label_lens = ints(label_lens, "--label-lens")
    if eval_k is not None:
        st.eval_ks = ints(eval_k, "--eval-k")
        if min(st.eval_ks) < 2:
            raise LtuneError("--eval-k: K counts labels and needs to be >= 2.")
    st.peft, st.memory, st.profile = not no_peft, not no_memory, not no_profile
    st.compile = compile_
    log = logging.getLogger("ltune")
    res = bench_mod.run(st, out, say=log.info)
    from rich.console import Console

    out_c = Console()
    for mr in res["models"]:
        for t in mr["targets"]:
            mark = {True: "ok  ", False: "MISS", None: "  - "}[t["pass"]]
            val = "-" if t["measured"] is None else f"{t['measured']:.3f}"
            out_c.print(f"{mark} {mr['info']['model']}: {t['target']}: {val} (goal {t['goal']})", markup=False)
    print(f"bench written: {out / 'bench.json'} and {out / 'bench.md'}")


SWEEP_OVERRIDES = typer.Argument(None, help="+sweep=<conf/sweep name>, grid overrides (method=prefix,lt_prefix "
                                            "seed=0,1), constants (train.max_steps=50), Hydra settings "
                                            "(hydra/launcher=joblib hydra.launcher.n_jobs=2).",
                                 show_default=False)


@app.command()
@user_errors
def sweep(overrides: list[str] = SWEEP_OVERRIDES,
          force: bool = typer.Option(False, "--force", help="Redo runs that already finished."),
          out: Path | None = typer.Option(None, "--out", help="Sweep folder (default outputs/sweeps/<name>)."),
          config_dir: Path | None = CONFIG_DIR, debug: bool = DEBUG):
    """Run a grid of trainings as a Hydra multirun into one sweep folder (see docs/sweep.md)."""
    from ltune_cli.sweep import render_summary, run_sweep

    sweep_dir, manifest = run_sweep(overrides or [], force=force, out=out)
    from rich.console import Console

    render_summary(manifest, Console())
    print(f"sweep folder: {sweep_dir}")
    if manifest.get("counts", {}).get("failed"):
        raise typer.Exit(code=1)


@app.command("ls")
@user_errors
def ls(group: str | None = typer.Argument(None, help="models, datasets, methods, hardware, loggers or sweeps "
                                                     "(default: all).", show_default=False),
       config_dir: Path | None = CONFIG_DIR, debug: bool = DEBUG):
    """List the options of the config groups, one line each, from conf/ and your --config-dir."""
    from ltune_cli.catalog import listing

    for line in listing(group):
        typer.echo(line)


@app.command("config")
@user_errors
def config_(overrides: list[str] = OVERRIDES, config_dir: Path | None = CONFIG_DIR, debug: bool = DEBUG):
    """Print the composed, checked config (YAML, as `ltune train` would run it) without running."""
    from omegaconf import OmegaConf

    from ltune_cli.config import compose

    typer.echo(OmegaConf.to_yaml(compose(overrides or []), resolve=True), nl=False)


def main() -> None:
    try:
        app()
    except SystemExit as e:
        sys.exit(e.code)
