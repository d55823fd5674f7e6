"""The vendored GLUE tasks (data/glue/<task>/{train,dev}.tsv; the eval split is dev.tsv).

What differs between tasks is data in `TASKS`, not code: the raw label strings (position =
class id) and, for a header-less file (CoLA), the fixed column layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltune_cli.data.examples import Columns, fixed_labels, to_examples
from ltune_cli.data.splits import Example
from ltune_cli.data.tables import read_delimited
from ltune_cli.errors import LtuneError, suggest
from ltune_cli.paths import glue_dir


@dataclass(frozen=True)
class GlueTask:
    raw_labels: tuple[str, ...]  # raw_labels[i] is the file's spelling of class i
    layout: tuple[str, ...] | None = None  # column names of a header-less file; None: line 1 is the header


TASKS = {
    "SST-2": GlueTask(raw_labels=("0", "1")),
    "CoLA": GlueTask(raw_labels=("0", "1"), layout=("source", "label", "original_label", "sentence")),
    "RTE": GlueTask(raw_labels=("entailment", "not_entailment")),
}
SPLIT_FILES = {"train": "train.tsv", "eval": "dev.tsv"}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def find_task(name) -> str:
    """The TASKS key for `name`, ignoring case and punctuation ('sst2' -> 'SST-2')."""
    if name is None:
        raise LtuneError(f"dataset.kind=glue needs dataset.task (one of {', '.join(TASKS)}).")
    by_key = {_key(t): t for t in TASKS}
    found = by_key.get(_key(str(name)))
    if found is None:
        raise LtuneError(f"config key 'dataset.task': unknown GLUE task '{name}' (vendored: "
                         f"{', '.join(TASKS)}).{suggest(name, TASKS)}")
    return found


def load_glue(cfg, columns: Columns, label_texts: list[str]) -> tuple[list[Example], list[Example], dict]:
    name = find_task(cfg.task)
    task = TASKS[name]
    if len(label_texts) != len(task.raw_labels):
        raise LtuneError(f"config key 'dataset.label_texts' has {len(label_texts)} label texts but {name} has "
                         f"{len(task.raw_labels)} classes (raw labels {', '.join(task.raw_labels)}).")
    resolve = fixed_labels(task.raw_labels)
    source: dict = {"kind": "glue", "task": name}
    splits = {}
    for split, filename in SPLIT_FILES.items():
        path = glue_dir() / name / filename
        if not path.is_file():
            raise LtuneError(f"GLUE file {path} is missing; set LTUNE_GLUE_DIR to a folder holding "
                             f"{'/, '.join(TASKS)}/ or reinstall ltune-cli.")
        splits[split] = to_examples(read_delimited(path, "tsv", layout=task.layout), columns, resolve)
        source[split] = str(path.resolve())
    return splits["train"], splits["eval"], source
