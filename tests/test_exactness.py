"""Exactness of every method's forward against independent references, on every tiny family.

The references are plain transformers forwards, one text at a time, with no padding, no
attention mask and the model's own default positions: for decoders, a forward over
[prefix tokens + text] (the prefix is what the LM writes reading those tokens); for
encoders, a prompt is token ids prepended to the text, and a key/value prefix is handed to
the model as its own cache. Ours runs the batch padded on either side, with per-row prefix
lengths that differ within the batch and garbage in every masked prefix slot.

Tolerances: the tiny models are drawn at std 0.25 (conftest.INIT), where attention matters.
The fp32 noise between two equal computations on them (ours batched vs the reference one
row at a time) measured at most 2.5e-6 on the pooled states (|x| ~ 1; llama, 0.7-1.3e-6
elsewhere); each check allows 2e-5, 8x that floor, while the defects these tests guard
produced errors of 1e-2 to 1.
"""

from __future__ import annotations

import pytest
import torch

from conftest import DECODERS, FAMILIES, tiny_backbone
from ltune_cli.config import MethodConfig
from ltune_cli.methods import build_method

TOL = 2e-5  # fp32 noise measured <= 2.5e-6 on these models (module docstring)
TEXTS = ["the movie was good", "bad film", "it was a very dull plot and so sad"]
LABELS = ["negative", "not very positive", "neutral"]  # unequal token lengths
ENCODERS = [f for f in FAMILIES if f not in DECODERS]
KV_FAMILIES = [f for f in FAMILIES if f != "deberta-v2"]  # DeBERTa-v2 takes no key/value cache
METHODS = [("prefix", "per_token"), ("prompt", "per_token"), ("lt_prefix", "per_token"),
           ("lt_prefix", "paper"), ("lt_prompt", "per_token")]


def ids_of(bb, text):
    return bb.tokenizer(text)["input_ids"]


def batch_of(bb, texts, side):
    bb.tokenizer.padding_side = side
    enc = bb.tokenizer(list(texts), padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask")}


def hf_forward(bb, ids, cache=None):
    """The reference: transformers' own forward of one unpadded row (default positions)."""
    kw = {"past_key_values": cache, "use_cache": True} if cache is not None else {}
    return bb.model(input_ids=torch.tensor([ids]), **kw).last_hidden_state[0]  # (T, d)


def hf_cache(bb, ids):
    """What the LM writes reading `ids` alone: transformers' DynamicCache, and as a (l, L, 2,
    kv_heads, head_dim) table row for the methods."""
    from transformers import DynamicCache

    cache = DynamicCache()
    bb.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
    kv = torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])
    return cache, kv.permute(3, 0, 1, 2, 4)  # (L, 2, kvh, l, hd) -> (l, L, 2, kvh, hd)


def pooled(bb, hidden):
    """Pool one row's hidden states (T, d) the family's way: first token or last token."""
    return hidden[0] if bb.pooling == "cls" else hidden[-1] if bb.pooling == "last" else hidden.mean(0)


def reference(bb, name, pre_ids, text_ids, echo=()):
    """Pooled encoding of one text read after `pre_ids` (prefix tokens), independently of ours;
    `echo`: tokens read right after the text (L-Tuning's label echo), pooled with it."""
    text_ids = list(text_ids) + list(echo)
    if name in ("prompt", "lt_prompt") or bb.geo.kind == "decoder":
        # A prompt made of token embeddings is those tokens; a decoder's prefix is the cache of
        # reading them: both read as one plain forward over [prefix tokens + text].
        hidden = hf_forward(bb, pre_ids + text_ids)
        return pooled(bb, hidden if name in ("prompt", "lt_prompt") else hidden[len(pre_ids):])
    cache, _ = hf_cache(bb, pre_ids)  # an encoder's prefix: the label read alone, as HF's cache
    return pooled(bb, hf_forward(bb, text_ids, cache))


def garbage_like(x, gen):
    return torch.randn(x.shape, generator=gen) * 100


@pytest.mark.parametrize("name,variant", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_oracle(family, name, variant):
    if family == "deberta-v2" and "prefix" in name:
        pytest.skip("DeBERTa-v2 takes no key/value cache (refused, tests/test_methods.py)")
    bb = tiny_backbone(family)
    echoes = (False, True) if name.startswith("lt_") else (False,)
    errors = {(side, echo): oracle_error(bb, name, variant, side, echo) for side in ("right", "left") for echo in echoes}
    print(f"oracle {family} {name}/{variant}: max error {max(errors.values()):.2e} (tolerance {TOL:.0e})")
    assert max(errors.values()) < TOL, f"{family} {name}/{variant}: max error by padding side {errors}"


def oracle_error(bb, name, variant, side, echo=False):
    """Max |ours - reference| over the pooled encodings of TEXTS, padded on `side`; `echo`: the
    pair methods with the label echo (each text followed by its own label's tokens)."""
    gen = torch.Generator().manual_seed(1)
    batch = batch_of(bb, TEXTS, side)
    texts = [ids_of(bb, t) for t in TEXTS]
    pre = [ids_of(bb, t) for t in LABELS]
    if name in ("prefix", "prompt"):
        # One conditioning for all texts: the tokens of "the film" (prompt: their embeddings;
        # prefix: the key/values the LM writes reading them).
        shared = ids_of(bb, "the film")
        method = build_method(MethodConfig(name=name, num_virtual_tokens=len(shared)), bb, ["a", "b"]).eval()
        with torch.no_grad():
            if name == "prompt":
                method.prompt.copy_(bb.embed(torch.tensor(shared)))
            else:
                method.prefix.copy_(hf_cache(bb, shared)[1].permute(1, 2, 3, 0, 4))  # (L, 2, kvh, P, hd)
            got = method.encode(batch)
        rows = [shared] * len(TEXTS)
    else:
        # Per-row label conditioning of unequal lengths (text i reads label 2 - i), the pad
        # slots of every shorter label filled with garbage that the mask must hide.
        method = build_method(MethodConfig(name=name, variant=variant), bb, LABELS).eval()
        lab = method.labels_frozen
        assert [int(n) for n in lab.mask.sum(1)] == [len(p) for p in pre] and len(set(map(len, pre))) > 1
        K, l = lab.mask.shape
        if name == "lt_prompt":
            table = torch.stack([bb.embed(lab.ids[k]) for k in range(K)]).detach()  # (K, l, d)
        else:
            table = torch.stack([torch.cat([hf_cache(bb, p)[1], torch.zeros(l - len(p), *hf_cache(bb, p)[1].shape[1:])])
                                 for p in pre])  # (K, l, L, 2, kvh, hd)
        pad = ~lab.mask.bool()
        table[pad] = garbage_like(table[pad], gen)
        idx = torch.tensor([2, 1, 0])
        method.echo = echo
        with torch.no_grad():
            got = method.encode_with(method.pair_batch(batch, idx), table, lab.mask, idx)
        rows = [pre[k] for k in idx.tolist()]
    ends = rows if echo else [[]] * len(rows)  # the tiny tokenizers have no start token: echo = label
    want = torch.stack([reference(bb, name, p, t, e) for p, t, e in zip(rows, texts, ends, strict=True)])
    assert want.abs().max() > 0.1  # the encodings are not trivially zero
    return (got - want).abs().max().item()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["lt_prompt", "lt_prefix"])
