"""A dataset from the Hugging Face hub (dataset=hub); needs internet and `pip install -e '.[hub]'`.

`datasets` is imported only here and only when asked for: it is an optional dependency and
slow to import. Anything it raises becomes one `LtuneError` that points to dataset=files,
the way to work offline.
"""

from __future__ import annotations

import itertools

from ltune_cli.data.examples import Columns, to_examples_together
from ltune_cli.data.splits import Example
from ltune_cli.data.tables import Table, one_line, sentence
from ltune_cli.errors import LtuneError, suggest

OFFLINE_FIX = ("To work offline, use dataset=files with local CSV/TSV/JSONL files "
               "(dataset.train_path=... dataset.eval_path=...).")
SPLIT_KEYS = {"train": ("train_split", "train_limit"), "eval": ("eval_split", "eval_limit")}


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise LtuneError("dataset=hub needs the `datasets` package: pip install -e '.[hub]'. "
                         + OFFLINE_FIX) from None
    return datasets


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return one_line(text.splitlines()[0]) if text else type(e).__name__


def _load(datasets, hub_id: str, hub_config: str | None):
    where = f"'{hub_id}'" + (f" (config '{hub_config}')" if hub_config else "")
    try:
        return datasets.load_dataset(hub_id, hub_config)
    except OSError as e:  # ConnectionError, TimeoutError, requests/hf_hub errors, not-found when offline
        raise LtuneError(f"could not load hub dataset {where}: {sentence(_first_line(e))} The Hugging Face "
                         f"hub is unreachable (offline?) or the dataset id is wrong. {OFFLINE_FIX}") from None
    except Exception as e:  # noqa: BLE001 - a third-party loader: any failure is one user-facing line
        raise LtuneError(f"could not load hub dataset {where}: {sentence(_first_line(e))} Check "
                         f"dataset.hub_id and dataset.hub_config. {OFFLINE_FIX}") from None


def _table(ds, hub_id: str, split_key: str, split: str, limit: int | None) -> Table:
    if split not in ds:
        raise LtuneError(f"config key 'dataset.{split_key}': hub dataset '{hub_id}' has no split '{split}' "
                         f"(splits: {', '.join(ds)}).{suggest(split, list(ds))}")
    data = ds[split]
    rows = [(i, dict(r)) for i, r in enumerate(itertools.islice(data, limit), 1)]
    return Table(f"hub:{hub_id}[{split}]", "hub", list(data.column_names), rows, unit="row")


def load_hub(cfg, columns: Columns, label_texts: list[str]) -> tuple[list[Example], list[Example], dict]:
    """Only the first train_limit / eval_limit rows are read (a hub split can be huge)."""
    datasets = _import_datasets()
    if not cfg.hub_id:
        raise LtuneError("dataset=hub needs dataset.hub_id, e.g. dataset.hub_id=glue dataset.hub_config=sst2.")
    hub_id = str(cfg.hub_id)
    ds = _load(datasets, hub_id, None if cfg.hub_config is None else str(cfg.hub_config))
    tables = [_table(ds, hub_id, split_key, str(getattr(cfg, split_key)), getattr(cfg, limit_key))
              for split_key, limit_key in SPLIT_KEYS.values()]
    train, eval_ = to_examples_together(tables, columns, label_texts)  # labels read for both splits together
    source = {"kind": "hub", "train": hub_id, "eval": hub_id, "hub_config": cfg.hub_config,
              "train_split": str(cfg.train_split), "eval_split": str(cfg.eval_split)}
    return train, eval_, source
