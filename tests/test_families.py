"""The families users bring (qwen2, mistral, gemma, gemma2, xlm-roberta) against plain HF forwards.

Each oracle is an independent reference written with transformers alone, one unpadded text
at a time, on a tiny random model drawn at initializer_range 0.25 (at transformers' 0.02
attention barely moves the outputs and a wrong position or mask could hide under the
tolerance):
- decoders, prefix: HF reads [prefix tokens + text] in one forward; the cache it wrote for the
  prefix tokens alone, handed to ltune's prefix injection, must give the same last-token state.
  Rows carry prefixes of different lengths; masked prefix slots hold garbage that must not matter.
- decoders and encoders, prompt: soft embeddings prepended to the text's input embeddings in one
  HF forward (HF's own positions) equal ltune's prompt path (the shared-prompt cache on decoders).
Both padding sides. Tolerance: the fp32 differences measured on these models are <= 1.7e-6
(noise floor); 2e-5 keeps a 10x margin and sits far below the errors a wrong position, offset
or mask gives at this init (checked by mutation when written: see the commit message).
"""

from __future__ import annotations

import pytest
import torch

from conftest import V, make_tokenizer, tiny_config
from ltune_cli.config import ModelConfig
from ltune_cli.models.backbone import load_backbone

# qwen3-as-llama: a family with no row, run with model.family=llama (docs/models.md)
NEW_DECODERS = ["qwen2", "mistral", "gemma", "gemma2", "qwen3-as-llama"]
NEW_ENCODERS = ["xlm-roberta"]
INIT = 0.25
TOL = 2e-5
TEXTS = ["the movie was good", "bad film", "it was a very dull plot and so sad"]
PREFIXES = ["positive", "not neutral", "sports world business"]  # 1, 2 and 3 tokens


def oracle_backbone(family: str, pooling: str = "auto"):
    from transformers import AutoModel

    if family == "qwen3-as-llama":
        import transformers

        config = transformers.Qwen3Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, head_dim=8, intermediate_size=64, vocab_size=V,
                                          pad_token_id=0, bos_token_id=0, eos_token_id=0)
    else:
        config = tiny_config(family)
    config.initializer_range = INIT
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    tok = make_tokenizer(pair_template=family in NEW_ENCODERS)
    mc = ModelConfig(name=f"tiny-{family}", path=f"tiny:{family}", pooling=pooling,
                     family="llama" if family == "qwen3-as-llama" else "auto")
    return load_backbone(mc, None, model=model, tokenizer=tok)


def ids_of(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text)["input_ids"]])


def padded(tok, side: str):
    tok.padding_side = side
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", NEW_DECODERS)
def test_decoder_prefix_injection_equals_reading_the_prefix_tokens(family, side):
    bb = oracle_backbone(family)
    model, tok = bb.model, bb.tokenizer
    ref, caches = [], []
    for text, pre in zip(TEXTS, PREFIXES, strict=True):
        p, t = ids_of(tok, pre), ids_of(tok, text)
        ref.append(model(input_ids=torch.cat([p, t], 1)).last_hidden_state[0, -1])
        cache = model(input_ids=p, use_cache=True).past_key_values
        caches.append([(layer.keys[0], layer.values[0]) for layer in cache.layers])  # (kvh, p_i, hd)
    P = max(ids_of(tok, pre).shape[1] for pre in PREFIXES)
    gen = torch.Generator().manual_seed(1)
    prefix, prefix_mask = [], torch.zeros(len(TEXTS), P, dtype=torch.long)
    for layer in range(bb.geo.layers):
        kv = []
        for j in range(2):
            x = 50 * torch.randn(len(TEXTS), bb.geo.kv_heads, P, bb.geo.head_dim, generator=gen)  # garbage slots
            for i, c in enumerate(caches):
                x[i, :, : c[layer][j].shape[1]] = c[layer][j]
            kv.append(x)
        prefix.append(tuple(kv))
    for i, c in enumerate(caches):
        prefix_mask[i, : c[0][0].shape[1]] = 1
    ids, mask = padded(tok, side)
    got = bb.encode(ids, mask, prefix=prefix, prefix_mask=prefix_mask)
    err = (got - torch.stack(ref)).abs().max().item()
    assert err < TOL, f"{family} {side}: max error {err:.2e}"


def _prompt_reference(bb, prompt: torch.Tensor, pick):
    """One unpadded HF forward per text over [prompt embeddings + text embeddings]."""
    out = []
    for i, text in enumerate(TEXTS):
        t = ids_of(bb.tokenizer, text)
        embeds = torch.cat([prompt[i : i + 1], bb.embed(t)], 1)
        out.append(pick(bb.model(inputs_embeds=embeds).last_hidden_state[0]))
    return torch.stack(out)


@torch.no_grad()
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", NEW_DECODERS)
def test_decoder_prompt_equals_prepended_embeddings(family, side):
    bb = oracle_backbone(family)
    assert bb.shares_prompt  # the prompt is read once and handed to the texts as a cache
    prompt = torch.randn(len(TEXTS), 3, bb.geo.hidden, generator=torch.Generator().manual_seed(2))
    ref = _prompt_reference(bb, prompt, lambda h: h[-1])
    ids, mask = padded(bb.tokenizer, side)
    got = bb.encode(ids, mask, prompt=prompt, prompt_index=torch.arange(len(TEXTS)))
    err = (got - ref).abs().max().item()
    assert err < TOL, f"{family} {side}: max error {err:.2e}"


@torch.no_grad()
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("family", NEW_ENCODERS)
def test_encoder_prompt_equals_prepended_embeddings(family, pooling, side):
    bb = oracle_backbone(family, pooling=pooling)
    prompt = torch.randn(len(TEXTS), 3, bb.geo.hidden, generator=torch.Generator().manual_seed(2))
    ref = _prompt_reference(bb, prompt, (lambda h: h[0]) if pooling == "cls" else (lambda h: h.mean(0)))
    ids, mask = padded(bb.tokenizer, side)
    got = bb.encode(ids, mask, prompt=prompt, prompt_index=torch.arange(len(TEXTS)))
    err = (got - ref).abs().max().item()
    assert err < TOL, f"{family} {pooling} {side}: max error {err:.2e}"


@torch.no_grad()
@pytest.mark.parametrize("family", NEW_ENCODERS)
def test_encoder_plain_forward_equals_hf(family):
    """No prompt: ltune's explicit positions (offset from the family row) are HF's own."""
    bb = oracle_backbone(family, pooling="mean")
    ref = torch.stack([bb.model(input_ids=ids_of(bb.tokenizer, t)).last_hidden_state[0].mean(0) for t in TEXTS])
    for side in ("right", "left"):
        ids, mask = padded(bb.tokenizer, side)
        err = (bb.encode(ids, mask) - ref).abs().max().item()
        assert err < TOL, f"{family} {side}: max error {err:.2e}"
