"""Read run folders into `Run` records and refuse inputs that cannot be compared.

Validation happens here, once, so every later stage can trust its inputs: a folder
with a missing file or a foreign results schema, or two runs of one dataset evaluated
on different example sets, fails with one `LtuneError` line naming the folder(s).

Experiments are told apart by their whole config.yaml (`experiment_config`), never by
method/model/dataset names alone: runs that differ in any key but the seed (and the
bookkeeping keys of `IGNORED_KEYS`) land in different rows or columns, labelled by the
keys that differ (`label_experiments`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltune_cli.errors import LtuneError
from ltune_cli.runfolder import REQUIRED_FILES, RESULT_KEYS, SCHEMA, find_run_dirs

# Variants that are a method's default and so get no suffix in the row label.
DEFAULT_VARIANTS = ("", "per_token", "default", None)
#: Config keys that never change a run's numbers: the seed (the thing averaged over), where
#: and under which name the run was written, display and checkpoint cadence, cluster requests.
IGNORED_KEYS = frozenset({
    "seed", "out_dir", "name", "resume", "train.progress", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "hardware.partition", "hardware.time_min", "hardware.cpus_per_task",
    "hardware.mem_gb", "hardware.gpus_per_node",
})
#: Key prefixes that belong to a table column (dataset x model); every other key belongs to the row.
COLUMN_PREFIXES = ("dataset.", "model.")
#: File stems too generic to name a dataset=files dataset (then its folder names it).
GENERIC_STEMS = frozenset({"train", "dev", "eval", "test", "valid", "validation", "val", "data", "training"})


@dataclass
class Run:
    """One run folder, as far as the report needs it."""

    path: Path
    name: str
    method: str
    variant: str  # "" for the method's default variant
    model: str
    dataset: str
    seed: int | None
    status: str
    error: str | None
    primary_metric: str
    final: dict[str, Any] | None
    eval_examples: int | None
    trainable_params: int | None
    total_params: int | None
    created: str
    evals: list[dict] = field(default_factory=list)  # the "kind": "eval" lines of metrics.jsonl
    predictions: dict | None = None  # {"gold", "pred", "label_texts"} or None when absent
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml flattened to dotted keys
    settings: tuple[tuple[str, str], ...] = ()  # the row keys that tell this run's experiment apart

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def row(self) -> tuple[str, str, tuple]:
        """The table row this run belongs to: (method, variant, settings)."""
        return (self.method, self.variant, self.settings)

    def curve(self) -> list[dict]:
        """The eval records on one set of texts. With train.curve_eval_limit the records before the
        last step score the first N eval texts and the last one all of them; here the last record
        holds the scores of those same N texts: its curve_* keys, or (runs from before them) the
        accuracy recomputed from predictions.json, and no other score."""
        n = next((e["eval_examples"] for e in self.evals if e.get("eval_examples")), None)
        if n is None or self.evals[-1].get("eval_examples"):
            return self.evals
        last = self.evals[-1]
        if last.get("curve_eval_examples") == n:
            same = {k[len("curve_"):]: v for k, v in last.items() if k.startswith("curve_")}
        elif self.predictions:
            pairs = list(zip(self.predictions["gold"][:n], self.predictions["pred"][:n], strict=True))
            same = {"accuracy": sum(g == p for g, p in pairs) / n, "eval_examples": n}
        else:
            same = {"eval_examples": n}  # nothing known on those texts at the last step
        return [*self.evals[:-1], {"kind": last.get("kind", "eval"), "step": last["step"], **same}]

    def curve_final(self, key: str):
        """`key` at the end of the curve, on the curve's texts: the final score when the curve scores
        every text, else the last record of `curve()` (None when not known there)."""
        curve = self.curve()
        return (self.final or {}).get(key) if curve is self.evals else curve[-1].get(key)

    def experiment(self, prefixes: tuple[str, ...] | None = None) -> tuple:
        """The config that defines the experiment (all keys but IGNORED_KEYS), optionally only some."""
        return tuple(sorted((k, v) for k, v in self.config.items()
                            if k not in IGNORED_KEYS and (prefixes is None or k.startswith(prefixes))))


def row_label(row: tuple) -> str:
    """'lt_prefix', 'lt_prefix (paper)', 'prefix (train.lr=0.1)': only what is not the default shows."""
    method, variant, settings = (*row, ())[:3]
    parts = ([variant] if variant else []) + [f"{k}={v}" for k, v in settings]
    return f"{method} ({', '.join(parts)})" if parts else method


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': '0.1'}: values as YAML would print them (lists too)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: _show(d)}


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_show(x) for x in v) + "]"
    return str(v)


def _read_config(folder: Path) -> dict[str, Any]:
    """config.yaml flattened; absent (a run that failed early) -> {}."""
    import yaml

    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LtuneError(f"run folder {folder}: config.yaml is not valid YAML ({str(e).splitlines()[0]})") from None
    if cfg is not None and not isinstance(cfg, dict):
        raise LtuneError(f"run folder {folder}: config.yaml is not a mapping of config keys")
    return flatten(cfg or {})


def data_name(config: dict[str, Any], fallback: str) -> str:
    """A dataset=files run is named after its data: dataset.name if the user set one, else the
    eval file's stem ('imdb_dev'), or its folder when the stem is generic ('data/imdb/dev.csv' -> 'imdb')."""
    if config.get("dataset.kind") != "files" or config.get("dataset.name", fallback) != "files":
        return fallback
    path = config.get("dataset.eval_path") or config.get("dataset.train_path")
    if not path or path == "null":
        return fallback
    p = Path(path)
    if p.stem.lower() not in GENERIC_STEMS or not p.parent.name:
        return p.stem
    return p.parent.name


