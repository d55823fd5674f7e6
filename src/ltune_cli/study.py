"""The study that answers "does L-Tuning beat prefix and prompt tuning?" (docs/RESULTS.md).

A study is a plan in `conf/study/<name>.yaml` (cells = model x dataset, methods, budget, the
tuning grid, seeds, ablations). It becomes a list of jobs, each one `ltune train` run with
explicit overrides in its own folder under `outputs/study/<name>/<stage>/<model>-<dataset>/...`.
Running a stage runs only what is missing: a completed run folder is skipped, an interrupted one
is resumed from its checkpoint, so a study spans as many sittings as it needs
(`python -m ltune_cli.study run <stage>`; `make study`).

Stages, in order (each later stage reads the earlier ones' run folders):
- `pilot`: every method at its default learning rate for a long budget on the held-out slice of
  train, to choose the step budget from the curves (where the best method has plateaued).
- `tune`: every method x learning-rate scale (x prefix/prompt length for the baselines) on a
  fixed held-out slice of *train* (`dataset.holdout`), seed 0. The dev split is never seen. Where
  a method's best scale is the lowest / highest tried, the grid goes one scale further
  (`tune.extend`), in rounds, until the best lies inside or the extension list ends.
- `final`: every method with its chosen values, several seeds, scored on the full dev split.
- `ablate`: label texts made meaningless or swapped between classes, lt_prefix's A.5 variant
  (with and without its warm start: capacity or warm start?), the warm start off, the baselines
  in the pair framing; each with the chosen values of the method it varies.

A plan change that takes completed runs out of the study (a cell's new step budget) moves them to
`outputs/study/<plan>/superseded/<change>/`: kept, and counted in the CPU total of RESULTS.md.

The run folders' small files (config, metrics, results, predictions) are committed; weights and
checkpoints are not (.gitignore), so a run cut by the end of a sitting is rerun from its start on
a fresh checkout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ltune_cli import runfolder
from ltune_cli.errors import LtuneError
from ltune_cli.paths import conf_dir

STAGES = ("pilot", "tune", "final", "ablate")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class Job:
    stage: str
    model: str
    dataset: str
    method: str
    tag: str  # what distinguishes this job inside its (stage, cell, method): e.g. "lr0.3-P10-s0"
    overrides: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)  # the varied values, recorded in the results CSV

    @property
    def cell(self) -> str:
        return f"{self.model}-{self.dataset}"

    def __post_init__(self):
        # One value per key, the last given winning (as Hydra does), in first-mention order.
        last = {o.split("=", 1)[0]: o for o in self.overrides}
        self.overrides = [last[k] for k in dict.fromkeys(o.split("=", 1)[0] for o in self.overrides)]

    def folder(self, root: Path) -> Path:
        return root / self.stage / self.cell / self.method / self.tag


def load_spec(name_or_path: str) -> dict:
    """The plan (a name in conf/study, or a path), checked against its schema (study_plan)."""
    from ltune_cli import study_plan

    path = Path(name_or_path)
    if not path.suffix:
        path = conf_dir() / "study" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise LtuneError(f"study plan {path} not found; the plans are in {conf_dir() / 'study'}.")
    return study_plan.load(path, conf_dir())


def root_of(spec: dict) -> Path:
    from ltune_cli.paths import outputs_dir

    return outputs_dir() / "study" / spec["name"]


def read_yaml(path: Path):
    """A YAML file as a read-only OmegaConf node, parsed once per content: a stage's expansion reads
    the same conf files and run configs hundreds of times (`study status` went from 12 s to 3 s).
    Keyed by the text, not the path or mtime, so an edited file (however soon) or another conf
    folder is never answered from a stale parse."""
    return _parse_yaml(Path(path).read_text())


@lru_cache(maxsize=4096)
def _parse_yaml(text: str):
    from omegaconf import OmegaConf

    node = OmegaConf.create(text)
    OmegaConf.set_readonly(node, True)
    return node


def conf_file(group: str, name: str):
    return read_yaml(conf_dir() / group / f"{name}.yaml")


def _method_defaults(method: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(conf_file("method", method))


def _dataset_labels(dataset: str) -> list[str]:
    return list(conf_file("dataset", dataset).label_texts)


def primary_metric(dataset: str) -> str:
    return str(conf_file("dataset", dataset).get("primary_metric", "accuracy"))


def model_kind(model: str) -> str:
    """"encoder" | "decoder", from conf/model/<model>.yaml's arch.model_type."""
    from ltune_cli.models.families import FAMILIES, family_name

    arch = conf_file("model", model).get("arch") or {}
    return FAMILIES[family_name(arch.get("model_type"), where=f"conf/model/{model}.yaml")].kind


