"""The two shapes every data source is turned into, so the engine never sees a file format."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One labelled input. `label` is a class id: an index into `Splits.label_texts`."""

    text: str
    label: int
    text_pair: str | None = None


@dataclass
class Splits:
    """A dataset ready to train on: both splits, the verbalizers and where it all came from.

    `source` is recorded in the run folder so a result can be traced back to its files.
    """

    name: str
    label_texts: list[str]
    train: list[Example]
    eval: list[Example]
    primary_metric: str
    source: dict
