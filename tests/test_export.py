"""`ltune export`: PEFT loads the adapter and gives ltune's logits; lt_* runs go out in ltune's format.

Exactness is measured on the tiny random models (conftest INIT = 0.25, where attention matters)
in fp32: PEFT's logits equal ltune's exactly for prefix on every family and within 1.3e-6 for
prompt on a decoder (ltune reads a decoder's prompt once and hands its key/values on; PEFT
concatenates it to every text). TOL sits above that floor and far below what a wrong layout gives
(test_peft_sees_the_adapter: O(0.1) and more).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import (
    FAMILIES,
    tiny_backbone,
    tiny_config,
    tiny_overrides,
    write_sentiment_csv,
)
from ltune_cli import engine, export, runfolder
from ltune_cli.batching import collate, encode_examples
from ltune_cli.cli import app
from ltune_cli.config import MethodConfig, compose
from ltune_cli.data import Example
from ltune_cli.evaluate import load_run_config
from ltune_cli.methods import build_method

peft = pytest.importorskip("peft")

TOL = 1e-5
TEXTS = ["the movie was good and the acting superb", "bad", "a dull plot", "it was fine really",
         "worst film of the year so sad"]
LABELS = ["negative", "positive", "neutral"]


def _batch(backbone, texts=TEXTS):
    enc = encode_examples([Example(t, 0) for t in texts], backbone.tokenizer, 32)
    return collate(enc, list(range(len(texts))), backbone.pad_id, "right", backbone.device)


def _fresh_base(family):
    """The same tiny model again (same seed), loaded apart from ltune: what a PEFT user holds."""
    from transformers import AutoModel

    torch.manual_seed(0)
    return AutoModel.from_config(tiny_config(family)).eval()


CASES = [(f, m) for f in FAMILIES for m in ("prefix", "prompt") if not (f == "deberta-v2" and m == "prefix")]


@pytest.mark.parametrize("family,method", CASES)
def test_peft_gives_ltunes_logits(family, method, tmp_path):
    torch.manual_seed(3)
    bb = tiny_backbone(family)
    m = build_method(MethodConfig(name=method, num_virtual_tokens=4), bb, LABELS).eval()
    with torch.no_grad():  # a trained-looking head: its own draw, not the init
        m.head.weight.normal_(0, 1)
        m.head.bias.normal_(0, 1)
    batch = _batch(bb)
    with torch.inference_mode():
        want = m.scores(batch)
    rec = export.write_peft_adapter(m, tmp_path, {"label_texts": LABELS})
    assert rec["check"]["max_relative_difference"] <= export.CHECK_TOLERANCE["fp32"]
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == {"prefix": "PREFIX_TUNING", "prompt": "PROMPT_TUNING"}[method]
    stored = load_file(str(tmp_path / "adapter_model.safetensors"))
    (key,) = stored
    g = bb.geo
    assert tuple(stored[key].shape) == ((4, g.layers * 2 * g.kv_heads * g.head_dim) if method == "prefix"
                                        else (4, g.hidden))
    pm = peft.PeftModel.from_pretrained(_fresh_base(family), str(tmp_path)).eval()
    head = load_file(str(tmp_path / "head.safetensors"))
    with torch.inference_mode():
        got = export.peft_logits(pm, {k: batch[k] for k in ("input_ids", "attention_mask")}, rec, head)
    assert (got - want).abs().max().item() <= TOL, (got - want).abs().max().item()


@pytest.mark.parametrize("family", ["bert", "llama", "falcon"])
def test_peft_sees_the_adapter(family, tmp_path):
    """The adapter moves the logits far beyond TOL: the equality above cannot hold by accident."""
    torch.manual_seed(3)
    bb = tiny_backbone(family)
    m = build_method(MethodConfig(name="prefix", num_virtual_tokens=4), bb, LABELS).eval()
    batch = _batch(bb)
    with torch.inference_mode():
        want = m.scores(batch)
        bare = m.head(bb.pool(bb.model(input_ids=batch["input_ids"],
                                       attention_mask=batch["attention_mask"]).last_hidden_state,
                              batch["attention_mask"]))
    assert (bare - want).abs().max().item() > 1e-2


def _swap_kv(method, P):
    """A layout PEFT does not read: keys and values exchanged."""
    cfg, w = ORIGINAL(method, P)
    return cfg, w.view(P, method.backbone.geo.layers, 2, -1).flip(2).reshape(P, -1)


ORIGINAL = export._peft_config


def test_a_wrong_layout_is_refused(tmp_path, monkeypatch):
    """The export loads its adapter back with PEFT: a layout PEFT reads otherwise never leaves."""
    monkeypatch.setattr(export, "_peft_config", _swap_kv)
    bb = tiny_backbone("llama")
    m = build_method(MethodConfig(name="prefix", num_virtual_tokens=4), bb, LABELS).eval()
    with pytest.raises(export.LtuneError, match="gives other logits than ltune"):
        export.write_peft_adapter(m, tmp_path, {"label_texts": LABELS})


# ------------------------------------------------------------------ the command, on real runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("exportruns")
    train = write_sentiment_csv(tmp / "train.csv", 48, seed=1)
    dev = write_sentiment_csv(tmp / "dev.csv", 24, seed=2)
    out = {}
    for name, model, method in (("bert-prefix", tiny_bert_dir, "prefix"), ("llama-prompt", tiny_llama_dir, "prompt"),
                                ("bert-lt_prefix", tiny_bert_dir, "lt_prefix"), ("bert-prefix-pairs", tiny_bert_dir, "prefix")):
        out[name] = engine.train(compose(tiny_overrides(train, dev, tmp / name, method=method, **{
            "model.path": model, "hardware.num_threads": 1, "method.num_virtual_tokens": 5,
            "method.pair_framing": name.endswith("pairs")})))
    return out


def _cli(*args):
    r = CliRunner().invoke(app, ["export", *map(str, args)])
    assert "Traceback" not in r.output, r.output
    return r


@pytest.mark.parametrize("name,family", [("bert-prefix", "bert"), ("llama-prompt", "llama")])
def test_export_command_round_trip(runs, name, family, tmp_path, tiny_bert_dir, tiny_llama_dir):
    """ltune export <run> -> PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder):
    the run's own dev predictions (predictions.json) and ltune's logits."""
    from transformers import AutoModel

    run = runs[name]
    r = _cli(run, "--out", tmp_path / "ad")
    assert r.exit_code == 0, r.output
    assert "logits match ltune's" in r.output and f"exported: {tmp_path / 'ad'}" in r.output
    rec = json.loads((tmp_path / "ad" / "ltune.json").read_text())
    assert rec["label_texts"] == ["negative", "positive"] and rec["format"] == "peft"
    base_dir = tiny_bert_dir if family == "bert" else tiny_llama_dir
    pm = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(base_dir), str(tmp_path / "ad")).eval()
    cfg, _ = load_run_config(run)
    s = engine.build(cfg, with_train=False)
    runfolder.load_trainable(s.method, run)
    s.method.eval()
    idx = list(range(len(s.eval_enc)))
    batch = collate(s.eval_enc, idx, s.backbone.pad_id, "right", s.device)
    head = load_file(str(tmp_path / "ad" / "head.safetensors"))
    with torch.inference_mode():
        want = s.method.scores(batch)
        got = export.peft_logits(pm, {k: batch[k] for k in ("input_ids", "attention_mask")}, rec, head)
    assert (got - want).abs().max().item() <= TOL
    stored = json.loads((run / "predictions.json").read_text())["pred"]
    assert got.argmax(-1).tolist() == stored


def test_lt_prefix_goes_out_in_ltunes_format(runs, tmp_path):
    run = runs["bert-lt_prefix"]
    r = _cli(run, "--format", "peft", "--out", tmp_path / "p")
    assert r.exit_code == 2 and "PEFT cannot express" in r.output and "--format ltune" in r.output
    assert not (tmp_path / "p").exists()
    r = _cli(run)
    assert r.exit_code == 0, r.output
    folder = run / "adapter-ltune"
    rec = json.loads((folder / "ltune.json").read_text())
    assert rec["format"] == "ltune" and rec["method"] == "lt_prefix" and rec["variant"] == "per_token"
    assert rec["label_echo"] == "auto" and "label_echo" in rec["uses"]  # auto: off on this encoder
    assert rec["label_texts"] == ["negative", "positive"] and "PEFT has no method" in rec["why"]
    got, want = load_file(str(folder / "adapter.safetensors")), runfolder.read_trainable(run)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)
    assert rec["weights"] == {k: list(v.shape) for k, v in sorted(want.items())}
    r = _cli(run)  # never over an earlier export
    assert r.exit_code == 2 and "already exists and is not an empty folder" in r.output



def test_a_baseline_in_pair_framing_goes_out_in_ltunes_format(runs, tmp_path):
    run = runs["bert-prefix-pairs"]
    r = _cli(run, "--format", "peft", "--out", tmp_path / "p")
    assert r.exit_code == 2 and "pair_framing" in r.output and "--format ltune" in r.output
    r = _cli(run, "--out", tmp_path / "l")
    assert r.exit_code == 0, r.output
    got, want = load_file(str(tmp_path / "l" / "adapter.safetensors")), runfolder.read_trainable(run)
    assert set(got) == {"table", "head.weight", "head.bias"} and all(torch.equal(got[k], want[k]) for k in got)


def test_a_refused_export_leaves_nothing(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_peft_config", _swap_kv)
    r = _cli(runs["bert-prefix"], "--out", tmp_path / "ad")
    assert r.exit_code == 2 and "gives other logits than ltune on bert" in r.output, r.output
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary
