"""Fuzzing load_splits(kind=files): any file content gives valid Splits or one LtuneError, nothing else.

Bounded (about 250 examples in all, no deadline) so that the suite stays fast.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltune_cli.config import DatasetConfig
from ltune_cli.data import Example, load_splits
from ltune_cli.errors import LtuneError

FUZZ = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
LABEL_SETS = [["negative", "positive"], ["1", "2", "3"], ["entailment", "not entailment"]]
EXTENSIONS = [".csv", ".tsv", ".jsonl", ".json"]
COLUMN_NAMES = ["text", "label", "pair", "Text", "lbl", ""]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def cfg_for(path: Path, label_texts: list[str], pair: bool) -> DatasetConfig:
    return DatasetConfig(name="fuzz", kind="files", task=None, train_path=str(path), eval_path=str(path),
                         text_column="text", label_column="label", text_pair_column="pair" if pair else None,
                         label_texts=label_texts)


def load_or_error(cfg: DatasetConfig):
    """The property: valid Splits, or a one-line LtuneError; any other exception fails the test."""
    try:
        splits = load_splits(cfg)
    except LtuneError as e:
        assert str(e).strip() and len(str(e).splitlines()) == 1, repr(str(e))
        return None
    assert splits.train and splits.eval
    for ex in splits.train + splits.eval:
        assert isinstance(ex, Example)
        assert isinstance(ex.text, str) and ex.text.strip()
        ex.text.encode("utf-8")  # valid Unicode: a tokenizer can take it
        assert type(ex.label) is int and 0 <= ex.label < len(splits.label_texts)
        assert (ex.text_pair is None) == (cfg.text_pair_column is None)
        assert ex.text_pair is None or (isinstance(ex.text_pair, str) and ex.text_pair.strip())
    return splits


PREFIXES = [b"", b"text,label\n", b"text\tlabel\n", b'{"text": "a", "label": 0}\n', b"\xef\xbb\xbf"]


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=300), ext=st.sampled_from(EXTENSIONS),
       label_texts=st.sampled_from(LABEL_SETS), pair=st.booleans())
def test_arbitrary_bytes(workdir, prefix, body, ext, label_texts, pair):
    path = workdir / f"bytes{ext}"
    path.write_bytes(prefix + body)
    load_or_error(cfg_for(path, label_texts, pair))


FIELD = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "positive", "Not_Entailment", "neutral", " 1 ", "", '"', "\t"]),
    st.text(alphabet=st.sampled_from('ab ,;\t"\'\n\r\\\x00é\u2028'), max_size=8),
    st.text(max_size=6),
)


HEADER = st.one_of(st.sampled_from([["text", "label"], ["label", "pair", "text"]]),
                   st.lists(st.sampled_from(COLUMN_NAMES) | st.text(max_size=4), min_size=1, max_size=4))


@FUZZ
@given(header=HEADER,
       rows=st.lists(st.lists(FIELD, max_size=5), max_size=6), sep=st.sampled_from(["\t", ",", ";"]),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), ext=st.sampled_from([".csv", ".tsv"]),
       label_texts=st.sampled_from(LABEL_SETS), pair=st.booleans())
def test_delimited_shapes(workdir, header, rows, sep, newline, ext, label_texts, pair):
    path = workdir / f"shapes{ext}"
    path.write_text(newline.join(sep.join(r) for r in [header, *rows]), encoding="utf-8", newline="")
    load_or_error(cfg_for(path, label_texts, pair))


JSON_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 4), st.floats(allow_nan=True), st.text(max_size=8),
    st.sampled_from(["positive", "1", "NEGATIVE", "not-entailment", "\ud800x"]), st.lists(st.integers(), max_size=2),
)
RECORD = st.dictionaries(st.sampled_from(COLUMN_NAMES), JSON_VALUE, max_size=4)
LINE = st.one_of(RECORD.map(json.dumps), st.sampled_from(["", "[1]", "{", '"x"', "{'text': 1}", "[" * 3000]))


@FUZZ
@given(lines=st.lists(LINE, max_size=6), label_texts=st.sampled_from(LABEL_SETS), pair=st.booleans())
def test_jsonl_shapes(workdir, lines, label_texts, pair):
    path = workdir / "shapes.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    load_or_error(cfg_for(path, label_texts, pair))


GOOD_TEXT = st.text(min_size=1, max_size=12).filter(lambda t: t.strip())


@settings(deadline=None, max_examples=60)
@given(rows=st.lists(st.tuples(GOOD_TEXT, st.integers(0, 1), st.booleans()), min_size=1, max_size=8),
       fmt=st.sampled_from(["csv", "tsv", "jsonl"]))
def test_valid_files_round_trip(workdir, rows, fmt):
    """Well-formed files load back exactly (texts stripped), whether labels are ids or texts."""
    label_texts = ["negative", "positive"]
    if fmt == "tsv":
        rows = [(t.replace("\t", " ").replace("\n", " ").replace("\r", " "), y, as_text) for t, y, as_text in rows]
        rows = [r for r in rows if r[0].strip()] or [("x", 0, False)]
    records = [{"text": t, "label": label_texts[y] if as_text else y} for t, y, as_text in rows]
    path = workdir / f"valid.{fmt}"
    path.write_text(render(records, fmt), encoding="utf-8", newline="")
    splits = load_or_error(cfg_for(path, label_texts, pair=False))
    assert splits is not None
    assert splits.train == [Example(t.strip(), y) for t, y, _ in rows]


def render(records: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in records)
    if fmt == "tsv":
        return "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in records)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows([r["text"], r["label"]] for r in records)
    return out.getvalue()
