"""Every conf/model/*.yaml: its published architecture (`arch`), built at tiny width, trains.

No download: each config's `arch` (layers, hidden, heads, key/value heads, ALiBi, multi-query,
Falcon's decoder layout, DeBERTa's relative attention, ...) is turned into a transformers
config twice: at full size (config object only, no weights) to check what families.py
derives from it, and at tiny width/depth with the same family flags and head layout, which is
built and trained one step with every method. The two offline models are also checked
against their real config.json.
"""

from __future__ import annotations

import pytest
import torch

from conftest import V, make_tokenizer
from ltune_cli.config import MethodConfig, ModelConfig, compose
from ltune_cli.errors import LtuneError
from ltune_cli.methods import build_method
from ltune_cli.models.backbone import load_backbone
from ltune_cli.models.families import ARCH_FLAGS, config_from_arch, geometry
from ltune_cli.paths import conf_dir

# custom.yaml describes no model: its family and shapes come from model.path (tests/test_model_folders.py)
MODELS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml") if p.stem != "custom")
PAPER = ["bert_base", "roberta_base", "deberta_v3_base", "falcon_7b", "bloom_7b1", "llama2_7b", "bloom_560m",
         "bloom_1b1", "bloom_1b7", "bloom_3b", "falcon_1b"]
METHODS = [("prefix", "per_token"), ("prompt", "per_token"), ("lt_prefix", "per_token"),
           ("lt_prefix", "paper"), ("lt_prompt", "per_token")]
LABELS = ["negative", "positive"]


def model_cfg(name) -> ModelConfig:
    from omegaconf import OmegaConf

    return OmegaConf.to_object(compose([f"model={name}"]).model)


def hf_config(arch: dict, *, tiny: bool):
    """A transformers config of arch's family: full size, or tiny width/depth, same layout."""
    return config_from_arch(tiny_arch(arch) if tiny else arch)