def test_pair_score_does_not_depend_on_the_other_labels(family, name):
    """A (text, label) pair's score is the same whether the other labels are short, long or
    more: adding a longer label pads this one's prompt/prefix, and the pads must not count."""
    if family == "deberta-v2" and name == "lt_prefix":
        pytest.skip("DeBERTa-v2 takes no key/value cache")
    bb = tiny_backbone(family)
    cfg = MethodConfig(name=name, init_from_label=False)
    two = build_method(cfg, bb, ["negative", "positive"]).eval()
    with torch.no_grad():  # away from the identity/random start: any weights must do
        for p in two.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.05)
    batch = batch_of(bb, TEXTS, "right")
    base = two.scores(batch)
    for others in (["negative", "positive", "not very very neutral"], ["not very very sad negative", "positive"]):
        more = build_method(cfg, bb, others).eval()
        more.load_trainable_state(two.trainable_state())
        keep = [others.index(t) for t in ("negative", "positive") if t in others]
        got = more.scores(batch)[:, keep]
        want = base[:, [["negative", "positive"].index(others[k]) for k in keep]]
        assert more.label_len > two.label_len
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ["roberta"])
def test_roberta_positions_start_after_its_pad_id(family):
    """RoBERTa's position ids start at padding_idx + 1 = config.pad_token_id + 1 (the tiny
    config uses pad id 0, so 1, not the hard-coded 2 of roberta-base's pad id 1)."""
    bb = tiny_backbone(family)
    batch = batch_of(bb, TEXTS, "left")
    got = bb.encode(batch["input_ids"], batch["attention_mask"])
    want = torch.stack([pooled(bb, hf_forward(bb, ids_of(bb, t))) for t in TEXTS])
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    assert bb.model.config.pad_token_id == 0 and bb.position_offset == 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name,variant", [("lt_prefix", "per_token"), ("lt_prefix", "paper"), ("lt_prompt", "per_token")])
def test_warm_start_reads_label_then_text(family, name, variant, monkeypatch):
    """What init_from_label gives at step 0, claim by claim (docs/methods.md):

    - lt_prompt, every family: the text is encoded exactly as one forward over the label's
      tokens followed by the text (the prompt is the label's input embeddings).
    - lt_prefix on a causal decoder: the same (the label's key/values do not depend on what
      follows them).
    - lt_prefix on a bidirectional encoder: the text reads the key/values the LM writes
      reading the label *alone*; that is not the joint forward (the label would attend to the
      text there): measured 0.26 (bert) and 0.13 (roberta) apart at this init scale.
    The paper variant's warm start is the ridge fit; with ridge 0 it is the same claim.
    """
    if family == "deberta-v2" and name == "lt_prefix":
        pytest.skip("DeBERTa-v2 takes no key/value cache")
    from ltune_cli.methods.lt_prefix import LTPrefix

    monkeypatch.setattr(LTPrefix, "PAPER_RIDGE", 0.0)
    bb = tiny_backbone(family)
    labels = ["negative", "not very positive"]  # K=2 <= l: the paper fit can be exact
    method = build_method(MethodConfig(name=name, variant=variant), bb, labels).eval()
    text = ids_of(bb, "the movie was good")
    batch = {"input_ids": torch.tensor([text]), "attention_mask": torch.ones(1, len(text), dtype=torch.long)}
    assert method.echo == (bb.geo.kind == "decoder")  # label_echo=auto
    for k, label in enumerate(labels):
        pre = ids_of(bb, label)
        with torch.no_grad():
            got = method.pair_logits(batch, torch.tensor([k]))
            z = method.head(reference(bb, name, pre, text, pre if method.echo else ())[None])
        torch.testing.assert_close(got, z[:, 1] - z[:, 0], atol=TOL, rtol=0)
        if name == "lt_prefix" and bb.geo.kind == "encoder":
            joint = method.head(pooled(bb, hf_forward(bb, pre + text)[len(pre):])[None])
            assert (got - (joint[:, 1] - joint[:, 0])).abs().item() > 1e-2  # the claim that does not hold


def test_paper_fit_is_the_stated_ridge_over_real_slots():
    """The paper variant's warm start: per slot, the ridge solution (the stated lambda) over the
    labels that have a real token there, checked against an independent lstsq on the augmented
    system [x; sqrt(lambda) I]. Tolerance 1e-4 of max |Z| (fp32 solve vs float64 lstsq); a
    ridge of 0 or a fit over the pad slots is off by 0.5% or more."""

    bb = tiny_backbone("gpt2")
    method = build_method(MethodConfig(name="lt_prefix", variant="paper"), bb, LABELS)
    lab = method.labels_frozen
    K, l = lab.mask.shape
    with torch.no_grad():
        pooled_ = method.F(lab.states).squeeze(-1) * lab.mask  # (K, l)
        target = bb.reading_kv(lab.ids, lab.mask).reshape(K, l, -1)
    out = target.shape[-1]
    for j in range(l):
        rows = lab.mask[:, j].bool()
        x, y = pooled_[rows].double(), target[rows, j].double()
        lam = 0.01 * (x * x).sum(1).mean()  # the lambda docs/methods.md states
        aug_x = torch.cat([x, lam.sqrt() * torch.eye(l, dtype=x.dtype)])
        aug_y = torch.cat([y, torch.zeros(l, out, dtype=y.dtype)])
        want = torch.linalg.lstsq(aug_x, aug_y).solution  # (l, out)
        got = method.Z.weight[j * out:(j + 1) * out].T.double()
        torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max().item(), rtol=0)