def _lr_overrides(method: str, scale: float, model: str) -> list[str]:
    """The method's own learning rates (conf/method/<m>.yaml: lr, head_lr, and decoder_lr on a
    decoder, the only kind that reads it) times `scale`: every method gets the same relative grid
    around its default, and the absolute values land in config.yaml."""
    d = _method_defaults(method)
    out = [f"method.lr={d['lr'] * scale:.6g}"]
    keys = ("head_lr", "decoder_lr") if model_kind(model) == "decoder" else ("head_lr",)
    for key in keys:
        if d.get(key) is not None:
            out.append(f"method.{key}={d[key] * scale:.6g}")
    return out


def _base(spec: dict, model: str, dataset: str, method: str) -> list[str]:
    return [f"model={model}", f"dataset={dataset}", f"method={method}", *spec.get("common", []),
            *spec.get("datasets", {}).get(dataset, []), *spec.get("models", {}).get(model, []),
            *spec.get("cell_overrides", {}).get(f"{model}/{dataset}", [])]


def cells(spec: dict):
    for model, datasets in spec["cells"].items():
        for dataset in datasets:
            yield model, dataset


def fmt(x: float) -> str:
    return f"{x:g}"


def pilot_jobs(spec: dict) -> list[Job]:
    p = spec["pilot"]
    jobs = []
    for cell in p["cells"]:
        model, dataset = cell.split("/")
        for method in spec["methods"]:
            ov = [*_base(spec, model, dataset, method), *p.get("overrides", []),
                  *(p.get("cell_overrides") or {}).get(cell, []),
                  f"dataset.holdout={spec['tune']['holdout'][dataset]}", "seed=0"]
            jobs.append(Job("pilot", model, dataset, method, "s0", ov, {}))
    return jobs