def tiny_arch(arch: dict) -> dict:
    """arch at 2 layers, head_dim 8, the test vocabulary; the head layout kept: multi-query stays 1
    key/value head, grouped-query keeps its group size (SmolLM2: 3 query heads per key/value head)."""
    heads, kv = arch["heads"], arch["kv_heads"]
    kv_t = 1 if kv == 1 else 2
    heads_t = 4 if kv == 1 else kv_t * (heads // kv)
    tiny = {**arch, "layers": 2, "hidden": 8 * heads_t, "intermediate": 64, "vocab": V, "heads": heads_t,
            "kv_heads": kv_t, "max_positions": 130 if arch["model_type"] in ("bert", "roberta", "deberta-v2") else 128}
    if "position_buckets" in arch:
        tiny["position_buckets"] = 16
    return tiny


def test_every_paper_model_has_a_config_with_arch_and_preset():
    assert set(PAPER) <= set(MODELS)
    presets = {p.stem for p in (conf_dir() / "hardware").glob("*.yaml")}
    for name in MODELS:
        mc = model_cfg(name)
        assert mc.arch, f"conf/model/{name}.yaml has no arch"
        assert mc.hardware_preset in presets, (name, mc.hardware_preset)
        assert compose([f"model={name}", f"hardware={mc.hardware_preset}"]).hardware.name == mc.hardware_preset


@pytest.mark.parametrize("name", MODELS)
def test_full_size_geometry_from_the_published_settings(name):
    """What families.py derives from the real-size config (no weights): depth, width, heads and
    the key/value heads a prefix must have (Falcon-7B multi-query: 1; SmolLM2: 3 of 9)."""
    arch = model_cfg(name).arch
    geo = geometry(hf_config(arch, tiny=False))
    assert (geo.family, geo.layers, geo.hidden, geo.heads, geo.kv_heads) == (
        arch["model_type"], arch["layers"], arch["hidden"], arch["heads"], arch["kv_heads"])
    assert geo.kind == ("decoder" if arch["model_type"] in ("gpt2", "llama", "bloom", "falcon") else "encoder")
    assert geo.head_dim * geo.heads == geo.hidden


@pytest.mark.parametrize("name", MODELS)
def test_tiny_width_build_trains_every_method(name):
    from transformers import AutoModel

    mc = model_cfg(name)
    arch = mc.arch
    config = hf_config(arch, tiny=True)
    for k in ARCH_FLAGS.get(arch["model_type"], ()):
        if k in arch and k != "position_buckets":
            assert getattr(config, k) == arch[k], k  # the family settings survive the shrinking
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    decoder = arch["model_type"] in ("gpt2", "llama", "bloom", "falcon")
    tok = make_tokenizer(pair_template=not decoder)
    mc.path = f"tiny:{name}"
    bb = load_backbone(mc, None, model=model, tokenizer=tok)
    assert bb.geo.kv_heads / bb.geo.heads == (1 / bb.geo.heads if arch["kv_heads"] == 1
                                               else arch["kv_heads"] / arch["heads"])
    enc = tok(["the movie was good", "bad film and so dull"], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor([1, 0])}
    if "token_type_ids" in enc:
        batch["token_type_ids"] = enc["token_type_ids"]
    for method, variant in METHODS:
        cfg = MethodConfig(name=method, variant=variant, num_virtual_tokens=3)
        if "prefix" in method and arch["model_type"] == "deberta-v2":
            with pytest.raises(LtuneError, match="needs a key/value prefix.*use method=prompt or method=lt_prompt"):
                build_method(cfg, bb, LABELS)
            continue
        torch.manual_seed(0)
        m = build_method(cfg, bb, LABELS)
        loss = m.training_loss(batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss), (name, method)
        loss.backward()
        assert all(p.grad is not None for p in m.trainable_parameters()), (name, method)
        assert all(p.grad is None for p in bb.parameters())
        assert m.scores(batch).shape == (2, 2)


@pytest.mark.parametrize("name,key", [("minilm", "offline:minilm"), ("smollm2_135m", "offline:smollm2_135m")])
def test_offline_models_match_their_real_config(name, key):
    """For the two models that ship offline, `arch` is checked against the real config.json."""
    import json
    from pathlib import Path

    from ltune_cli.models.offline import resolve

    try:
        folder = Path(resolve(key))
    except LtuneError as e:
        pytest.skip(str(e))
    real = json.loads((folder / "config.json").read_text())
    arch = model_cfg(name).arch
    assert real["model_type"] == arch["model_type"]
    assert real["num_hidden_layers"] == arch["layers"]
    assert real["hidden_size"] == arch["hidden"]
    assert real["num_attention_heads"] == arch["heads"]
    assert real.get("num_key_value_heads", real["num_attention_heads"]) == arch["kv_heads"]
    assert real["intermediate_size"] == arch["intermediate"]
    assert real["vocab_size"] == arch["vocab"]



# Published sizes (model cards; the bare model without its LM/MLM head).
PUBLISHED = {"minilm": 22.7e6, "smollm2_135m": 134.5e6, "bert_base": 109.5e6, "roberta_base": 124.6e6,
             "deberta_v3_base": 184e6, "gpt2": 124.4e6, "bloom_560m": 559e6, "bloom_1b1": 1065e6,
             "bloom_1b7": 1722e6, "bloom_3b": 3003e6, "bloom_7b1": 7069e6, "falcon_1b": 1312e6,
             "falcon_7b": 6922e6, "llama2_7b": 6607e6}


@pytest.mark.parametrize("name", MODELS)
def test_arch_gives_the_published_parameter_count(name):
    """The whole architecture built on the meta device (no memory, no download) from `arch`
    has the published number of parameters: the table is the real model, not a look-alike."""
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(hf_config(model_cfg(name).arch, tiny=False))
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(PUBLISHED[name], rel=0.01), (name, n)