def _read_json(path: Path, folder: Path) -> Any:
    """Parse one JSON file, turning a parse error into a user error naming the folder."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LtuneError(f"run folder {folder}: {path.name} is not valid JSON ({e.msg}, line {e.lineno})") from e


def _read_evals(folder: Path) -> list[dict]:
    """The eval records of metrics.jsonl; a corrupt line names its line number."""
    evals = []
    with open(folder / "metrics.jsonl", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise LtuneError(f"run folder {folder}: metrics.jsonl line {lineno} is not valid JSON") from e
            if isinstance(rec, dict) and rec.get("kind") == "eval" and rec.get("step") is not None:
                evals.append(rec)
    return evals


def _check_results(res: Any, folder: Path) -> None:
    """Schema and required keys of results.json; a completed run must also carry its numbers."""
    if not isinstance(res, dict):
        raise LtuneError(f"run folder {folder}: results.json is not a JSON object")
    if res.get("schema") != SCHEMA:
        raise LtuneError(
            f"run folder {folder}: results.json has schema {res.get('schema')!r}, expected {SCHEMA!r}",
            hint="re-run it with this ltune version",
        )
    missing = [k for k in RESULT_KEYS if k not in res]
    if missing:
        raise LtuneError(f"run folder {folder}: results.json lacks key(s) {', '.join(missing)}")
    run = res.get("run")
    if not isinstance(run, dict):
        raise LtuneError(f"run folder {folder}: results.json 'run' is not an object")
    lacking = [k for k in ("method", "model", "dataset") if not run.get(k)]
    if lacking:
        raise LtuneError(f"run folder {folder}: results.json 'run' lacks {', '.join(lacking)}")
    if res.get("status") == "completed":
        final = res.get("final")
        if not isinstance(final, dict):
            raise LtuneError(f"run folder {folder}: completed run has no 'final' metrics in results.json")
        pm = res.get("primary_metric")
        if pm not in final:
            raise LtuneError(f"run folder {folder}: 'final' in results.json lacks the primary metric {pm!r}")


def _check_predictions(pred: Any, folder: Path, eval_examples: int | None) -> dict:
    """gold/pred must be equally long integer lists matching eval_examples."""
    if not isinstance(pred, dict) or not isinstance(pred.get("gold"), list) or not isinstance(pred.get("pred"), list):
        raise LtuneError(f"run folder {folder}: predictions.json lacks 'gold'/'pred' lists")
    if len(pred["gold"]) != len(pred["pred"]):
        raise LtuneError(
            f"run folder {folder}: predictions.json has {len(pred['gold'])} gold but {len(pred['pred'])} pred labels"
        )
    if eval_examples is not None and len(pred["gold"]) != eval_examples:
        raise LtuneError(
            f"run folder {folder}: predictions.json has {len(pred['gold'])} examples, "
            f"results.json says eval_examples={eval_examples}"
        )
    return pred


def load_run(folder: str | Path) -> Run:
    """Read and validate one run folder.

    Failed runs only need results.json (they may die before writing anything else);
    completed runs need every file of `runfolder.REQUIRED_FILES`. predictions.json is
    optional: without it the L-Tuning difference falls back to a seed-only bootstrap.
    """
    folder = Path(folder)
    res = _read_json(folder / "results.json", folder)
    _check_results(res, folder)
    completed = res["status"] == "completed"
    if completed:
        missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
        if missing:
            raise LtuneError(f"run folder {folder}: missing {', '.join(missing)}")
    run = res["run"]
    seed = res.get("seed", run.get("seed"))
    eval_examples = res.get("eval_examples")
    predictions = None
    if completed and (folder / "predictions.json").is_file():
        predictions = _check_predictions(_read_json(folder / "predictions.json", folder), folder, eval_examples)
    variant = run.get("variant")
    config = _read_config(folder)
    return Run(
        path=folder,
        name=str(run.get("name") or folder.name),
        method=str(run["method"]),
        variant="" if variant in DEFAULT_VARIANTS else str(variant),
        model=str(run["model"]),
        dataset=data_name(config, str(run["dataset"])),
        seed=None if seed is None else int(seed),
        status=str(res["status"]),
        error=res.get("error"),
        primary_metric=str(res.get("primary_metric") or "accuracy"),
        final=res.get("final") if completed else None,
        eval_examples=None if eval_examples is None else int(eval_examples),
        trainable_params=res.get("trainable_params"),
        total_params=res.get("total_params"),
        created=str(res.get("created") or ""),
        evals=_read_evals(folder) if completed else [],
        predictions=predictions,
        config=config,
    )


def collect_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Every run folder under the given paths, each once, in a stable order."""
    if not paths:
        raise LtuneError("compare needs at least one run, sweep or outputs folder")
    seen: dict[Path, Path] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise LtuneError(f"compare: {p} does not exist")
        dirs = find_run_dirs(p) if p.is_dir() else []
        if not dirs:
            raise LtuneError(f"compare: no run folders (results.json) at or below {p}")
        for d in dirs:
            seen.setdefault(d.resolve(), d)
    return sorted(seen.values(), key=lambda d: str(d))