def borrowed(spec: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """(model, dataset) -> the tuned cell whose chosen values it uses: `tune.borrow` ("m/d": "m/d2"),
    for cells whose own grid does not fit the budget. Every method borrows alike (equal tuning)."""
    spec = spec.get("_full", spec)
    known = set(cells(spec))
    borrow = {tuple(c.split("/")): tuple(src.split("/")) for c, src in (spec["tune"].get("borrow") or {}).items()}
    for cell, src in borrow.items():
        if cell not in known or src not in known or src in borrow:
            raise LtuneError(f"study plan {spec['name']}: tune.borrow {'/'.join(cell)}: {'/'.join(src)} must map a "
                         f"cell of the plan to a cell tuned in it (model/dataset).")
    return borrow


def _tune_job(spec: dict, model: str, dataset: str, method: str, scale: float, P: int | None) -> Job:
    t = spec["tune"]
    tag = f"lr{fmt(scale)}" + (f"-P{P}" if P else "") + f"-s{t['seed']}"
    ov = [*_base(spec, model, dataset, method), *_lr_overrides(method, scale, model),
          f"dataset.holdout={t['holdout'][dataset]}", f"seed={t['seed']}", *t.get("overrides", [])]
    if P:
        ov.append(f"method.num_virtual_tokens={P}")
    if t.get("eval_limit"):
        ov.append(f"dataset.eval_limit={t['eval_limit']}")
    return Job("tune", model, dataset, method, tag, ov, {"lr_scale": scale, "num_virtual_tokens": P})


def _rank(res: dict) -> tuple | None:
    """How good a completed tune run is: its final primary metric on the held-out slice, ties (e.g.
    every run predicting the majority class: MCC 0) to the lower held-out validation loss."""
    final = res.get("final") or {}
    score, loss = final.get(res["primary_metric"]), final.get("val_loss")
    return None if score is None else (score, -loss if loss is not None else float("-inf"))


def _best(jobs: list[Job], root: Path, stale_ok: bool = False):
    """(rank, job, results) of the best completed job (the first in grid order on a tie), and the
    completed jobs."""
    best, completed = None, []
    for job in jobs:
        if (res := _done(job, root, stale_ok)) is None:
            continue
        completed.append(job)
        if (rank := _rank(res)) is not None and (best is None or rank > best[0]):
            best = (rank, job, res)
    return best, completed


def _edge(job: Job, jobs: list[Job]) -> str | None:
    """"below" / "above" where the job's learning-rate scale is the lowest / highest of the scales
    the jobs try (the best may lie beyond it), else None."""
    scales = sorted({j.values["lr_scale"] for j in jobs})
    s = job.values["lr_scale"]
    return None if len(scales) < 2 else "below" if s == scales[0] else "above" if s == scales[-1] else None


def tune_grid(spec: dict, root: Path | None = None, stale_ok: bool = False) -> dict[tuple, list[Job]]:
    """(model, dataset, method) -> its tune jobs: the grid (`tune.lr_scale` x, for the baselines,
    `tune.num_virtual_tokens`) and, with the run folders under root, its extensions: where every
    run so far has completed and the best sits at the lowest (highest) scale tried, the next scale
    of `tune.extend.below` (`.above`) at the best run's length P, until the best lies inside or the
    list is used up. Every method alike: one more run per step beyond an edge. Borrowing cells have
    none (`tune.borrow`)."""
    t = spec["tune"]
    extend = _extension(spec)
    lent = borrowed(spec)
    grid: dict = {}
    for model, dataset in cells(spec):
        if (model, dataset) in lent:
            continue
        for method in spec["methods"]:
            lengths = t.get("num_virtual_tokens", []) if method in ("prefix", "prompt") else []
            jobs = [_tune_job(spec, model, dataset, method, scale, P)
                    for scale in t["lr_scale"] for P in lengths or [None]]
            while root is not None:
                best, completed = _best(jobs, root, stale_ok)
                side = best and len(completed) == len(jobs) and _edge(best[1], jobs)
                tried = {j.values["lr_scale"] for j in jobs}
                beyond = [x for x in extend.get(side, []) if (x < min(tried) if side == "below" else x > max(tried))]
                if not side or not beyond:
                    break
                jobs.append(_tune_job(spec, model, dataset, method, beyond[0], best[1].values["num_virtual_tokens"]))
            grid[(model, dataset, method)] = jobs
    return grid


def _extension(spec: dict) -> dict[str, list[float]]:
    """`tune.extend`, checked: only `below` / `above`, each a list of scales beyond the grid on its
    side (a misspelt key or a scale inside the grid would silently extend nothing)."""
    extend = spec["tune"].get("extend") or {}
    grid = spec["tune"]["lr_scale"]
    for side, scales in extend.items():
        beyond = {"below": lambda x: x < min(grid), "above": lambda x: x > max(grid)}.get(side)
        if beyond is None or not isinstance(scales, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and beyond(x) for x in scales):
            raise LtuneError(f"study plan {spec['name']}: tune.extend.{side}: {scales!r} — give `below` and / or "
                             f"`above`, each a list of learning-rate scales beyond the grid ({', '.join(map(fmt, grid))}) "
                             "on that side, e.g. `extend: {below: [0.1], above: [10.0]}`.")
    return extend


def tune_jobs(spec: dict, root: Path | None = None, stale_ok: bool = False) -> list[Job]:
    """Every tune job, in grid order (with root: the extensions the finished runs call for)."""
    return [j for jobs in tune_grid(spec, root, stale_ok).values() for j in jobs]


def choose(spec: dict, root: Path, strict: bool = True, partial: bool = True,
           stale_ok: bool = False) -> dict[tuple[str, str, str], dict]:
    """(model, dataset, method) -> the values of the tune job with the best final primary metric on
    the held-out slice (`_rank`), among the grid and its extensions (`tune_grid`); `edge`: "below" /
    "above" where that is the lowest / highest scale of the completed runs; `tuning`: "running" where
    the grid (or its extension) still has runs to complete. A borrowing cell (`tune.borrow`)
    gets its source cell's values, marked `tuned_on`. strict: every tune run the plan's cells need
    must have completed; else partial: the best run so far of a grid still running, or not partial:
    only the choices of completed grids. stale_ok: a run made with other settings than the plan's
    counts as not completed (`study status` lists them) instead of being an error."""
    lent = borrowed(spec)
    need = {(*lent.get(cell, cell), method) for cell in cells(spec) for method in spec["methods"]}
    best: dict = {}  # source key -> values of its best run
    incomplete: set = set()  # source keys with a tune run still to complete
    for key, jobs in tune_grid(spec.get("_full", spec), root, stale_ok).items():
        if key not in need:
            continue
        top, completed = _best(jobs, root, stale_ok)
        if len(completed) < len(jobs):
            if strict:
                missing = next(j for j in jobs if j not in completed)
                raise LtuneError(f"tune run {missing.folder(root)} has not completed: run `python -m ltune_cli.study "
                                 f"run tune` first.")
            incomplete.add(key)
        if top is not None:
            rank, job, res = top
            loss = (res.get("final") or {}).get("val_loss")
            best[key] = {**job.values, "score": rank[0], "held_out_val_loss": loss, "edge": _edge(job, completed)}
            if len(completed) < len(jobs):
                best[key]["tuning"] = "running"  # partial: the best so far
    chosen = {}
    for cell in cells(spec):
        src = lent.get(cell, cell)
        for method in spec["methods"]:
            if (*src, method) in best and (partial or (*src, method) not in incomplete):
                values = dict(best[(*src, method)])
                if src != cell:
                    values["tuned_on"] = "/".join(src)
                chosen[(*cell, method)] = values
    return chosen


def _chosen_overrides(method: str, values: dict, model: str) -> list[str]:
    ov = _lr_overrides(method, values["lr_scale"], model)
    if values.get("num_virtual_tokens"):
        ov.append(f"method.num_virtual_tokens={values['num_virtual_tokens']}")
    return ov


def _seeds(spec: dict, stage: str, dataset: str, cell: str | None = None, variant: str | None = None) -> list[int]:
    """The stage's seeds for a dataset (`seeds_by_dataset`, else `seeds`); an ablation variant in a
    cell may run more (`ablate.seeds_by_cell`: a contrast between ablations that needs them)."""
    s = spec[stage]
    n = s.get("seeds_by_dataset", {}).get(dataset, s["seeds"])
    return list(range((s.get("seeds_by_cell") or {}).get(cell, {}).get(variant, n)))


def final_jobs(spec: dict, chosen: dict) -> list[Job]:
    jobs = []
    for model, dataset in cells(spec):
        for method in spec["methods"]:
            values = chosen.get((model, dataset, method))
            if values is None:  # its tune grid is still running (jobs_for with strict=False)
                continue
            for seed in _seeds(spec, "final", dataset):
                ov = [*_base(spec, model, dataset, method), *_chosen_overrides(method, values, model), f"seed={seed}"]
                jobs.append(Job("final", model, dataset, method, f"s{seed}", ov, dict(values)))
    return jobs


def _ablation(name: str, dataset: str) -> list[str]:
    if name == "labels_meaningless":  # "label zero", "label one", ...: no meaning, same shape
        k = len(_dataset_labels(dataset))
        return ["dataset.label_texts=[" + ",".join(f"label {NUMBER_WORDS[i]}" for i in range(k)) + "]"]
    if name == "labels_swapped":  # class i gets class i+1's text: the meaning points the wrong way
        texts = _dataset_labels(dataset)
        return ["dataset.label_texts=[" + ",".join(texts[1:] + texts[:1]) + "]"]
    if name == "variant_paper":
        return ["method.variant=paper"]
    if name == "warm_start_off":
        return ["method.init_from_label=false"]
    if name == "variant_paper_warm_start_off":  # A.5 without its warm start: weak by capacity or by its start?
        return _ablation("variant_paper", dataset) + _ablation("warm_start_off", dataset)
    if name == "pair_framing":  # a baseline scoring (text, label) pairs with random per-label tokens
        return ["method.pair_framing=true"]
    raise LtuneError(f"study plan: unknown ablation '{name}' (known: labels_meaningless, labels_swapped, "
                     f"variant_paper, warm_start_off, variant_paper_warm_start_off, pair_framing).")


def ablate_jobs(spec: dict, chosen: dict) -> list[Job]:
    a = spec["ablate"]
    jobs = []
    for cell in a["cells"]:
        model, dataset = cell.split("/")
        names = (a.get("only") or {}).get(cell)  # a cell may run some of the ablations only
        unknown = sorted(set(names or ()) - set(a["variants"]))
        if unknown:
            raise LtuneError(f"study plan {spec['name']}: ablate.only {cell} names {', '.join(unknown)}, not in "
                             f"ablate.variants ({', '.join(a['variants'])}).")
        for name, methods in a["variants"].items():
            if names is not None and name not in names:
                continue
            for method in methods:
                values = chosen.get((model, dataset, method))
                if values is None:
                    continue
                for seed in _seeds(spec, "ablate", dataset, cell, name):
                    ov = [*_base(spec, model, dataset, method), *_chosen_overrides(method, values, model),
                          *_ablation(name, dataset), f"seed={seed}"]
                    jobs.append(Job("ablate", model, dataset, method, f"{name}-s{seed}", ov,
                                    {**values, "ablation": name}))
    return jobs


def planned_jobs(spec: dict, stage: str, root: Path | None = None) -> list[Job]:
    """Every job the stage will have once tuning is done (their chosen values stand in as lr x1;
    tune: the grid and, with root, the extensions its finished runs have called for so far)."""
    if stage in ("pilot", "tune"):
        return pilot_jobs(spec) if stage == "pilot" else tune_jobs(spec, root, stale_ok=True)
    anything = {(m, d, meth): {"lr_scale": 1.0} for m, d in cells(spec) for meth in spec["methods"]}
    return final_jobs(spec, anything) if stage == "final" else ablate_jobs(spec, anything)


def jobs_for(spec: dict, stage: str, root: Path, strict: bool = True, stale_ok: bool = False) -> list[Job]:
    """The stage's jobs. Final and ablation jobs need the tune stage's choices: strict, every cell's
    tune grid must have completed; else only the cells whose grid has (reports of a study in progress)."""
    if stage == "pilot":
        return pilot_jobs(spec)
    if stage == "tune":
        return tune_jobs(spec, root, stale_ok)
    chosen = choose(spec, root, strict=strict, partial=False, stale_ok=stale_ok)
    return final_jobs(spec, chosen) if stage == "final" else ablate_jobs(spec, chosen)


def _completed(folder: Path) -> dict | None:
    try:
        res = runfolder.read_results(folder)
    except (OSError, ValueError):
        return None
    return res if res.get("status") == "completed" else None


#: Overrides that change what a run records along the way, not what it learns or scores at the end:
#: a completed run made with other values of these still stands.
BOOKKEEPING = frozenset({"train.eval_every", "train.curve_eval_limit", "train.log_every", "train.checkpoint_every",
                         "train.progress"})
GROUPS = {"model": "model.name", "dataset": "dataset.name", "method": "method.name"}


def _differences(job: Job, folder: Path) -> list[str]:
    """Where the run in `folder` was made with other settings than the plan now gives this job
    (its config.yaml against the job's overrides): "key: run has X, plan says Y"."""
    from omegaconf import OmegaConf

    try:
        stored = read_yaml(folder / "config.yaml")
    except OSError:
        return ["config.yaml: missing"]
    out = []
    for o in job.overrides:
        key, _ = o.split("=", 1)
        if key in BOOKKEEPING:
            continue
        want = _override_value(o)
        have = OmegaConf.select(stored, GROUPS.get(key, key), default=None)
        have = OmegaConf.to_container(have) if OmegaConf.is_config(have) else have
        if have != want:
            out.append(f"{key}: run has {have!r}, plan says {want!r}")
    return out


@lru_cache(maxsize=4096)
def _override_value(override: str):
    """The value of "a.b=v" as Hydra parses it (plain data; do not mutate)."""
    from omegaconf import OmegaConf

    key, _ = override.split("=", 1)
    value = OmegaConf.to_container(OmegaConf.from_dotlist([override]))
    for part in key.split("."):
        value = value[part]
    return value


def _done(job: Job, root: Path, stale_ok: bool = False) -> dict | None:
    """The job's results if its run completed with the settings the plan gives it now. A completed
    run made with other settings (the plan changed since) is an error, not a result: counting it
    would mix two configurations silently (stale_ok: None, as for a run not completed)."""
    folder = job.folder(root)
    res = _completed(folder)
    if res is not None and (diffs := _differences(job, folder)):
        if stale_ok:
            return None
        raise LtuneError(f"{folder} was run with other settings than conf/study's plan gives it now "
                         f"({'; '.join(diffs[:3])}): delete that folder to rerun it with the plan, or restore "
                         f"the plan.")
    return res


def _has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())


