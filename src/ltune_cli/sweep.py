"""`ltune sweep`: a grid of training runs as a Hydra multirun.

The grid (``hydra.sweeper.params`` of a ``conf/sweep/<name>.yaml``, plus any ``key=v1,v2``
override) is expanded by Hydra's sweeper and run by its launcher: sequential (basic) by
default, ``hydra/launcher=joblib`` for parallel local jobs, ``submitit_slurm`` for SLURM,
``ray`` where installed. Launchers are configuration; this module only supplies

- ``run_job(cfg)``: the job function (importable, so joblib/submitit workers can unpickle it).
  It trains into ``<sweep dir>/<grid overrides>`` (Hydra's job output folder), skips a run
  whose folder already holds a completed ``results.json`` for the same resolved config, and
  catches a failed run's exception (engine.train has written error.txt + a "failed"
  results.json) so the rest of the sweep goes on.
- ``ManifestCallback``: writes ``<sweep dir>/manifest.json`` when the multirun starts and again,
  with every job's overrides -> run folder -> status, when it ends.
- ``run_sweep(overrides, force=, out=)``: what ``ltune sweep`` calls; checks the overrides with
  the compose API (one-line errors), then hands off to ``@hydra.main`` in-process.

Sweep folder layout::

    <sweep dir>/manifest.json        schema ltune.sweep/1 (see `build_manifest`)
    <sweep dir>/multirun.yaml        Hydra's record of the multirun config
    <sweep dir>/<k=v,k=v>/           one run folder per job (runfolder.py contract) + .hydra/, ltune.log
    <sweep dir>/.ltune/jobs/<n>.json per-job records of the latest invocation (merged into the manifest)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ltune_cli import runfolder
from ltune_cli.config import _register, check, translate_config_error
from ltune_cli.errors import LtuneError, suggest
from ltune_cli.paths import conf_dir, outputs_dir

log = logging.getLogger("ltune.sweep")

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "ltune.sweep/1"
JOBS_DIR = Path(".ltune") / "jobs"
FORCE_ENV = "LTUNE_SWEEP_FORCE"  # set in the job by hydra.job.env_set when `ltune sweep --force`
# Config keys that do not change what a run computes: ignored when deciding to skip a run.
IGNORED_KEYS = (("out_dir",), ("resume",), ("train", "progress"), ("hardware", "mem_gb"), ("hardware", "gpu_mem_gb"))
# Files a run writes (runfolder.py); cleared before a run is redone. .hydra/ and *.log stay.
KEEP_ON_REDO = (".hydra",)
LAUNCHERS_HINT = ("joblib, submitit_slurm, submitit_local: pip install -e '.[launchers]'; "
                  "ray: pip install -e '.[ray]'")


# --------------------------------------------------------------------------- the job
def run_job(cfg: DictConfig) -> dict:
    """One grid point: train into Hydra's job folder unless it already holds this run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_dir = Path(hc.sweep.dir).resolve() if multirun else run_dir.parent
    force = os.environ.get(FORCE_ENV) == "1"
    for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with read_write(cfg), open_dict(cfg):
        cfg.out_dir = str(run_dir)
    record: dict[str, Any] = {
        "num": int(hc.job.num) if multirun else 0,
        "overrides": [str(o) for o in hc.overrides.task],
        "run_dir": _relative(run_dir, sweep_dir),
        "status": None, "error": None, "primary_metric": None, "value": None,
        "started": _now(), "wall_time_s": None,
    }
    t0 = time.time()
    try:
        check(cfg)
        reason = None if force else skip_reason(run_dir, cfg)
        if reason == "same":
            record["status"] = "skipped"
            log.info("%s: finished earlier with the same config, skipped (--force redoes it)", record["run_dir"])
        else:
            from ltune_cli import engine

            if reason is None and not force and can_resume(run_dir, cfg):
                record["resumed"] = True
                (run_dir / "error.txt").unlink(missing_ok=True)
                with read_write(cfg), open_dict(cfg):
                    cfg.resume = True
                log.info("%s: continuing the unfinished run from its last checkpoint", record["run_dir"])
            else:
                if reason == "changed":
                    log.info("%s: config changed since the finished run; running it again", record["run_dir"])
                clear_run_dir(run_dir)
            try:
                engine.train(cfg)
            except Exception as e:
                interrupted = getattr(engine, "RunInterrupted", None)
                if interrupted is not None and isinstance(e, interrupted):
                    # Ctrl-C/SIGTERM: the run checkpointed; stop the whole sweep (a re-run resumes it)
                    raise KeyboardInterrupt(str(e)) from e
                raise
            record["status"] = "completed"
    except KeyboardInterrupt as e:  # not a run failure: record it and stop the sweep
        record.update(status="interrupted", error=str(e) or "interrupted (KeyboardInterrupt)",
                      wall_time_s=time.time() - t0)
        _write_record(record, sweep_dir, multirun)
        raise
    except Exception as e:  # noqa: BLE001 - one failed run must not stop the sweep
        record["status"] = "failed"
        record["error"] = str(e) if isinstance(e, LtuneError) else f"{type(e).__name__}: {e}"
        if not (run_dir / "results.json").exists():  # failed before engine.train made the folder
            _record_early_failure(run_dir, cfg, e, t0)
        log.error("%s failed: %s (see %s)", record["run_dir"], record["error"].splitlines()[0],
                  run_dir / "error.txt")
    record["wall_time_s"] = time.time() - t0
    _add_result(record, run_dir)
    _write_record(record, sweep_dir, multirun)
    return record