def test_ridge_operator_zero_is_min_norm_least_squares():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 12, generator=gen)
    x = torch.cat([x, x[:1]])  # a duplicate row: rank 5 of 6
    y = torch.randn(6, 7, generator=gen)
    y[5] = y[0]
    torch.testing.assert_close(ridge_operator_(x) @ y, torch.linalg.pinv(x.double()).float() @ y,
                               atol=1e-5, rtol=0)


def ridge_operator_(x):
    from ltune_cli.methods.base import ridge_operator

    return ridge_operator(x, 0.0)


@pytest.mark.parametrize("name,variant", [("lt_prefix", "paper"), ("lt_prefix", "per_token"),
                                          ("lt_prompt", "per_token")])
def test_warm_start_runs_on_the_backbones_device(name, variant, monkeypatch):
    """The method's maps are moved to the backbone's device before the warm start computes
    on the label states there (a GPU run failed: F on the CPU, states on cuda). The device
    here is torch's meta device, standing in for one that is not the CPU default."""
    from ltune_cli.models.backbone import Backbone, LabelStates

    bb = tiny_backbone("llama")
    labels = ["negative", "not very positive"]
    ls = bb.label_states(labels)
    kv, emb = bb.reading_kv(ls.ids, ls.mask), bb.embed(ls.ids).detach()
    meta = torch.device("meta")
    monkeypatch.setattr(Backbone, "device", property(lambda self: meta))
    monkeypatch.setattr(Backbone, "label_states", lambda self, texts, n=None: LabelStates(
        ls.states.to(meta), ls.mask.to(meta), ls.ids.to(meta)))
    monkeypatch.setattr(Backbone, "reading_kv", lambda self, ids, mask: kv.to(meta))
    monkeypatch.setattr(Backbone, "embed", lambda self, ids: emb.to(meta))
    method = build_method(MethodConfig(name=name, variant=variant), bb, labels)
    maps = [p for n, p in method.named_parameters() if n.split(".")[0] in ("F", "Z", "G")]
    assert maps and all(p.device == meta for p in maps)


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_paper_parameter_count_uses_kv_dim(family):
    """A.5's count with key/value heads: 2*l^2*L*kv_dim + 3d + 2 (llama here has 4 query and 2
    key/value heads, so kv_dim = d/2: the *d formula would count twice the prefix weights)."""
    bb = tiny_backbone(family)
    g = bb.geo
    method = build_method(MethodConfig(name="lt_prefix", variant="paper"), bb, LABELS)
    l = method.label_len
    assert method.num_trainable() == 2 * l * l * g.layers * g.kv_dim + 3 * g.hidden + 2
    assert family != "llama" or g.kv_dim * 2 == g.hidden


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["prefix", "prompt"])
def test_pair_framing_baselines_oracle(family, name):
    """method.pair_framing: text i against label k reads label k's own P tokens (a prompt of
    their embeddings / a prefix of the key/values the LM writes reading them) and nothing of
    the label's text; every score of the K x B grid equals the head on the reference encoding."""
    if family == "deberta-v2" and name == "prefix":
        pytest.skip("DeBERTa-v2 takes no key/value cache (refused, tests/test_methods.py)")
    bb = tiny_backbone(family)
    # in-vocabulary words: HF's reference takes xlm-roberta's unknown id (1) for its pad id
    words = [ids_of(bb, t) for t in ("the movie was good", "it was a very dull", "bad film so sad")]
    P = min(map(len, words))
    words = [w[:P] for w in words]
    method = build_method(MethodConfig(name=name, num_virtual_tokens=P, pair_framing=True), bb, LABELS).eval()
    assert not method.echo and method.positions_before_text() == P
    with torch.no_grad():
        method.table.copy_(torch.stack([bb.embed(torch.tensor(w)) if name == "prompt" else hf_cache(bb, w)[1]
                                        for w in words]))
    texts = [ids_of(bb, t) for t in TEXTS]
    want = torch.stack([torch.stack([reference(bb, name, w, t) for w in words]) for t in texts])  # (B, K, d)
    with torch.no_grad():
        z = method.head(want)
    for side in ("right", "left"):
        with torch.no_grad():
            got = method.scores(batch_of(bb, TEXTS, side))
        err = (got - (z[..., 1] - z[..., 0])).abs().max().item()
        assert err < TOL, f"{family} {name} pairs, padded {side}: max error {err:.2e}"