class _Stop:
    """The runs a `study run` has going, and the signal that stops it. Each run is a process of its
    own (its own session: a terminal's Ctrl-C reaches it only through here, once); a stop signal is
    passed on to every run going, which checkpoints and exits (engine._stop_signals: a second
    signal stops it at once), and no run starts after it. Without this, a SIGTERM left the runs
    going as orphans and Ctrl-C waited for every queued run of the stage."""

    def __init__(self):
        self.lock = threading.RLock()  # RLock: the handler runs in the main thread, wherever it was
        self.children: set = set()
        self.signal: str | None = None

    def start(self, argv: list[str], log: Path) -> subprocess.Popen | None:
        """Start the run, its command and output appended to `log`; None once stopping (no log line)."""
        with self.lock:
            if self.signal:
                return None
            with open(log, "a") as f:  # the run keeps its own copy of the file
                f.write(f"$ {' '.join(argv)}\n")
                f.flush()
                p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
            self.children.add(p)
            return p

    def wait(self, p: subprocess.Popen) -> int:
        try:
            return p.wait()
        finally:
            with self.lock:
                self.children.discard(p)

    def handler(self, signum, frame) -> None:
        with self.lock:
            self.signal = self.signal or signal.Signals(signum).name
            going = list(self.children)
        for p in going:
            try:
                p.send_signal(signum)
            except ProcessLookupError:
                pass

    def install(self) -> dict:
        """Handle the stop signals (main thread only); returns the handlers to restore."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self.handler) for s in runfolder.stop_signals()}  # as `ltune train`


def run_job(job: Job, root: Path, stop: _Stop | None = None) -> str:
    """Run (or resume) one job in a subprocess; its output goes to <folder>.log. Returns its status."""
    stop = stop or _Stop()
    folder = job.folder(root)
    if _done(job, root):
        return "skipped"
    if folder.exists() and (holder := runfolder.RunLock(folder).held_by()):
        # another `study run` (or a user's `ltune train`) writes it now: neither clean nor resume it
        return f"skipped, running elsewhere: {holder}"
    if folder.exists() and not _has_checkpoint(folder):
        shutil.rmtree(folder)  # an earlier attempt that left nothing to resume from
    argv = ([sys.executable, "-m", "ltune_cli", "train", "--resume", str(folder)] if folder.exists()
            else [sys.executable, "-m", "ltune_cli", "train", *job.overrides, f"out_dir={folder}"])
    folder.parent.mkdir(parents=True, exist_ok=True)
    p = stop.start(argv, folder.parent / f"{job.tag}.log")
    if p is None:
        return f"not started ({stop.signal})"
    rc = stop.wait(p)
    if rc == 0 and _done(job, root):
        return "completed"
    if stop.signal:
        return f"stopped by {stop.signal} (exit {rc}; the next `study run` resumes it, see {folder.parent / job.tag}.log)"
    return f"failed (exit {rc}, see {folder.parent / job.tag}.log)"


def _again(argv: list[str] | None, stage: str) -> str:
    """The command that runs the stage again (resuming its stopped runs), to paste into a shell."""
    import os
    import shlex

    exe = os.path.relpath(sys.executable)
    exe = sys.executable if exe.startswith("..") else exe
    return " ".join(shlex.quote(a) for a in [exe, "-m", "ltune_cli.study", *(argv or ["run", stage])])


def run_stage(spec: dict, stage: str, jobs_in_parallel: int = 2, dry: bool = False,
              argv: list[str] | None = None) -> int:
    """Run the stage's missing jobs. The tune stage's extensions (`tune_grid`) are known only once
    the runs before them have finished: a stage runs in rounds until no job is left to start.
    A stop signal (`_Stop`) checkpoints the runs going and ends the stage: exit 128 + the signal."""
    root = root_of(spec)
    t0, failed, started = time.time(), 0, set()
    stop = _Stop()
    previous = {} if dry else stop.install()
    try:
        while True:
            jobs = jobs_for(spec, stage, root)
            todo = [j for j in jobs if not _done(j, root) and j.folder(root) not in started]
            if not started:
                print(f"study {spec['name']}, stage {stage}: {len(jobs)} runs, {len(jobs) - len(todo)} done, "
                      f"{len(todo)} to run")
            elif todo and not stop.signal:
                print(f"{len(todo)} more: the learning-rate grid extended beyond an edge (tune.extend)", flush=True)
            if dry:
                for j in todo:
                    print("  ltune train " + " ".join(j.overrides) + f" out_dir={j.folder(root)}")
                return 0
            if stop.signal:
                stopped = sum(1 for j in jobs if j.folder(root) in started and not _done(j, root)
                              and j.folder(root).exists())
                print(f"stopped by {stop.signal}: no more runs started; {stopped} stopped where their last "
                      f"checkpoint is; `{_again(argv, stage)}` resumes them and runs the rest.", flush=True)
                return 128 + getattr(signal, stop.signal)
            if not todo:
                return 1 if failed else 0
            started |= {j.folder(root) for j in todo}
            with ThreadPoolExecutor(max_workers=jobs_in_parallel) as pool:
                for n, (job, status) in enumerate(zip(todo, pool.map(lambda j: run_job(j, root, stop), todo)), 1):
                    failed += status.startswith("failed")
                    if status.startswith("not started"):
                        continue  # queued when the stop signal came: the stop line below counts for them
                    print(f"[{n}/{len(todo)}] {job.folder(root).relative_to(root)}: {status} "
                          f"({time.time() - t0:.0f} s elapsed)", flush=True)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def machine_of(res: dict) -> str | None:
    """The CPU (and accelerator) that ran most of a run's steps (results.json "sittings"); None
    where that was not recorded (runs from before the key; steps of a checkpoint from before it)."""
    steps: dict = {}
    for sit in res.get("sittings") or []:
        m = sit.get("machine")
        name = None if m is None else m["cpu"] + (f" + {m['accelerator']}" if m.get("accelerator") else "")
        steps[name] = steps.get(name, 0) + sit["steps"][1] - sit["steps"][0]
    return max(steps, key=lambda k: steps[k]) if steps else None


def runs_table(spec: dict):
    """One row per completed run of every stage (pandas DataFrame): the per-run CSV's content."""
    import pandas as pd

    root = root_of(spec)
    rows = []
    for stage in STAGES:
        for job in jobs_for(spec, stage, root, strict=False):  # final / ablate: the cells whose tuning is done
            res = _done(job, root)
            if res is None:
                continue
            final = res.get("final") or {}
            rows.append({"stage": stage, "model": job.model, "dataset": job.dataset, "method": job.method,
                         "tag": job.tag, "seed": res["seed"], **job.values,
                         "steps": res["steps"], "trainable_params": res["trainable_params"],
                         "train_time_s": res["train_time_s"], "wall_time_s": res["wall_time_s"],
                         "eval_examples": res["eval_examples"], "machine": machine_of(res),
                         **{k: final.get(k) for k in ("accuracy", "mcc", "macro_f1", "val_loss", "pair_accuracy")},
                         "run_dir": str(job.folder(root).relative_to(root))})
    return pd.DataFrame(rows)