def _write_record(record: dict, sweep_dir: Path, multirun: bool) -> None:
    if multirun:
        runfolder.write_json(sweep_dir / JOBS_DIR / f"{record['num']}.json", record)


def can_resume(run_dir: Path, cfg) -> bool:
    """An unfinished run (interrupted, or failed after a checkpoint) of exactly this config."""
    if "resume" not in cfg or not (run_dir / "checkpoints").is_dir():
        return False
    from ltune_cli import checkpoint

    if not checkpoint.list_checkpoints(run_dir):
        return False
    try:
        old = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    except Exception:  # noqa: BLE001
        return False
    new = OmegaConf.to_container(cfg, resolve=True)
    for conf in (old, new):  # out_dir: the stored one is the resolved path of this folder
        conf.pop("resume", None)
        conf.pop("out_dir", None)
    return json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str)


def skip_reason(run_dir: Path, cfg) -> str | None:
    """'same': a completed run of this resolved config is there; 'changed': a completed run of
    another config; None: nothing finished there (no results.json, or a failed run)."""
    try:
        res = runfolder.read_results(run_dir)
        old = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    except (OSError, ValueError, TypeError):
        return None
    except Exception:  # noqa: BLE001 - an unreadable config.yaml means "not the same run"
        return None
    if not isinstance(res, dict) or res.get("status") != "completed":
        return None
    new = OmegaConf.to_container(cfg, resolve=True)
    return "same" if same_config(old, new) else "changed"


def same_config(old: dict, new: dict) -> bool:
    """Do two resolved configs describe the same run?

    `IGNORED_KEYS` do not count. A key the stored config lacks (a setting added to ltune
    after that run) counts as the same when the new config leaves it at its schema default;
    any other difference, including a key that no longer exists, makes them differ.
    """
    a, b = _flatten(comparable(old)), _flatten(comparable(new))
    defaults = None
    for key in a.keys() | b.keys():
        if key in a and key in b:
            if a[key] != b[key]:
                return False
        elif key in b:
            if defaults is None:
                from ltune_cli.config import LtuneConfig

                defaults = _flatten(OmegaConf.to_container(OmegaConf.structured(LtuneConfig), resolve=True))
            if key not in defaults or defaults[key] != b[key]:
                return False
        else:
            return False
    return True