def dedupe(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """Keep the newest completed run per experiment config and seed.

    Two folders of one config and seed (a re-run, or overlapping inputs) would count one
    seed twice in the mean and make seed pairing ambiguous. Runs whose configs differ in
    anything but IGNORED_KEYS are different experiments and are all kept.
    """
    keep: dict[tuple, Run] = {}
    notes = []
    for r in runs:
        if not r.completed:
            continue
        key = (r.method, r.variant, r.model, r.dataset, r.seed, r.experiment())
        old = keep.get(key)
        if old is None:
            keep[key] = r
            continue
        newer, older = (r, old) if r.created >= old.created else (old, r)
        keep[key] = newer
        notes.append(f"{older.path} superseded by newer run {newer.path} (identical config and seed)")
    kept = set(map(id, keep.values()))
    return [r for r in runs if not r.completed or id(r) in kept], notes


def _differing(configs: list[tuple]) -> list[str]:
    """Keys whose value is not the same in every one of `configs` (a key absent counts as a value)."""
    dicts = [dict(c) for c in configs]
    keys = sorted(set().union(*dicts))
    return [k for k in keys if len({d.get(k, "<unset>") for d in dicts}) > 1]


def label_experiments(runs: list[Run]) -> None:
    """Give every run a column and row that no other experiment shares.

    Columns: runs with the same dataset and model names but different dataset.*/model.* keys
    get those keys appended to the dataset label ('sst2 (dataset.eval_limit=100)'). Rows:
    among runs of one method (and variant) in one column, the other keys that differ become
    the row's settings ('prefix (train.lr=0.1)'); keys that differ only between columns
    (say a per-dataset train.max_steps) do not split a row. Failed runs keep their names:
    they enter no table, and may have died before writing config.yaml.
    """
    runs = [r for r in runs if r.completed]
    by_col: dict[tuple[str, str], set] = {}
    for r in runs:
        by_col.setdefault((r.dataset, r.model), set()).add(r.experiment(COLUMN_PREFIXES))
    for r in runs:
        configs = sorted(by_col[(r.dataset, r.model)])
        if len(configs) > 1:
            mine = dict(r.experiment(COLUMN_PREFIXES))
            shown = ", ".join(f"{k}={mine.get(k, '<unset>')}" for k in _differing(configs))
            r.dataset = f"{r.dataset} ({shown})"
    row_keys: dict[tuple[str, str], set[str]] = {}
    groups: dict[tuple, set] = {}
    for r in runs:
        groups.setdefault((r.method, r.variant, r.dataset, r.model), set()).add(r.experiment())
    for (method, variant, _, _), configs in groups.items():
        row_keys.setdefault((method, variant), set()).update(_differing(sorted(configs)))
    for r in runs:
        keys = sorted(row_keys.get((r.method, r.variant), ()))
        r.settings = tuple((k, r.config.get(k, "<unset>")) for k in keys)


def check_eval_sets(runs: list[Run]) -> None:
    """All completed runs of one dataset must share their eval examples.

    Per-example pairing and the table's columns assume it; a different eval_limit
    (or a different split) silently changes what a number means.
    """
    first: dict[str, Run] = {}
    for r in runs:
        if not r.completed:
            continue
        ref = first.setdefault(r.dataset, r)
        if ref is r:
            continue
        if ref.eval_examples != r.eval_examples:
            raise LtuneError(
                f"compare: runs {ref.name} ({ref.path}) and {r.name} ({r.path}) of dataset {r.dataset} were "
                f"evaluated on different example sets ({ref.eval_examples} vs {r.eval_examples} examples)",
                hint="compare runs with the same dataset.eval_limit",
            )
        if ref.predictions is not None and r.predictions is not None and ref.predictions["gold"] != r.predictions["gold"]:
            raise LtuneError(
                f"compare: runs {ref.name} ({ref.path}) and {r.name} ({r.path}) of dataset {r.dataset} "
                "have different gold labels in predictions.json (different eval examples or order)"
            )
        if ref.predictions is None and r.predictions is not None:
            first[r.dataset] = r  # prefer a reference that has gold labels to check against


def load_runs(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """Read, validate, dedupe, label and cross-check every run under `paths`; return (runs, notes)."""
    runs = [load_run(d) for d in collect_run_dirs(paths)]
    runs, notes = dedupe(runs)
    label_experiments(runs)
    check_eval_sets(runs)
    return runs, notes
