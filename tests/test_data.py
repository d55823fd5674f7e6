"""Data loading: the vendored GLUE tasks, local files, the hub's error path, and every bad input."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ltune_cli.config import DatasetConfig
from ltune_cli.data import Example, Splits, load_splits
from ltune_cli.errors import LtuneError
from ltune_cli.paths import conf_dir, glue_dir, r8_dir

# Split sizes and label counts published in data/glue/README.md: task -> split -> {class id: count}
GLUE_COUNTS = {
    "sst2": {"train": {1: 37569, 0: 29780}, "eval": {1: 444, 0: 428}},
    "cola": {"train": {1: 6023, 0: 2528}, "eval": {1: 721, 0: 322}},
    "rte": {"train": {0: 1249, 1: 1241}, "eval": {0: 146, 1: 131}},
}


def dataset_cfg(name: str, **overrides):
    """conf/dataset/<name>.yaml on the DatasetConfig schema, as `compose` would build it."""
    base = OmegaConf.structured(DatasetConfig)
    return OmegaConf.merge(base, OmegaConf.load(conf_dir() / "dataset" / f"{name}.yaml"), overrides)


def files_cfg(train: Path, eval_: Path | None = None, **kw) -> DatasetConfig:
    kw.setdefault("text_column", "text")
    return DatasetConfig(name="files", kind="files", task=None, train_path=str(train),
                         eval_path=str(eval_ if eval_ is not None else train), **kw)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def error_of(cfg, *words: str) -> str:
    """Load, expect a one-line LtuneError whose message contains every word (case-insensitive)."""
    with pytest.raises(LtuneError) as info:
        load_splits(cfg)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"
    return message


# --- the vendored GLUE tasks ---------------------------------------------------------------------


def test_glue_sha256sums_match_the_files():
    root = glue_dir()
    listed = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    assert set(listed) == {p.relative_to(root).as_posix() for p in root.glob("*/*.tsv")}
    for name, digest in listed.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name


@pytest.fixture(scope="module")
def glue_splits() -> dict[str, Splits]:
    """Each GLUE task loaded once, through its conf/dataset YAML (the engine's path)."""
    return {name: load_splits(dataset_cfg(name).copy()) for name in GLUE_COUNTS}


@pytest.mark.parametrize("name", sorted(GLUE_COUNTS))
def test_glue_split_sizes_and_label_counts(glue_splits, name):
    splits = glue_splits[name]
    for split, counts in GLUE_COUNTS[name].items():
        examples = getattr(splits, split)
        assert len(examples) == sum(counts.values())
        assert Counter(e.label for e in examples) == counts
        assert all(isinstance(e, Example) and e.text and e.text == e.text.strip() for e in examples)
    assert splits.name == name
    assert splits.label_texts == list(dataset_cfg(name).label_texts)
    assert splits.source["kind"] == "glue" and splits.source["eval"].endswith("dev.tsv")


def test_glue_texts_and_pairs(glue_splits):
    rte, sst2, cola = glue_splits["rte"], glue_splits["sst2"], glue_splits["cola"]
    assert all(e.text_pair for e in rte.train + rte.eval)
    first = rte.train[0]
    assert first == Example("No Weapons of Mass Destruction Found in Iraq Yet.", 1,
                            "Weapons of Mass Destruction Found in Iraq.")
    assert all(e.text_pair is None for e in sst2.train + cola.train)
    assert cola.train[0].text == "Our friends won't buy this analysis, let alone the next one we propose."
    assert sst2.eval[0] == Example("it 's a charming and often affecting journey .", 1)
    assert cola.primary_metric == "mcc"


def test_glue_limits_keep_the_first_examples(glue_splits):
    limited = load_splits(dataset_cfg("cola", train_limit=10, eval_limit=3))
    assert limited.train == glue_splits["cola"].train[:10]
    assert limited.eval == glue_splits["cola"].eval[:3]


# --- Reuters R8 (data/r8/README.md): 8 topics, classes in order of train frequency -------------
R8_COUNTS = {"train": [2840, 1596, 253, 251, 206, 190, 108, 41], "eval": [1083, 696, 121, 75, 87, 81, 36, 10]}


def test_r8_sha256sums_sizes_and_label_counts():
    root = r8_dir()
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    splits = load_splits(dataset_cfg("r8"))
    for split, counts in R8_COUNTS.items():
        examples = getattr(splits, split)
        assert Counter(e.label for e in examples) == dict(enumerate(counts))
        assert all(e.text and e.text_pair is None for e in examples)
    assert len(splits.label_texts) == 8 and splits.label_texts[0] == "earnings"
    assert splits.eval[0].label == 3 and splits.eval[0].text.startswith("asian exporters fear damage")


# --- dataset.holdout: tuning on a fixed slice of train, never on dev ------------------------------
def test_holdout_is_a_fixed_slice_of_train_disjoint_from_training():
    full = load_splits(dataset_cfg("rte"))
    tuned = load_splits(dataset_cfg("rte", holdout=200))
    assert len(tuned.eval) == 200 and len(tuned.train) == len(full.train) - 200
    key = lambda e: (e.text, e.text_pair, e.label)  # noqa: E731
    assert {key(e) for e in tuned.eval} | {key(e) for e in tuned.train} == {key(e) for e in full.train}
    assert not {key(e) for e in tuned.eval} & {key(e) for e in tuned.train}
    assert not {key(e) for e in tuned.eval} & {key(e) for e in full.eval}  # dev is never seen
    assert load_splits(dataset_cfg("rte", holdout=200)).eval == tuned.eval  # the same draw every time
    assert tuned.eval != full.train[:200] and "holdout" in tuned.source["eval"]
    limited = load_splits(dataset_cfg("rte", holdout=200, train_limit=50, eval_limit=20))
    assert limited.train == tuned.train[:50] and limited.eval == tuned.eval[:20]


def test_holdout_larger_than_train_is_an_error():
    error_of(dataset_cfg("rte", holdout=5000), "dataset.holdout", "5000", "2490")


def test_glue_task_name_ignores_case_and_punctuation():
    assert load_splits(DatasetConfig(kind="glue", task="cola", eval_limit=1)).source["task"] == "CoLA"


def test_glue_unknown_task():
    error_of(DatasetConfig(kind="glue", task="SST-3"), "dataset.task", "SST-3", "Did you mean 'SST-2'")
    error_of(DatasetConfig(kind="glue", task="MRPC"), "MRPC", "SST-2", "CoLA", "RTE")
    error_of(DatasetConfig(kind="glue", task=None), "dataset.task")


def test_glue_label_text_count_must_match_classes():
    error_of(dataset_cfg("rte", label_texts=["yes", "no", "maybe"]), "dataset.label_texts", "3", "2 classes")


def test_glue_wrong_column_lists_the_header():
    error_of(dataset_cfg("sst2", text_column="sentense"), "train.tsv", "'sentense'", "'sentence'",
             "dataset.text_column")
    error_of(dataset_cfg("cola", text_column="text"), "CoLA", "'text'", "original_label")


def test_glue_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LTUNE_GLUE_DIR", str(tmp_path))
    error_of(dataset_cfg("sst2"), "train.tsv", "missing", "LTUNE_GLUE_DIR")


def test_glue_bad_raw_label(tmp_path, monkeypatch):
    (tmp_path / "SST-2").mkdir()
    write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\ngood\t1\nbad\tneg\n")
    write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    monkeypatch.setenv("LTUNE_GLUE_DIR", str(tmp_path))
    error_of(dataset_cfg("sst2"), "train.tsv", "line 3", "'neg'", "'0', '1'")


# --- local files -------------------------------------------------------------------------------


def test_files_csv_with_class_ids(tmp_path):
    train = write(tmp_path / "train.csv", 'text,label\ngreat film,1\n"bad, really bad",0\n"said ""meh""",0\n')
    splits = load_splits(files_cfg(train))
    assert splits.train == [Example("great film", 1), Example("bad, really bad", 0), Example('said "meh"', 0)]
    assert splits.source == {"kind": "files", "train": str(train.resolve()), "eval": str(train.resolve())}


def test_files_tsv_with_label_texts_and_quotes(tmp_path):
    train = write(tmp_path / "train.tsv", 'label\ttext\npositive\t"great" film\nNegative\tit\'s "bad\n')
    splits = load_splits(files_cfg(train))
    assert splits.train == [Example('"great" film', 1), Example('it\'s "bad', 0)]


def test_files_jsonl_with_pairs_and_normalised_texts(tmp_path):
    rows = [{"premise": "A man sleeps.", "hypothesis": "A man is awake.", "y": "Not_Entailment"},
            {"premise": "It rains.", "hypothesis": "It is wet.", "y": "entailment"},
            {"premise": "x", "hypothesis": "y", "y": 1}]
    train = write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    cfg = files_cfg(train, text_column="premise", text_pair_column="hypothesis", label_column="y",
                    label_texts=["entailment", "not entailment"])
    splits = load_splits(cfg)
    assert splits.train == [Example("A man sleeps.", 1, "A man is awake."), Example("It rains.", 0, "It is wet."),
                            Example("x", 1, "y")]


def test_files_json_extension_is_json_lines(tmp_path):
    train = write(tmp_path / "train.json", '{"text": "a", "label": "0"}\n{"text": "b", "label": 1.0}\n')
    assert [e.label for e in load_splits(files_cfg(train)).train] == [0, 1]


def test_files_bom_crlf_and_blank_lines(tmp_path):
    train = write(tmp_path / "train.csv", b"\xef\xbb\xbftext,label\r\nfine,1\r\n\r\nok,0\r\n")
    assert load_splits(files_cfg(train)).train == [Example("fine", 1), Example("ok", 0)]


def test_files_digit_label_texts_read_as_texts_when_all_match(tmp_path):
    stars = ["1", "2", "3"]
    as_texts = write(tmp_path / "texts.csv", "text,label\na,1\nb,3\n")
    as_ids = write(tmp_path / "ids.csv", "text,label\na,0\nb,2\n")
    assert [e.label for e in load_splits(files_cfg(as_texts, label_texts=stars)).train] == [0, 2]
    assert [e.label for e in load_splits(files_cfg(as_ids, label_texts=stars)).train] == [0, 2]


def test_files_labels_are_read_for_train_and_eval_together(tmp_path):
    """One stray '0' in the eval file must not turn its '1'..'3' from label texts into class ids."""
    stars = ["1", "2", "3"]
    train = write(tmp_path / "train.csv", "text,label\na,1\nb,3\nc,2\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,1\ne,3\nf,0\n")
    error_of(files_cfg(train, dev, label_texts=stars), "dev.csv", "line 4", "label '0'", "not a label text")
    ids_dev = write(tmp_path / "ids.csv", "text,label\nd,0\ne,2\nf,1\n")  # a whole file of ids, train of texts
    error_of(files_cfg(train, ids_dev, label_texts=stars), "ids.csv", "line 2", "label '0'")
    splits = load_splits(files_cfg(train, write(tmp_path / "ok.csv", "text,label\nd,3\n"), label_texts=stars))
    assert [e.label for e in splits.train] == [0, 2, 1] and [e.label for e in splits.eval] == [2]
    # Words as label texts: an id and a text never mean different classes, so they may mix.
    mixed = write(tmp_path / "mixed.csv", "text,label\nd,positive\ne,0\n")
    assert [e.label for e in load_splits(files_cfg(mixed, mixed, label_texts=["negative", "positive"])).eval] == [1, 0]


def test_duplicate_header_column_is_an_error(tmp_path):
    for name, text in (("t.csv", "text,label,label\na,1,0\n"), ("t.tsv", "label\ttext\t label\n1\ta\t0\n")):
        error_of(files_cfg(write(tmp_path / name, text)), name, "line 1", "column 'label' appears twice")
    # Unnamed trailing columns (a spreadsheet's extra separators) may repeat.
    assert len(load_splits(files_cfg(write(tmp_path / "u.csv", "text,label,,\na,1,,\n"))).train) == 1


def test_files_limits_keep_the_first_examples_in_file_order(tmp_path):
    train = write(tmp_path / "train.tsv", "text\tlabel\n" + "".join(f"t{i}\t{i % 2}\n" for i in range(20)))
    dev = write(tmp_path / "dev.tsv", "text\tlabel\n" + "".join(f"d{i}\t{i % 2}\n" for i in range(9)))
    splits = load_splits(files_cfg(train, dev, train_limit=5, eval_limit=100))
    assert [e.text for e in splits.train] == [f"t{i}" for i in range(5)]
    assert len(splits.eval) == 9
    error_of(files_cfg(train, dev, train_limit=0), "dataset.train_limit")


def test_files_through_omegaconf(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\nyes,positive\nno,negative\n")
    cfg = dataset_cfg("files", train_path=str(train), eval_path=str(train))
    splits = load_splits(cfg)
    assert splits.label_texts == ["negative", "positive"] and [e.label for e in splits.eval] == [1, 0]


# --- bad input: one test each ----------------------------------------------------------------


def test_missing_file(tmp_path):
    error_of(files_cfg(tmp_path / "nope.csv"), "dataset.train_path", "nope.csv", "not found")


def test_eval_path_unset(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,0\n")
    cfg = files_cfg(train)
    cfg.eval_path = None
    error_of(cfg, "dataset.eval_path")


def test_unknown_extension(tmp_path):
    train = write(tmp_path / "t.txt", "a\t0\n")
    error_of(files_cfg(train), "t.txt", "'.txt'", ".csv", ".tsv", ".jsonl")


@pytest.mark.parametrize("name, content", [("e.csv", ""), ("e.tsv", "\n \n"), ("e.jsonl", "\n")])
def test_empty_file(tmp_path, name, content):
    error_of(files_cfg(write(tmp_path / name, content)), name, "empty")


def test_header_only(tmp_path):
    error_of(files_cfg(write(tmp_path / "h.tsv", "text\tlabel\n")), "h.tsv", "only a header", "no examples")


def test_tsv_that_is_really_comma_separated(tmp_path):
    train = write(tmp_path / "t.tsv", "text,label\nhello,1\n")
    message = error_of(files_cfg(train), "t.tsv", "no column 'text'", "header line contains commas",
                       "comma-separated", "rename it to .csv")
    assert "Did you mean" not in message


def test_csv_that_is_really_tab_separated(tmp_path):
    train = write(tmp_path / "t.csv", "text\tlabel\nhello\t1\n")
    error_of(files_cfg(train), "t.csv", "tabs", "rename it to .tsv")


def test_missing_column_suggests_the_nearest(tmp_path):
    train = write(tmp_path / "t.csv", "review,label\nhello,1\n")
    error_of(files_cfg(train, text_column="reviews"), "t.csv", "no column 'reviews'", "'review'",
             "Did you mean 'review'", "dataset.text_column")


def test_missing_jsonl_key_names_the_line(tmp_path):
    train = write(tmp_path / "t.jsonl", '{"text": "a", "label": 0}\n{"txt": "b", "label": 1}\n')
    error_of(files_cfg(train), "t.jsonl", "line 2", "no key 'text'", "'txt'")


def test_label_not_in_label_set(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,positive\nb,neutral\n")
    error_of(files_cfg(train), "t.csv", "line 3", "column 'label'", "'neutral'", "0..1", "'negative'", "'positive'")


def test_label_id_out_of_range(tmp_path):
    train = write(tmp_path / "t.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 2}\n')
    error_of(files_cfg(train), "line 2", "label 2", "0..1")


def test_non_utf8_bytes(tmp_path):
    train = write(tmp_path / "t.csv", b"text,label\ncaf\xe9,1\n")
    error_of(files_cfg(train), "t.csv", "line 2", "not UTF-8", "offset 14", "0xe9", "UTF-8")


def test_utf16_file(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,1\n".encode("utf-16"))
    error_of(files_cfg(train), "t.csv", "UTF-16")


def test_malformed_jsonl_line(tmp_path):
    train = write(tmp_path / "t.jsonl", '{"text": "a", "label": 0}\n\n{"text": "b", label: 1}\n')
    error_of(files_cfg(train), "t.jsonl", "line 3", "malformed JSON")


def test_jsonl_line_not_an_object(tmp_path):
    train = write(tmp_path / "t.json", '[{"text": "a", "label": 0}]\n')
    error_of(files_cfg(train), "t.json", "line 1", "an array", "one JSON object per line")


def test_row_with_too_few_fields(tmp_path):
    train = write(tmp_path / "t.tsv", "text\tlabel\na\t1\nb\n")
    error_of(files_cfg(train), "t.tsv", "line 3", "1 field", "header has 2")


def test_row_with_a_stray_separator(tmp_path):
    train = write(tmp_path / "t.tsv", "text\tlabel\na\tb\t1\n")
    error_of(files_cfg(train), "line 2", "3 field", "tab")


def test_csv_unterminated_quote(tmp_path):
    train = write(tmp_path / "t.csv", 'text,label\na,1\n"b,0\nc,1\n')
    error_of(files_cfg(train), "t.csv", "line 3", "malformed CSV", "quote")


@pytest.mark.parametrize("content, line", [("text,label\na,1\n  ,0\n", 3), ('text,label\n"",1\n', 2)])
def test_empty_text(tmp_path, content, line):
    error_of(files_cfg(write(tmp_path / "t.csv", content)), f"line {line}", "column 'text'", "empty text")


def test_non_text_value_in_jsonl(tmp_path):
    train = write(tmp_path / "t.jsonl", '{"text": 5, "label": 0}\n')
    error_of(files_cfg(train), "line 1", "key 'text'", "expected a text")


def test_bad_label_texts_and_kind(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,1\n")
    error_of(files_cfg(train, label_texts=["yes", "yes"]), "dataset.label_texts", "twice")
    error_of(files_cfg(train, label_texts=["yes"]), "dataset.label_texts", "two")
    error_of(DatasetConfig(kind="file"), "dataset.kind", "Did you mean 'files'")


# --- the hub -------------------------------------------------------------------------------------


def fake_datasets(monkeypatch, load_dataset):
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)


def hub_cfg(**kw) -> DatasetConfig:
    return DatasetConfig(name="hub", kind="hub", task=None, hub_id="glue", hub_config="sst2", **kw)


def test_hub_without_datasets_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    error_of(hub_cfg(), "pip install -e '.[hub]'")


def test_hub_offline(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'glue' on the Hub (LocalEntryNotFoundError)\nmore detail")

    fake_datasets(monkeypatch, load_dataset)
    error_of(hub_cfg(), "'glue'", "sst2", "unreachable", "dataset=files")


def test_hub_other_failure(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ValueError("BuilderConfig 'sst3' not found.")

    fake_datasets(monkeypatch, load_dataset)
    error_of(hub_cfg(), "sst3", "dataset.hub_config", "dataset=files")


class FakeSplit(list):
    @property
    def column_names(self):
        return list(self[0]) if self else []


def test_hub_rows_become_examples(monkeypatch):
    rows = [{"sentence": f"s{i}", "label": i % 2, "idx": i} for i in range(10)]
    fake_datasets(monkeypatch, lambda hub_id, config: {"train": FakeSplit(rows), "validation": FakeSplit(rows)})
    splits = load_splits(hub_cfg(train_limit=4))
    assert splits.train == [Example(f"s{i}", i % 2) for i in range(4)] and len(splits.eval) == 10
    assert splits.source["train"] == "glue" and splits.source["kind"] == "hub"
    error_of(hub_cfg(eval_split="valid"), "dataset.eval_split", "'validation'")
    fake_datasets(monkeypatch, lambda hub_id, config: {"train": FakeSplit([{"sentence": "s", "label": -1}]),
                                                       "validation": FakeSplit(rows)})
    error_of(hub_cfg(), "hub:glue[train]", "row 1", "label -1")
