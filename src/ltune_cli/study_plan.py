"""A study plan (conf/study/<name>.yaml), read and checked before anything runs.

Its shape is an OmegaConf structured config (`Plan` below): a misspelt key (`seeds_by_datset`) or a
value of the wrong type is an error naming the file and the key, never a key silently ignored (RTE
would have run 3 seeds instead of 5) or a KeyError later. Then the names it refers to are checked:
models, datasets and methods have a conf file, every cell a plan section names is one of the plan's
cells, every dataset has a held-out slice. Each error is one line with the fix (`LtuneError`).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltune_cli.errors import LtuneError, suggest


@dataclass
class Results:  # where `study results` writes; None: study_report.outputs_of's defaults, no README block
    md: str | None = None
    csv: str | None = None
    readme: str | None = None


@dataclass
class Pilot:
    cells: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    cell_overrides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Tune:
    holdout: dict[str, int]  # dataset -> held-out train texts the tune runs score
    lr_scale: list[float]
    seed: int = 0
    overrides: list[str] = field(default_factory=list)
    extend: dict[str, Any] = field(default_factory=dict)  # below / above: study._extension checks them
    num_virtual_tokens: list[int] = field(default_factory=list)
    borrow: dict[str, str] = field(default_factory=dict)
    eval_limit: int | None = None


@dataclass
class Final:
    seeds: int = 3
    seeds_by_dataset: dict[str, int] = field(default_factory=dict)


@dataclass
class Ablate:
    cells: list[str] = field(default_factory=list)
    seeds: int = 3
    seeds_by_dataset: dict[str, int] = field(default_factory=dict)
    seeds_by_cell: dict[str, dict[str, int]] = field(default_factory=dict)  # cell -> variant -> seeds
    variants: dict[str, list[str]] = field(default_factory=dict)
    only: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Plan:
    name: str
    cells: dict[str, list[str]]  # model -> datasets
    methods: list[str]
    tune: Tune
    results: Results | None = None
    common: list[str] = field(default_factory=list)
    datasets: dict[str, list[str]] = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)
    cell_overrides: dict[str, list[str]] = field(default_factory=dict)
    pilot: Pilot = field(default_factory=Pilot)
    final: Final = field(default_factory=Final)
    ablate: Ablate = field(default_factory=Ablate)


_SECTIONS = {"": Plan, "results": Results, "pilot": Pilot, "tune": Tune, "final": Final, "ablate": Ablate}


def load(path: Path, conf_dir: Path) -> dict:
    """The plan at `path` as a plain dict with every key of `Plan` (defaults filled in), checked."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

    try:
        raw = OmegaConf.load(path)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as e:  # YAML syntax
        mark = getattr(e, "problem_mark", None)  # yaml's position of the fault
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LtuneError(f"study plan {path}: cannot read it as YAML ({where}{what}); fix the file.") from None
    if not OmegaConf.is_dict(raw):
        raise LtuneError(f"study plan {path}: the file must be a mapping of keys (name, cells, methods, tune, ...).")
    try:
        plan = OmegaConf.merge(OmegaConf.structured(Plan), raw)
        spec = OmegaConf.to_container(plan, resolve=True, throw_on_missing=True)
    except ConfigKeyError as e:
        key = str(e.full_key or e.key)
        section, _, last = key.rpartition(".")
        fields = getattr(_SECTIONS.get(section.split(".")[0] if section else ""), "__dataclass_fields__", {})
        raise LtuneError(f"study plan {path}: unknown key '{key}'.{suggest(last, fields)} Fix or remove it (every "
                         "key a plan takes is in conf/study/reproduce_cpu.yaml, commented).") from None
    except MissingMandatoryValue as e:
        raise LtuneError(f"study plan {path}: key '{e.full_key}' is missing; every plan needs name, cells, "
                         "methods, tune.holdout and tune.lr_scale (see conf/study/reproduce_cpu.yaml).") from None
    except OmegaConfBaseException as e:
        why = str(e).strip().splitlines()[0].rstrip(".")
        raise LtuneError(f"study plan {path}: key '{e.full_key}': {why}; give it the type the plan takes "
                         "(see conf/study/reproduce_cpu.yaml).") from None
    _check_names(spec, path, conf_dir)
    return spec


