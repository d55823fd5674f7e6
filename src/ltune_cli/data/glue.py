"""The vendored tasks: GLUE SST-2, CoLA, RTE (data/glue/<task>/{train,dev}.tsv) and Reuters R8
(data/r8/{train,dev}.tsv, 8 news topics); the eval split is dev.tsv.

What differs between tasks is data in `TASKS`, not code: the folder, the raw label strings
(position = class id) and, for a header-less file (CoLA), the fixed column layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ltune_cli.data.examples import Columns, fixed_labels, to_examples
from ltune_cli.data.splits import Example
from ltune_cli.data.tables import read_delimited
from ltune_cli.errors import LtuneError, suggest
from ltune_cli.paths import glue_dir, r8_dir


@dataclass(frozen=True)
class GlueTask:
    raw_labels: tuple[str, ...]  # raw_labels[i] is the file's spelling of class i
    layout: tuple[str, ...] | None = None  # column names of a header-less file; None: line 1 is the header
    folder: Callable[[str], Path] = lambda name: glue_dir() / name  # task name -> its folder
    hint: str = "set LTUNE_GLUE_DIR to a folder holding SST-2/, CoLA/, RTE/ or reinstall ltune-cli"


TASKS = {
    "SST-2": GlueTask(raw_labels=("0", "1")),
    "CoLA": GlueTask(raw_labels=("0", "1"), layout=("source", "label", "original_label", "sentence")),
    "RTE": GlueTask(raw_labels=("entailment", "not_entailment")),
    # Reuters R8 (data/r8/README.md): classes in order of train frequency
    "R8": GlueTask(raw_labels=("earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"),
                   folder=lambda name: r8_dir(), hint="reinstall ltune-cli (data/r8 ships with it)"),
}
SPLIT_FILES = {"train": "train.tsv", "eval": "dev.tsv"}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def find_task(name) -> str:
    """The TASKS key for `name`, ignoring case and punctuation ('sst2' -> 'SST-2')."""
    if name is None:
        raise LtuneError(f"dataset.kind=glue needs dataset.task (one of the vendored {', '.join(TASKS)}).")
    by_key = {_key(t): t for t in TASKS}
    found = by_key.get(_key(str(name)))
    if found is None:
        raise LtuneError(f"config key 'dataset.task': unknown vendored task '{name}' (vendored: "
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
        path = task.folder(name) / filename
        if not path.is_file():
            raise LtuneError(f"vendored data file {path} is missing; {task.hint}.")
        splits[split] = to_examples(read_delimited(path, "tsv", layout=task.layout), columns, resolve)
        source[split] = str(path.resolve())
    return splits["train"], splits["eval"], source