def _progress(job: Job, root: Path) -> tuple[int, float] | None:
    """(step, training seconds so far) of a run begun and not completed: its newest record with
    time_s (the whole run's, across sittings), or None."""
    try:
        recs = runfolder.read_metrics(job.folder(root))
    except (OSError, ValueError):  # not begun; a record half-written as a run is cut
        return None
    last = next((r for r in reversed(recs) if r.get("time_s") and r.get("step")), None)
    return (int(last["step"]), float(last["time_s"])) if last else None


def _max_steps(job: Job) -> int | None:
    steps = [_override_value(o) for o in job.overrides if o.startswith("train.max_steps=")]
    return steps[-1] if steps else None


def hours_left(spec: dict, root: Path) -> tuple[float, dict, dict]:
    """An estimate of the CPU hours (one-thread runs) the plan's runs still to complete will take:
    each the mean wall time of the completed runs most like it (`_alike`), less the share of its
    steps a run going has done. Where no completed run is like it, the seconds per step of the
    runs going most like it (their newest records). Also, per cell ("model/dataset"), how many
    runs took that second estimate, and how many have neither (not counted)."""
    full = spec.get("_full", spec)
    times: dict = {}
    rates: dict = {}  # seconds per step of the runs going
    progress: dict = {}  # folder -> (step, seconds) of each run going, read once
    for stage in STAGES:
        for job in planned_jobs(full, stage, root):
            res = _completed(job.folder(root))
            if res is not None and res.get("wall_time_s"):
                for key in _alike(job)[0]:
                    times.setdefault(key, []).append(res["wall_time_s"])
            elif res is None and (done := _progress(job, root)):
                progress[job.folder(root)] = done
                for key in _alike(job)[0]:
                    rates.setdefault(key, []).append(done[1] / done[0])
    hours, unknown, going = 0.0, Counter(), Counter()
    for stage in STAGES:
        for job in planned_jobs(spec, stage, root):
            if _completed(job.folder(root)) is not None:
                continue
            steps, done = _max_steps(job), progress.get(job.folder(root))
            share = 1 - min(done[0] / steps, 1) if done and steps else 1
            like = next((times[k] for k in _alike(job)[1] if k in times), None)
            rate = next((rates[k] for k in _alike(job)[1] if k in rates), None)
            if like is not None:
                hours += share * sum(like) / len(like) / 3600
            elif rate is not None and steps:
                hours += share * steps * sum(rate) / len(rate) / 3600
                going[f"{job.model}/{job.dataset}"] += 1
            else:
                unknown[f"{job.model}/{job.dataset}"] += 1
    return hours, unknown, going


