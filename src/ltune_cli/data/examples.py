"""Records -> `Example`s: pick the configured columns, check the texts, map labels to class ids.

Shared by every source (GLUE, local files, the hub) so that the same mistake gets the same
message whatever the file format. Label mapping is a pluggable `resolve(table, column, values)`:
GLUE uses its fixed raw vocabulary (`fixed_labels`); user files accept ids or label texts, read for
train and eval together (`read_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ltune_cli.data.splits import Example
from ltune_cli.data.tables import Table, show
from ltune_cli.errors import LtuneError, suggest

Resolver = Callable[[Table, str, list[tuple[int, object]]], list[int]]


@dataclass(frozen=True)
class Columns:
    """Which fields hold the text, the optional second text and the label."""

    text: str
    label: str
    pair: str | None = None

    @classmethod
    def from_cfg(cls, cfg) -> Columns:
        def name(key: str, optional: bool = False) -> str | None:
            value = getattr(cfg, key)
            if optional and (value is None or value == ""):  # `dataset.text_pair_column=` unsets it
                return None
            if not isinstance(value, str) or not value.strip():
                raise LtuneError(f"config key 'dataset.{key}' must name a column, got {show(value)}.")
            return value.strip()

        return cls(name("text_column"), name("label_column"), name("text_pair_column", optional=True))

    def keyed(self) -> list[tuple[str, str]]:
        """(config key, column) for each column in use, for messages that say what to set."""
        pairs = [("dataset.text_column", self.text), ("dataset.label_column", self.label)]
        if self.pair is not None:
            pairs.insert(1, ("dataset.text_pair_column", self.pair))
        return pairs


def missing_column(table: Table, column: str, key: str, found: Sequence, line: int | None = None) -> LtuneError:
    """No such column: list what is there, suggest the nearest, diagnose a wrong delimiter."""
    word = "key" if table.fmt == "jsonl" else "column"
    names = [str(c)[:100] for c in list(found)[:50]]
    listed = ", ".join(show(c) for c in names[:20]) or "none"
    hint = table.delimiter_hint(table.header_line, "header line") if line is None else ""
    nearest = suggest(column, names)
    if hint or not nearest.startswith(" Did you mean"):  # not " Valid: ...": `listed` says it
        nearest = ""
    return table.error(f"no {word} {show(column)} ({word}s found: {listed}).{nearest}{hint}",
                       line=line, fix=f"set {key}=<{word}> to the one that holds it")


def check_columns(table: Table, columns: Columns) -> None:
    """For files with a header, check once up front (and blame the header, not line 2)."""
    if table.fixed_columns:
        for key, column in columns.keyed():
            if column not in table.columns:
                raise missing_column(table, column, key, table.columns)


def _field(table: Table, n: int, record: dict, column: str, key: str):
    try:
        return record[column]
    except KeyError:
        raise missing_column(table, column, key, list(record), line=n) from None


def _text(table: Table, n: int, record: dict, column: str, key: str) -> str:
    """The stripped text; empty, non-text or unencodable values are errors at their line."""
    value = _field(table, n, record, column, key)
    if not isinstance(value, str):
        raise table.error(f"expected a text, got {show(value)}", line=n, column=column)
    text = value.strip()
    if not text:
        raise table.error("empty text", line=n, column=column, fix="fill it in or delete the line")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise table.error("the text holds an unpaired surrogate escape (\\udXXX), which is not "
                              "valid Unicode", line=n, column=column) from None
    return text


def _records(table: Table, columns: Columns) -> tuple[list[tuple[str, str | None]], list[tuple[int, object]]]:
    """Every record's (text, pair) and (line, raw label); the whole table is checked, first error wins."""
    if not table.rows:
        what = "only a header line, no examples" if table.header_line is not None else "no examples"
        raise table.error(what, fix="add one example per line")
    check_columns(table, columns)
    pair_key = "dataset.text_pair_column"
    texts, raw_labels = [], []
    for n, record in table.rows:
        text = _text(table, n, record, columns.text, "dataset.text_column")
        pair = None if columns.pair is None else _text(table, n, record, columns.pair, pair_key)
        texts.append((text, pair))
        raw_labels.append((n, _field(table, n, record, columns.label, "dataset.label_column")))
    return texts, raw_labels


def read_texts(table: Table, keyed: Sequence[tuple[str, str]]) -> list[tuple[str, ...]]:
    """Unlabelled records (`ltune predict`): each row's texts in the columns of `keyed` ((the
    option or config key that names it, column) pairs), checked as a dataset's texts are."""
    if not table.rows:
        what = "only a header line, no texts" if table.header_line is not None else "no texts"
        raise table.error(what, fix="add one text per line")
    if table.fixed_columns:
        for key, column in keyed:
            if column not in table.columns:
                raise missing_column(table, column, key, table.columns)
    return [tuple(_text(table, n, record, column, key) for key, column in keyed) for n, record in table.rows]