def _flatten(d: Any, prefix: str = "") -> dict:
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def comparable(conf: Any) -> Any:
    """A resolved config as a plain dict, without the keys that do not affect results."""
    if not isinstance(conf, dict):
        return conf
    out = json.loads(json.dumps(conf, default=str))
    for path in IGNORED_KEYS:
        node = out
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def clear_run_dir(run_dir: Path) -> None:
    """Remove a previous attempt's files so engine.train starts clean (Hydra's .hydra/ and logs stay)."""
    if not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if p.name in KEEP_ON_REDO or p.suffix == ".log":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _record_early_failure(run_dir: Path, cfg, e: Exception, t0: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    runfolder.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    runfolder.record_failure(run_dir, cfg, e, t0)


def _add_result(record: dict, run_dir: Path) -> None:
    try:
        res = runfolder.read_results(run_dir)
    except (OSError, ValueError, LtuneError):
        return
    pm = res.get("primary_metric")
    record["primary_metric"] = pm
    record["value"] = (res.get("final") or {}).get(pm)
    record["run_name"] = (res.get("run") or {}).get("name")
    if record["status"] == "skipped" and res.get("created"):
        record["finished_earlier"] = res["created"]


# --------------------------------------------------------------------------- the manifest
def grid_of(params: dict | None, overrides: list[str]) -> dict[str, list[str]]:
    """The swept dimensions: hydra.sweeper.params, then command-line overrides (which win).

    A command-line `key=v` of a key the sweep config sweeps narrows it to one value and stays
    a grid key; other single-value overrides are constants, not part of the grid.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = dict(params or {})
    lines = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    param_keys = {o.key_or_group for o in parsed[:len(params)]}
    grid: dict[str, list[str]] = {}
    for o in parsed:
        if o.is_hydra_override():
            continue
        key = o.get_key_element()
        if o.is_sweep_override():
            try:
                grid[key] = list(o.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - e.g. glob(): Hydra expands it; record it as written
                grid[key] = [o.get_value_element_as_str()]
        elif o.key_or_group in param_keys:
            grid[key] = [o.get_value_element_as_str()]
    return grid


def _manifest_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / MANIFEST


def read_manifest(sweep_dir: str | Path) -> dict:
    return json.loads(_manifest_path(Path(sweep_dir)).read_text(encoding="utf-8"))


def start_manifest(config: DictConfig) -> dict:
    """The manifest as a multirun starts: name, overrides, grid, launcher; no jobs yet."""
    h = config.hydra
    sweep_dir = Path(h.sweep.dir).resolve()
    params = OmegaConf.to_container(h.sweeper.params, resolve=True) if h.sweeper.get("params") else {}
    task = [str(o) for o in h.overrides.task]
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "name": OmegaConf.select(h, "runtime.choices.sweep") or "adhoc",
        "sweep_dir": str(sweep_dir),
        "status": "running",
        "started": _now(), "finished": None,
        "overrides": task,
        "hydra_overrides": [str(o) for o in h.overrides.hydra],
        "grid": grid_of(params, task),
        "launcher": OmegaConf.select(h, "launcher._target_"),
        "counts": {}, "jobs": [],
    }
    shutil.rmtree(sweep_dir / JOBS_DIR, ignore_errors=True)  # records of this invocation only
    runfolder.write_json(_manifest_path(sweep_dir), manifest)
    return manifest


def finish_manifest(sweep_dir: str | Path, status: str = "finished") -> dict:
    """Merge the per-job records into manifest.json (jobs ordered by job number)."""
    sweep_dir = Path(sweep_dir).resolve()
    try:
        manifest = read_manifest(sweep_dir)
    except (OSError, ValueError):
        manifest = {"schema": MANIFEST_SCHEMA, "name": sweep_dir.name, "sweep_dir": str(sweep_dir),
                    "started": None, "overrides": [], "grid": {}}
    jobs = []
    for p in sorted((sweep_dir / JOBS_DIR).glob("*.json")):
        try:
            jobs.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    jobs.sort(key=lambda j: j.get("num", 0))
    manifest.update(status=status, finished=_now(), jobs=jobs,
                    counts=dict(Counter(j.get("status") or "unknown" for j in jobs)))
    runfolder.write_json(_manifest_path(sweep_dir), manifest)
    return manifest


class ManifestCallback(Callback):
    """Hydra callback (conf/config.yaml hydra.callbacks): manifest.json at start and end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        start_manifest(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish_manifest(config.hydra.sweep.dir, "finished")


# --------------------------------------------------------------------------- entry points
hydra_main = hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(run_job)


def main() -> None:
    """`python -m ltune_cli.sweep --multirun +sweep=cpu_smoke ...` (plain Hydra command line)."""
    _register()
    hydra_main()


def sweep_name(overrides: list[str]) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if o.key_or_group == "sweep" and not o.is_sweep_override() and not o.is_delete():
            return o.get_value_element_as_str()
    return "adhoc"


def run_sweep(overrides: list[str] | tuple[str, ...] = (), *, force: bool = False,
              out: str | Path | None = None) -> tuple[Path, dict]:
    """Check the overrides, run the multirun in-process, return (sweep folder, manifest)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [str(o) for o in overrides]
    if any(o.strip() in ("-m", "--multirun") for o in overrides):
        overrides = [o for o in overrides if o.strip() not in ("-m", "--multirun")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001
        raise LtuneError(f"bad override: {str(e).strip().splitlines()[0]} (use key=value or key=v1,v2).") from None
    hardware: list[dict] = []
    grid = preflight(overrides, parsed, hardware)

    user_dir = next((o.get_value_element_as_str() for o in parsed if o.key_or_group == "hydra.sweep.dir"), None)
    if user_dir is not None:
        sweep_dir = Path(user_dir)
    elif out is not None:
        sweep_dir = Path(out)
    else:
        sweep_dir = outputs_dir() / "sweeps" / sweep_name(overrides)
    sweep_dir = sweep_dir.resolve()
    what = (f"hydra.sweep.dir={user_dir}" if user_dir is not None else f"--out {out}" if out is not None
            else f"the sweep folder {sweep_dir}")
    runfolder.make_dir(sweep_dir, what, "choose a writable folder with --out" if user_dir is None and out is not None
                       else "set LTUNE_OUTPUTS=<a writable folder> or --out <a writable folder>" if user_dir is None
                       else "choose a writable hydra.sweep.dir")
    grid_keys = {g.lstrip("+~") for g in grid}
    exclude = sorted({o.key_or_group for o in parsed if not o.is_hydra_override()
                      and o.key_or_group not in grid_keys} | {"sweep", "out_dir"})
    argv = ["ltune-sweep", "--multirun", *overrides,
            "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(_quote(k) for k in exclude) + "]"]
    if user_dir is None:
        argv.append(f"hydra.sweep.dir={_quote(str(sweep_dir))}")
    if not grid:  # a single run: give it a folder of its own inside the sweep folder
        argv.append("hydra.sweep.subdir=run")
    if force:
        argv.append(f"++hydra.job.env_set.{FORCE_ENV}='1'")
    argv += launcher_overrides(parsed, hardware)

    _register()
    GlobalHydra.instance().clear()
    old_argv = sys.argv
    sys.argv = argv
    try:
        hydra_main()
    except SystemExit as e:
        if e.code not in (0, None):
            _finish_if_started(sweep_dir, "aborted")
            err = LtuneError(f"the sweep stopped: Hydra exited with status {e.code} (its message is above); "
                             f"finished runs are kept in {sweep_dir}.")
            err.exit_code = 1
            raise err from None
    except BaseException:
        _finish_if_started(sweep_dir, "aborted")
        raise
    finally:
        sys.argv = old_argv
        GlobalHydra.instance().clear()
    manifest = _finish_if_started(sweep_dir, "aborted")
    if manifest is None:
        raise LtuneError(f"the sweep wrote no {MANIFEST} in {sweep_dir}; is hydra.callbacks.ltune_manifest "
                         f"still in conf/config.yaml?")
    return sweep_dir, manifest


def _finish_if_started(sweep_dir: Path, status: str) -> dict | None:
    """The manifest; if the multirun did not reach its end callback, finish it as `status`."""
    try:
        manifest = read_manifest(sweep_dir)
    except (OSError, ValueError):
        return None
    if manifest.get("status") == "running":
        manifest = finish_manifest(sweep_dir, status)
    return manifest


def preflight(overrides: list[str], parsed, hardware: list | None = None) -> dict[str, list[str]]:
    """Compose the config for every value of every grid key (others at their first value) and
    run the range checks, so a misspelt name fails in one line before any job starts.

    Returns the grid (see `grid_of`); `hardware` (a list) receives every composed hardware node.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    firsts = []
    for o in parsed:
        if o.is_sweep_override():
            values = grid_of({}, [o.input_line]).get(o.get_key_element()) or []
            firsts += [f"{o.get_key_element()}={values[0]}"] if values else []
    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            try:
                base = compose(config_name="config", overrides=fixed + firsts, return_hydra_config=True)
            except Exception as e:  # noqa: BLE001
                raise _sweep_config_error(e, overrides) from None
            params = OmegaConf.to_container(base.hydra.sweeper.params, resolve=True) \
                if base.hydra.sweeper.get("params") else {}
            grid = grid_of(params, overrides)
            grid_keys = {k.lstrip("+~") for k in grid}
            constant = [o.input_line for o in parsed if not o.is_sweep_override()
                        and (o.is_hydra_override() or o.key_or_group not in grid_keys)]
            first = {k: v[0] for k, v in grid.items() if v}
            for key, values in grid.items():
                for v in values:
                    ov = constant + [f"{k}={v if k == key else first[k]}" for k in first]
                    try:
                        cfg = compose(config_name="config", overrides=ov)
                    except Exception as e:  # noqa: BLE001
                        raise _sweep_config_error(e, ov) from None
                    try:
                        check(cfg)
                    except LtuneError as e:
                        raise LtuneError(f"{key}={v}: {e.message}") from None
                    if hardware is not None:
                        hardware.append(OmegaConf.to_container(cfg.hardware, resolve=True))
            if hardware is not None and not grid:
                hardware.append(OmegaConf.to_container(compose(config_name="config", overrides=constant).hardware,
                                                       resolve=True))
    finally:
        GlobalHydra.instance().clear()
    return grid


def _sweep_config_error(e: Exception, overrides) -> LtuneError:
    import re

    full = str(e)
    m = re.search(r"Could not find 'hydra/launcher/([\w\-.]+)'", full)
    if m:
        from hydra.core.plugins import Plugins  # noqa: F401 - loads the installed launcher plugins

        avail = re.findall(r"^\t(\S+)$", full, flags=re.M)
        return LtuneError(f"unknown launcher '{m.group(1)}' (hydra/launcher); installed: "
                          f"{', '.join(avail) or 'basic'}.{suggest(m.group(1), avail)} Launchers: "
                          f"{LAUNCHERS_HINT}.")
    return translate_config_error(e, overrides)


# --------------------------------------------------------------------------- SLURM
# The one place hardware keys become the submitit SLURM launcher's parameters (hydra.launcher.*).
# A sweep's jobs share one sbatch request, so each is the largest any grid point's preset asks for.
SLURM_FROM_HARDWARE = {"gpus_per_node": "gpus_per_node", "time_min": "timeout_min",
                       "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "partition": "partition"}
# A job pre-empted or past its time limit gets SIGUSR2, checkpoints and is requeued (engine.py); a
# run longer than time_min continues in up to this many requeued jobs.
SLURM_MAX_TIMEOUTS = 3


def launcher_overrides(parsed, hardware: list[dict]) -> list[str]:
    """hydra.launcher.* overrides for `hydra/launcher=submitit_slurm`, from the hardware presets
    of the grid (`preflight`); what the command line sets itself is kept. One task on one node per
    job: `ltune train` starts its own torchrun workers inside it (hardware=ddp|fsdp)."""
    launcher = next((o.get_value_element_as_str() for o in parsed if o.key_or_group == "hydra/launcher"), None)
    if launcher != "submitit_slurm":
        return []
    given = {o.key_or_group: o.value() for o in parsed if o.key_or_group.startswith("hydra.launcher.")}
    for key in ("hydra.launcher.nodes", "hydra.launcher.tasks_per_node"):
        if key in given and str(given[key]) != "1":
            raise LtuneError(f"{key}={given[key]}: each sweep job is one ltune run on one node that starts its own "
                             f"torchrun workers (hardware=ddp|fsdp, one per GPU of hardware.gpus_per_node); several "
                             f"tasks or nodes would start one run per task into the same folder. Leave {key} at 1; "
                             f"multi-node training: docs/gpu.md.")
    values: dict = {"nodes": 1, "tasks_per_node": 1, "max_num_timeout": SLURM_MAX_TIMEOUTS}
    for hkey, lkey in SLURM_FROM_HARDWARE.items():
        xs = {h.get(hkey) for h in hardware} - {None, 0}
        if not xs:
            continue
        if hkey == "partition" and len(xs) > 1:
            raise LtuneError(f"the sweep's hardware presets ask for partitions {sorted(xs)}; one sweep is one SLURM "
                             f"array: set hardware.partition=<one> (or hydra.launcher.partition=<one>).")
        values[lkey] = max(xs) if hkey != "partition" else xs.pop()
    return [f"hydra.launcher.{k}={_quote(v) if isinstance(v, str) else v}" for k, v in values.items()
            if f"hydra.launcher.{k}" not in given]


# --------------------------------------------------------------------------- summary
def render_summary(manifest: dict, console) -> None:
    """A rich table: run folder, status, primary metric; then the counts."""
    from rich.table import Table

    t = Table(title=f"sweep {manifest.get('name')}: {len(manifest.get('jobs', []))} runs")
    t.add_column("#", justify="right")
    t.add_column("run", overflow="fold")
    t.add_column("status")
    t.add_column("metric")
    t.add_column("value", justify="right")
    colour = {"completed": "green", "skipped": "cyan", "failed": "red", "interrupted": "yellow"}
    for j in manifest.get("jobs", []):
        status = j.get("status") or "?"
        note = status + (" (resumed)" if j.get("resumed") else "")
        if status in ("failed", "interrupted") and j.get("error"):
            note = f"{status}: {str(j['error']).splitlines()[0][:80]}"
        value = j.get("value")
        t.add_row(str(j.get("num")), str(j.get("run_dir")), f"[{colour.get(status, 'white')}]{note}[/]",
                  str(j.get("primary_metric") or ""), "" if value is None else f"{value:.4f}")
    console.print(t)
    counts = manifest.get("counts", {})
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no jobs ran")


# --------------------------------------------------------------------------- helpers
def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _quote(s: str) -> str:
    """A Hydra override value that is always read as one literal string."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


if __name__ == "__main__":  # run through the importable module, so workers can unpickle run_job
    from ltune_cli.sweep import main as _main

    _main()