def _check_names(spec: dict, path: Path, conf_dir: Path) -> None:
    """The models, datasets and methods a plan names have a conf file (a misspelt name in an override
    section would otherwise be an override silently applied to nothing); the cells that make jobs
    (pilot, ablate) are cells of the plan. tune.borrow is checked where it is read (study.borrowed),
    tune.extend too (study._extension)."""
    def fail(key: str, what: str, fix: str) -> None:
        raise LtuneError(f"study plan {path}: key '{key}': {what}; {fix}")

    known = {group: sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))  # each conf folder listed once
             for group in ("model", "dataset", "method")}

    def check(group: str, name: str, key: str) -> None:
        if name not in known[group]:
            fail(key, f"no {group} '{name}' in {conf_dir / group}",
                 f"use one of its files' names.{suggest(name, known[group])}")

    if not spec["cells"]:
        fail("cells", "no cells", "give at least one model with its datasets, e.g. `cells: {minilm: [sst2]}`.")
    if not spec["methods"]:
        fail("methods", "no methods", "list the methods to compare, e.g. `methods: [prefix, lt_prefix]`.")
    for model, datasets in spec["cells"].items():
        check("model", model, "cells")
        for dataset in datasets:
            check("dataset", dataset, f"cells.{model}")
    for method in spec["methods"]:
        check("method", method, "methods")
    for model in spec["models"]:
        check("model", model, f"models.{model}")
    for key, names in (("datasets", spec["datasets"]), ("tune.holdout", spec["tune"]["holdout"]),
                       ("final.seeds_by_dataset", spec["final"]["seeds_by_dataset"]),
                       ("ablate.seeds_by_dataset", spec["ablate"]["seeds_by_dataset"])):
        for dataset in names:
            check("dataset", dataset, f"{key}.{dataset}")
    cells = {f"{m}/{d}" for m, ds in spec["cells"].items() for d in ds}
    for key, names in (("cell_overrides", spec["cell_overrides"]), ("pilot.cell_overrides", spec["pilot"]["cell_overrides"]),
                       ("ablate.only", spec["ablate"]["only"])):
        for cell in names:
            model, _, dataset = cell.partition("/")
            check("model", model, f"{key}.{cell}")
            check("dataset", dataset, f"{key}.{cell}")
    for key, names in (("pilot.cells", spec["pilot"]["cells"]), ("ablate.cells", spec["ablate"]["cells"])):
        for cell in names:
            if cell not in cells:
                fail(key, f"'{cell}' is not a cell of the plan", f"name one of {', '.join(sorted(cells))} "
                     f"(model/dataset), or add it to cells.{suggest(cell, cells)}")
    datasets = {d for ds in spec["cells"].values() for d in ds}
    if missing := sorted(datasets - set(spec["tune"]["holdout"])):
        fail("tune.holdout", f"no held-out slice for {', '.join(missing)}",
             "give each dataset of the plan its number of held-out train texts, e.g. `holdout: {sst2: 500}`.")
    for key, n in [("final.seeds", spec["final"]["seeds"]), ("ablate.seeds", spec["ablate"]["seeds"]),
                   *((f"final.seeds_by_dataset.{d}", n) for d, n in spec["final"]["seeds_by_dataset"].items()),
                   *((f"ablate.seeds_by_dataset.{d}", n) for d, n in spec["ablate"]["seeds_by_dataset"].items()),
                   *((f"ablate.seeds_by_cell.{c}.{v}", n) for c, vs in spec["ablate"]["seeds_by_cell"].items()
                     for v, n in vs.items()),
                   *((f"tune.holdout.{d}", n) for d, n in spec["tune"]["holdout"].items())]:
        if n < 1:
            fail(key, f"{n}", "it must be at least 1.")
    if not spec["tune"]["lr_scale"] or any(x <= 0 for x in spec["tune"]["lr_scale"]):
        fail("tune.lr_scale", f"{spec['tune']['lr_scale']}", "give one or more positive scales, e.g. [0.3, 1.0, 3.0].")
    for cell, variants in spec["ablate"]["seeds_by_cell"].items():
        if cell not in spec["ablate"]["cells"]:
            fail(f"ablate.seeds_by_cell.{cell}", "not one of ablate.cells",
                 f"name one of {', '.join(spec['ablate']['cells'])}.{suggest(cell, spec['ablate']['cells'])}")
        for variant in variants:
            if variant not in spec["ablate"]["variants"]:
                fail(f"ablate.seeds_by_cell.{cell}.{variant}", "not one of ablate.variants",
                     f"name one of {', '.join(spec['ablate']['variants'])}.{suggest(variant, spec['ablate']['variants'])}")
    for name, methods in spec["ablate"]["variants"].items():
        if stray := [m for m in methods if m not in spec["methods"]]:
            fail(f"ablate.variants.{name}", f"{', '.join(stray)} not among the plan's methods",
                 f"name some of {', '.join(spec['methods'])}.")