def _examples(texts, ids) -> list[Example]:
    return [Example(text, label, pair) for (text, pair), label in zip(texts, ids, strict=True)]


def to_examples(table: Table, columns: Columns, resolve: Resolver) -> list[Example]:
    """Every record of `table` as an Example, labels mapped by `resolve` (a fixed vocabulary)."""
    texts, raw_labels = _records(table, columns)
    return _examples(texts, resolve(table, columns.label, raw_labels))


def to_examples_together(tables: Sequence[Table], columns: Columns, label_texts: Sequence[str]) -> list[list[Example]]:
    """The splits of one dataset (train, eval) as Examples, their labels read together
    (`read_labels`): one reading of ids vs. label texts for every file, never one per file."""
    records = [_records(table, columns) for table in tables]
    groups = [(table, raw) for table, (_, raw) in zip(tables, records, strict=True)]
    ids = read_labels(label_texts, groups, columns.label)
    return [_examples(texts, i) for (texts, _), i in zip(records, ids, strict=True)]


def normalise(label: str) -> str:
    """Lowercase, '_' and '-' as spaces, whitespace collapsed: 'Not_Entailment' ~ 'not entailment'."""
    return " ".join(label.lower().replace("_", " ").replace("-", " ").split())


def as_id(value) -> int | None:
    """An int, an integral float or a string of ASCII digits, as an int; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.isascii() and s.isdigit() and len(s) <= 18:
            return int(s)
    return None


def fixed_labels(raw_labels: Sequence[str]) -> Resolver:
    """A fixed raw vocabulary (GLUE): raw_labels[i] is class i, nothing else is accepted."""
    ids = {raw: i for i, raw in enumerate(raw_labels)}

    def resolve(table: Table, column: str, values: list[tuple[int, object]]) -> list[int]:
        out = []
        for n, value in values:
            i = ids.get(value.strip()) if isinstance(value, str) else None
            if i is None:
                valid = ", ".join(show(r) for r in raw_labels)
                raise table.error(f"label {show(value)} is not one of {valid}", line=n, column=column)
            out.append(i)
        return out

    return resolve


def read_labels(label_texts: Sequence[str], groups: Sequence[tuple[Table, list[tuple[int, object]]]],
                column: str) -> list[list[int]]:
    """User files: a label is a class id (0..K-1) or a label text (exact, else normalised),
    decided once for all the files of a dataset (train and eval together).

    Every value a label text: all read as texts. Every value a class id: all read as ids.
    Otherwise ids and texts may mix only where no value means one class as an id and
    another as a text (that happens when label texts are digits, e.g. star ratings
    '1'..'5'); a value that is neither is an error at its file and line, and so is one that
    does not fit the reading of the other values (a stray '0' among '1'..'5').
    """
    k = len(label_texts)
    exact = {t: i for i, t in enumerate(label_texts)}
    loose: dict[str, int] = {}
    for i, t in enumerate(label_texts):
        loose.setdefault(normalise(t), i)
    texts = ", ".join(show(t) for t in label_texts)

    def text_id(value) -> int | None:
        if not isinstance(value, str):
            return None
        s = value.strip()
        i = exact.get(s)
        return i if i is not None else loose.get(normalise(s))

    def class_id(value) -> int | None:
        i = as_id(value)
        return i if i is not None and 0 <= i < k else None

    read = [[(n, value, text_id(value), class_id(value)) for n, value in values] for _, values in groups]
    every = [r for rows in read for r in rows]
    for (table, _), rows in zip(groups, read, strict=True):
        for n, value, t, c in rows:
            if t is None and c is None:
                raise table.error(f"label {show(value)} is neither a class id 0..{k - 1} nor a label text "
                                  f"({texts})", line=n, column=column,
                                  fix="fix the value, or set dataset.label_texts to the labels the file uses")
    if all(t is not None for _, _, t, _ in every):
        return [[t for _, _, t, _ in rows] for rows in read]
    if all(c is not None for _, _, _, c in every):
        return [[c for _, _, _, c in rows] for rows in read]
    if not any(t is not None and c is not None and t != c for _, _, t, c in every):
        return [[c if c is not None else t for _, _, t, c in rows] for rows in read]
    # Digit label texts and a mix: read as the majority does, and blame the first value that does not fit.
    as_texts = sum(t is not None for _, _, t, _ in every) >= sum(c is not None for _, _, _, c in every)
    files = " and ".join(str(table.source) for table, _ in groups)
    for (table, _), rows in zip(groups, read, strict=True):
        for n, value, t, c in rows:
            if (t if as_texts else c) is None:
                what = f"not a label text ({texts})" if as_texts else f"not a class id 0..{k - 1}"
                other = "label texts" if as_texts else "class ids"
                raise table.error(f"label {show(value)} is {what}, while the other labels of {files} are "
                                  f"read as {other}; with digit label texts ids and texts cannot mix",
                                  line=n, column=column, fix=f"write every label as one of {other}")
    raise AssertionError("unreachable: some value fits neither reading")
