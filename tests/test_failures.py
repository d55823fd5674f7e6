"""Each bad input gives a one-line error naming the culprit, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from failure_cases import CASES
from ltune_cli.cli import app


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}-{c.what}" for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path, monkeypatch):
    import contextlib

    if case.applies is not None and not case.applies():
        pytest.skip("machine-dependent case: this machine has what it lacks")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "outputs"))
    with case.around(tmp_path) if case.around else contextlib.nullcontext():
        result = CliRunner().invoke(app, case.args(tmp_path))
    out = result.output
    assert result.exit_code == case.code, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out
    assert case.expect in lines[0], lines[0]
    if case.also:
        assert case.also in out.replace(lines[0], ""), out
    if case.check:
        case.check(tmp_path, out)


def test_prefix_methods_refuse_deberta_clearly(tmp_path, sentiment_files):
    from conftest import save_tiny_model, tiny_overrides

    model = save_tiny_model(tmp_path / "deberta", "deberta-v2")
    train, dev = sentiment_files
    result = CliRunner().invoke(app, ["train", *tiny_overrides(train, dev, tmp_path / "r", method="prefix",
                                                               **{"model.path": model})])
    assert result.exit_code == 2
    assert "no key/value cache" in result.output and "method=lt_prompt" in result.output


def test_overlong_rows_are_truncated_and_counted(caplog):
    from conftest import make_tokenizer
    from ltune_cli.batching import encode_examples
    from ltune_cli.data import Example

    tok = make_tokenizer()
    rows = [Example("good " * 50, 1), Example("bad film", 0)]
    with caplog.at_level("WARNING", logger="ltune"):
        enc = encode_examples(rows, tok, 16, what="train")
    assert enc.n_truncated == 1 and max(len(x) for x in enc.input_ids) == 16
    assert "1 of 2 rows are longer than model.max_length=16" in caplog.text


def test_debug_flag_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(app, ["validate", "model=minlm", "--debug"])
    assert result.exit_code != 0 and result.exception is not None


def test_plus_override_outside_the_schema_writes_nothing(tmp_path):
    """`+key=value` is checked against the schema before a run folder exists (it used to land in
    config.yaml, where it later broke `ltune eval` and `--resume`)."""
    result = CliRunner().invoke(app, ["train", "+train.foo=1", f"out_dir={tmp_path}/run"])
    assert result.exit_code == 2 and "unknown config key 'train.foo'" in result.output
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, ["validate", "+sweep=cpu_smoke", "+model.arch.layers_note=6"])
    assert result.exit_code == 0, result.output  # a config group and the free-form model.arch stay open
