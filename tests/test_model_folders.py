"""Any model folder a user brings: config.json decides family, pooling and geometry.

`ltune train model.path=<folder>` keeps the default preset (model=minilm); before, that
preset's `pooling: cls` made a decoder pool its first token, which sees none of the text.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import save_tiny_model, tiny_overrides
from ltune_cli.cli import app
from ltune_cli.config import compose
from ltune_cli.errors import LtuneError
from ltune_cli.models.backbone import load_backbone
from ltune_cli.models.families import FAMILIES


def _backbone(overrides):
    return load_backbone(compose(overrides).model, compose(["hardware=cpu"]).hardware)


def test_decoder_folder_under_the_default_preset_pools_its_last_token(tiny_llama_dir):
    bb = _backbone([f"model.path={tiny_llama_dir}"])  # model=minilm stays the preset
    assert (bb.geo.family, bb.geo.kind, bb.geo.kv_heads, bb.pooling) == ("llama", "decoder", 2, "last")
    # Two sentences with the same first token: first-token pooling gave them identical
    # encodings (max difference 0.0), whatever followed.
    enc = bb.tokenizer(["the movie was good", "the film was bad and so dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = bb.encode(enc["input_ids"], enc["attention_mask"])
    assert (pooled[0] - pooled[1]).abs().max() > 1e-3


def test_encoder_folder_under_a_decoder_preset_pools_cls(tiny_bert_dir):
    bb = _backbone(["model=smollm2_135m", f"model.path={tiny_bert_dir}"])
    assert (bb.geo.family, bb.pooling) == ("bert", "cls")


def test_cls_pooling_on_a_decoder_is_refused(tiny_llama_dir):
    with pytest.raises(LtuneError, match="model.pooling=cls on a llama decoder.*cannot see the text"):
        _backbone([f"model.path={tiny_llama_dir}", "model.pooling=cls"])


def test_unsupported_family_is_refused_before_any_weight_loads(tmp_path, monkeypatch):
    import transformers

    folder = save_tiny_model(tmp_path / "m", "qwen2")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "mamba"}))

    def no_loading(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_loading)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_loading)
    with pytest.raises(LtuneError) as e:
        _backbone([f"model.path={folder}"])
    msg = str(e.value)
    assert "model family 'mamba' (model_type in" in msg and "config.json" in msg
    assert msg.count("Supported:") == 1 and msg.count("qwen2") == 1  # the list, once
    assert "model.family=llama" in msg and "Did you mean" not in msg  # mamba is no typo of llama


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    """A family ltune has no row for, but Llama-like: Qwen3 (q/k norms, grouped-query cache)."""
    import transformers
    from transformers import AutoModel

    from conftest import V, make_tokenizer

    folder = tmp_path_factory.mktemp("tiny-qwen3")
    torch.manual_seed(0)
    config = transformers.Qwen3Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=8, intermediate_size=64, vocab_size=V,
                                      pad_token_id=0, bos_token_id=0, eos_token_id=0)
    AutoModel.from_config(config).save_pretrained(folder)
    make_tokenizer(pair_template=False).save_pretrained(folder)
    return folder


def test_llama_like_unknown_family_runs_with_family_llama(qwen3_dir, tmp_path, sentiment_files):
    assert "qwen3" not in FAMILIES
    with pytest.raises(LtuneError, match="model family 'qwen3'.*model.family=llama"):
        _backbone([f"model.path={qwen3_dir}"])
    bb = _backbone(["model=custom", f"model.path={qwen3_dir}", "model.family=llama"])
    assert (bb.geo.family, bb.geo.kv_heads, bb.geo.head_dim, bb.pooling) == ("llama", 2, 8, "last")
    train, dev = sentiment_files
    for method in ("prefix", "lt_prefix", "prompt", "lt_prompt"):
        out = tmp_path / method
        r = CliRunner().invoke(app, ["train", *tiny_overrides(train, dev, out, method=method, steps=2, **{
            "model": "custom", "model.path": qwen3_dir, "model.family": "llama", "hardware.num_threads": 1})])
        assert r.exit_code == 0, r.output
        res = json.loads((out / "results.json").read_text())
        assert res["status"] == "completed" and res["run"]["family"] == "llama"


def test_validate_describes_the_folder_it_would_train(tiny_llama_dir, tmp_path, sentiment_files):
    train, dev = sentiment_files
    ov = [o for o in tiny_overrides(train, dev, tmp_path / "r") if not o.startswith("out_dir")]
    r = CliRunner().invoke(app, ["validate", *ov, "model=custom", f"model.path={tiny_llama_dir}"])
    assert r.exit_code == 0, r.output
    assert "llama decoder, 2 layers, d=32, 4 heads / 2 key/value heads, pooling last" in r.output