def left_text(hours: float, unknown: dict, going: dict | None = None) -> str:
    """`study status`'s last line: hours_left's estimate, and the runs it cannot estimate yet."""
    cells = ", ".join(f"{c}: {n}" for c, n in unknown.items())
    from_going = ("; " + ", ".join(f"{c}: {n}" for c, n in going.items()) + " with none completed yet: the seconds "
                  "per step of the runs going") if going else ""
    estimate = (f"left: about {hours:.1f} CPU hours (each run still to complete: the mean wall time of the completed "
                f"runs most like it, less its share of steps done{from_going})")
    if not unknown:
        return estimate if hours else "left: nothing; every planned run has completed"
    if not hours:
        return f"left: no estimate yet; {sum(unknown.values())} runs to complete, with none like them completed ({cells})"
    return f"{estimate}; not counted, {sum(unknown.values())} runs with none like them yet ({cells})"


def _alike(job: Job) -> tuple[list[tuple], list[tuple]]:
    """The groups a completed job's wall time counts in, and the groups a job still to run takes
    its estimate from, most alike first: its stage, model, dataset and method (an ablation: the
    same ablation, then the method's final runs), then the model, dataset and method in any stage,
    then the model and dataset."""
    own = (job.stage, job.model, job.dataset, job.method, job.values.get("ablation"))
    broad = [(job.model, job.dataset, job.method), (job.model, job.dataset)]
    final = [("final", job.model, job.dataset, job.method, None)] if job.stage == "ablate" else []
    return [own, *broad], [own, *final, *broad]


