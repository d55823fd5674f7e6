"""`ltune bench --quick` runs end to end on a tiny model (no timing asserts: shapes of the output)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_tokenizer, tiny_backbone, tiny_config
from ltune_cli.cli import app


@pytest.fixture
def tiny_bert_folder(tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    folder = tmp_path / "tiny-bert"
    AutoModel.from_config(tiny_config("bert")).save_pretrained(folder)
    make_tokenizer(pair_template=True).save_pretrained(folder)
    return folder


def test_bench_quick_end_to_end(tiny_bert_folder, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--quick", "--model", str(tiny_bert_folder), "--out", str(out),
                                      "--eval-k", "2,3", "--label-lens", "4"])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "bench.json").read_text())
    assert res["schema"] == "ltune.bench/1"
    assert res["machine"]["cpu_count"] and res["versions"]["torch"]
    [mr] = res["models"]
    assert mr["info"]["params_matmul"] > 0 and mr["matmul_peak_flops"]["median"] > 0
    rows = {r["key"]: r for r in mr["train"]}
    expected = ["ltune prefix", "ltune prompt", "ltune lt_prefix", "ltune lt_prompt",
                "re-encode lt_prefix", "re-encode lt_prompt", "ltune lt_prefix l=4", "re-encode lt_prompt l=4",
                "ltune lt_prefix, random batches"]
    try:
        import peft  # noqa: F401

        expected += ["peft prefix", "peft prompt"]
    except ImportError:
        assert rows["peft prefix"]["skipped"]
    for key in expected:
        r = rows[key]
        assert not r["skipped"], (key, r["skipped"])
        assert r["examples_per_s"]["n"] == 2 and r["examples_per_s"]["median"] > 0
        assert r["utilisation"]["median"] > 0 and r["trainable_params"] > 0
    assert rows["ltune lt_prefix l=4"]["label_tokens"] == 4
    for key in ("ltune prefix", "ltune lt_prefix", "re-encode lt_prompt"):
        assert rows[key]["memory"]["peak_rss_mib"] > 0, rows[key]
    assert {(p["method"], p["label_tokens"]) for p in mr["label_length"]} >= {("lt_prefix", 4), ("lt_prompt", 4)}
    # pair methods at every K; the K-way-head methods at the smallest K (one forward per text).
    assert {(e["method"], e["K"]) for e in mr["eval"]} == {
        ("lt_prefix", 2), ("lt_prefix", 3), ("lt_prompt", 2), ("lt_prompt", 3), ("prefix", 2), ("prompt", 2)}
    assert all(e["pairs"] == e["texts"] * e["K"] and e["vs_train_examples_per_s"]["n"] == 1 for e in mr["eval"])
    assert 1.0 <= mr["batching"]["grouped"]["pad_ratio"] <= mr["batching"]["random"]["pad_ratio"]
    assert mr["profile"]["ltune lt_prefix"]["top"]
    assert any(t["target"].startswith("utilisation") for t in mr["targets"])
    md = (out / "bench.md").read_text()
    assert "## tiny-bert" in md and "### Targets" in md and "re-encode lt_prefix" in md


def test_bench_rejects_bad_lists(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--quick", "--eval-k", "1,x", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--eval-k" in result.output


@pytest.mark.parametrize("family,name", [("bert", "lt_prefix"), ("llama", "lt_prompt"), ("gpt2", "lt_prefix")])
def test_scores_in_chunks_equal_one_forward(family, name, monkeypatch):
    """PairMethod.scores cuts many pairs into bounded forwards (CPU cache): same scores."""
    from ltune_cli.config import MethodConfig
    from ltune_cli.methods import build_method
    from ltune_cli.methods.base import PairMethod

    bb = tiny_backbone(family)
    labels = ["negative", "positive", "not neutral", "sports", "world"]
    method = build_method(MethodConfig(name=name), bb, labels).eval()
    bb.tokenizer.padding_side = "right"
    enc = bb.tokenizer(["the movie was good", "bad film", "it was a very dull plot and so sad"] * 3,
                       padding=True, return_tensors="pt")
    batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    monkeypatch.setattr(PairMethod, "SCORE_CHUNK_POSITIONS", {})
    whole = method.scores(batch)
    monkeypatch.setattr(PairMethod, "SCORE_CHUNK_POSITIONS", {"cpu": 40})  # 5-pair chunks here
    chunked = method.scores(batch)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
