"""Your own CSV / TSV / JSON-lines files (dataset=files): dataset.train_path and dataset.eval_path.

The eval split is never carved out of the training file: silently splitting would make
results depend on a hidden seed and leak nothing-but-confusion into comparisons.
"""

from __future__ import annotations

from pathlib import Path

from ltune_cli.data.examples import Columns, to_examples_together
from ltune_cli.data.splits import Example
from ltune_cli.data.tables import FORMATS, read_table
from ltune_cli.errors import LtuneError

PATH_KEYS = {"train": "train_path", "eval": "eval_path"}


def _path(cfg, split: str) -> Path:
    """The configured file for `split`, checked: set, a known extension, an existing file."""
    key = PATH_KEYS[split]
    raw = getattr(cfg, key)
    if raw is None or not str(raw).strip():
        extra = " (ltune does not split the training file for you)" if split == "eval" else ""
        raise LtuneError(f"dataset=files needs dataset.{key}: set dataset.{key}=<file.csv|.tsv|.jsonl>{extra}.")
    path = Path(str(raw)).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise LtuneError(f"dataset.{key}: {path}: unknown file type '{path.suffix or '(none)'}'; use one of "
                         f"{', '.join(FORMATS)} (.json is read as JSON lines).")
    if not path.exists():
        raise LtuneError(f"dataset.{key}: file {path} not found"
                         f"{'' if path.is_absolute() else f' (relative paths start at {Path.cwd()})'}.")
    if not path.is_file():
        raise LtuneError(f"dataset.{key}: {path} is not a file.")
    return path


def load_files(cfg, columns: Columns, label_texts: list[str]) -> tuple[list[Example], list[Example], dict]:
    paths = {split: _path(cfg, split) for split in PATH_KEYS}  # check both before reading either
    # Labels are read for both files together: one file cannot read '1' as a text, the other as an id.
    train, eval_ = to_examples_together([read_table(paths["train"]), read_table(paths["eval"])], columns, label_texts)
    source = {"kind": "files", **{split: str(path.resolve()) for split, path in paths.items()}}
    return train, eval_, source