def only(spec: dict, models: str | None = None, datasets: str | None = None,
         methods: str | None = None) -> dict:
    """The plan restricted to some models / datasets / methods (comma lists; None keeps all): a
    sitting can run part of a stage, e.g. the encoder's baselines while the decoder is studied."""
    def pick(values, wanted):
        return list(values) if wanted is None else [v for v in values if v in wanted.split(",")]

    for kind, wanted, known in (("model", models, spec["cells"]), ("method", methods, spec["methods"]),
                                ("dataset", datasets, {d for ds in spec["cells"].values() for d in ds})):
        unknown = sorted(set((wanted or "").split(",")) - set(known) - {""})
        if unknown:
            raise LtuneError(f"study plan {spec['name']}: no {kind} {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))}).")
    out = {**spec, "_full": spec.get("_full", spec)}
    out["cells"] = {m: pick(ds, datasets) for m, ds in spec["cells"].items() if m in pick(spec["cells"], models)}
    out["methods"] = pick(spec["methods"], methods)
    if not any(out["cells"].values()):  # e.g. --models smollm2_135m --datasets cola: not a cell of the plan
        cells = "; ".join(f"{m}: {', '.join(ds)}" for m, ds in spec["cells"].items())
        raise LtuneError(f"study plan {spec['name']}: no cell has model {models or 'any'} and dataset "
                         f"{datasets or 'any'} (its cells: {cells}).")
    keep = {f"{m}/{d}" for m, ds in out["cells"].items() for d in ds}
    for stage in ("pilot", "ablate"):
        if stage in spec:
            out[stage] = {**spec[stage], "cells": [c for c in spec[stage]["cells"] if c in keep]}
    if "ablate" in spec:
        out["ablate"]["variants"] = {k: pick(v, methods) for k, v in spec["ablate"]["variants"].items()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ltune_cli.study", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("run", "status", "chosen", "results"))
    p.add_argument("stage", nargs="?", choices=STAGES)
    p.add_argument("--plan", default="reproduce_cpu", help="conf/study/<plan>.yaml or a path")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each on hardware.num_threads=1)")
    p.add_argument("--dry-run", action="store_true", help="print the commands still to run")
    p.add_argument("--drop-missing", action="store_true",
                   help="results: write the report even if runs its CSV lists are no longer there (moved out)")
    for kind in ("models", "datasets", "methods"):
        p.add_argument(f"--{kind}", default=None, help=f"only these {kind} (comma list; default: all)")
    a = p.parse_args(argv)
    try:
        if a.jobs < 1:
            raise LtuneError(f"--jobs {a.jobs}: runs at a time must be 1 or more.")
        picked = [f"--{k}" for k in ("models", "datasets", "methods") if getattr(a, k) is not None]
        if a.command == "results" and picked:
            raise LtuneError(f"results reports the whole plan: {', '.join(picked)} choose what `run` and `status` "
                             f"cover, and a report of part of the study would replace the whole one; drop them, or "
                             f"give a plan with fewer cells and its own results paths (--plan <file>).")
        spec = only(load_spec(a.plan), a.models, a.datasets, a.methods)
        if a.command == "run":
            if a.stage is None:
                raise LtuneError("say which stage to run: pilot, tune, final or ablate.")
            return run_stage(spec, a.stage, a.jobs, a.dry_run, argv=sys.argv[1:] if argv is None else argv)
        if a.command == "results":
            from ltune_cli import study_report as sr

            md, csv = sr.outputs_of(spec)
            readme = (spec.get("results") or {}).get("readme")
            sr.write_results(spec, md, csv, readme=Path(readme) if readme else None, drop_missing=a.drop_missing)
            print(f"wrote {md}, {csv} and the figures beside it" + (f"; the results block of {readme}" if readme else ""))
            return 0
        if a.command == "chosen":
            print(json.dumps({"/".join(k): v for k, v in choose(spec, root_of(spec), strict=False).items()},
                             indent=1))
            return 0
        root = root_of(spec)
        for stage in STAGES:
            # final / ablate: the cells whose tuning is done; a stale tune run is listed, not an error
            jobs = jobs_for(spec, stage, root, strict=False, stale_ok=True)
            planned = len(planned_jobs(spec, stage, root))
            done = [j for j in jobs if _completed(j.folder(root)) is not None]
            stale = [j for j in done if _differences(j, j.folder(root))]
            print(f"{stage}: {len(done) - len(stale)}/{planned} runs completed"
                  + (f" ({planned - len(jobs)} wait for their cell's tuning)" if len(jobs) < planned else "")
                  + (f"; {len(stale)} more made with other settings than the plan's, to delete and rerun: "
                     + ", ".join(str(j.folder(root)) for j in stale) if stale else ""))
        print(left_text(*hours_left(spec, root)))
        return 0
    except LtuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a stage's runs (reading the plan, the report): nothing to save
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
