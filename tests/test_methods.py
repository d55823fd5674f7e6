"""Every method on every tiny family: trains, keeps the base frozen, counts its parameters."""

from __future__ import annotations

import pytest
import torch

from conftest import DECODERS, FAMILIES, tiny_backbone
from ltune_cli.config import MethodConfig
from ltune_cli.errors import LtuneError
from ltune_cli.methods import build_method
from ltune_cli.methods.base import draw_pairs

LABELS = ["negative", "positive", "not neutral"]
METHODS = [("prefix", "per_token"), ("prompt", "per_token"), ("lt_prefix", "per_token"),
           ("lt_prefix", "paper"), ("lt_prompt", "per_token")]


def make_batch(bb, texts=("the movie was good", "bad film", "it was a very dull plot and so sad"),
               labels=(1, 0, 2), padding_side="right"):
    bb.tokenizer.padding_side = padding_side
    enc = bb.tokenizer(list(texts), padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
             "labels": torch.tensor(labels)}
    if "token_type_ids" in enc:
        batch["token_type_ids"] = enc["token_type_ids"]
    return batch


def build(family, name, variant="per_token", **kw):
    bb = tiny_backbone(family)
    cfg = MethodConfig(name=name, variant=variant, num_virtual_tokens=3, **kw)
    return bb, build_method(cfg, bb, LABELS)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name,variant", METHODS)
def test_two_steps_train_only_the_method(family, name, variant):
    if family == "deberta-v2" and "prefix" in name:
        with pytest.raises(LtuneError, match="no key/value cache"):
            build(family, name, variant)
        return
    bb, method = build(family, name, variant)
    frozen = {k: v.clone() for k, v in bb.state_dict().items()}
    before = {k: v.clone() for k, v in method.trainable_state().items()}
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    batch = make_batch(bb)
    for _ in range(2):
        loss = method.training_loss(batch, gen)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(p.grad is None for p in bb.parameters())
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in frozen.items()), "frozen base changed"
    after = method.trainable_state()
    assert any(not torch.equal(before[k], after[k]) for k in before), "nothing trained"
    scores = method.scores(batch)
    assert scores.shape == (3, len(LABELS)) and torch.isfinite(scores).all()


def test_paper_parameter_counts_match_a5():
    """A.5: LT-prefix 2*l^2*m*d + 3d, LT-prompt d(d+2); +2 for the 2-way head's biases."""
    bb = tiny_backbone("bert")
    d, m = bb.geo.hidden, bb.geo.layers
    l = max(len(bb.tokenizer(t)["input_ids"]) for t in LABELS)
    assert l == 4  # [CLS] not neutral [SEP]
    lt_prefix = build_method(MethodConfig(name="lt_prefix", variant="paper"), bb, LABELS)
    assert lt_prefix.num_trainable() == 2 * l * l * m * d + 3 * d + 2
    lt_prompt = build_method(MethodConfig(name="lt_prompt"), bb, LABELS)
    assert lt_prompt.num_trainable() == d * (d + 2) + 2
    per_token = build_method(MethodConfig(name="lt_prefix", variant="per_token"), bb, LABELS)
    assert per_token.num_trainable() == (d + 1) * m * 2 * d + 2 * d + 2
    prefix = build_method(MethodConfig(name="prefix", num_virtual_tokens=5), bb, LABELS)
    assert prefix.num_trainable() == m * 2 * 5 * d + d * 3 + 3


@pytest.mark.parametrize("family,kv_heads", [("llama", 2), ("falcon", 1), ("falcon-new", 4), ("bert", 4)])
def test_prefix_sized_by_key_value_heads(family, kv_heads):
    bb, method = build(family, "prefix")
    assert bb.geo.kv_heads == kv_heads
    assert method.prefix.shape == (2, 2, kv_heads, 3, bb.geo.head_dim)


@pytest.mark.parametrize("family", sorted(DECODERS))
@pytest.mark.parametrize("name", ["prefix", "lt_prefix", "lt_prompt"])
def test_decoders_pool_last_real_token_either_padding_side(family, name):
    bb, method = build(family, name)
    method.eval()
    right = method.scores(make_batch(bb, padding_side="right"))
    left = method.scores(make_batch(bb, padding_side="left"))
    torch.testing.assert_close(right, left, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", sorted(DECODERS))
@pytest.mark.parametrize("name", ["prompt", "lt_prompt"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("cached", [True, False])
def test_decoder_reads_a_shared_prompt_once_same_as_prepending_it(family, name, padding_side, cached,
                                                                   monkeypatch):
    """A causal decoder reads a prompt once per forward and hands its keys/values to every text
    behind it: the same loss, gradients and scores as prepending it to each text."""
    from ltune_cli.models.backbone import Backbone

    bb, method = build(family, name, cache_label_states=cached)
    method.eval()  # no dropout: the two runs must see the same computation
    batch = make_batch(bb, padding_side=padding_side)
    rows = []
    bb.model.register_forward_pre_hook(
        lambda m, a, kw: rows.append((kw.get("input_ids") if kw.get("input_ids") is not None
                                      else kw["inputs_embeds"]).shape[0]), with_kwargs=True)

    def run():
        method.zero_grad()
        loss = method.training_loss(batch, torch.Generator().manual_seed(0))
        loss.backward()
        with torch.no_grad():
            scores = method.scores(batch)
        return loss.detach(), scores, {k: p.grad.clone() for k, p in method.named_parameters()
                                       if p.requires_grad}

    assert bb.shares_prompt
    shared = run()
    distinct = 1 if name == "prompt" else (len(LABELS) if cached else 3)  # re-encoding: one per pair
    assert rows[0] == distinct and rows[1] == 3, rows  # the prompt(s) once, then the 3 texts
    monkeypatch.setattr(Backbone, "shares_prompt", property(lambda self: False))
    rows.clear()
    prepended = run()
    assert rows[0] == 3  # one forward of prompt + text per text
    torch.testing.assert_close(shared[0], prepended[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared[1], prepended[1], atol=1e-4, rtol=1e-4)
    for k in prepended[2]:
        torch.testing.assert_close(shared[2][k], prepended[2][k], atol=1e-5, rtol=1e-3, msg=k)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_prefix_changes_the_encoding(family):
    bb, method = build(family, "lt_prefix")
    batch = make_batch(bb)
    plain = bb.encode(batch["input_ids"], batch["attention_mask"])
    table, mask, idx = method._conditioning(torch.tensor([0, 1, 2]))
    with_prefix = method.encode_with(method.text_inputs(batch), table, mask, idx)
    assert (plain - with_prefix).abs().max() > 1e-3


def test_label_states_computed_once_and_constant():
    bb, method = build("bert", "lt_prompt")
    calls = []
    bb.model.register_forward_hook(lambda *a: calls.append(1))
    ref = method.labels_frozen.states.clone()
    gen = torch.Generator().manual_seed(0)
    batch = make_batch(bb)
    method.training_loss(batch, gen).backward()
    assert len(calls) == 1  # only the text forward: labels come from the cache
    assert torch.equal(method.labels_frozen.states, ref)
    recompute = bb.label_states(LABELS)
    torch.testing.assert_close(recompute.states, ref)


def test_per_step_reencoding_mode_gives_the_same_scores():
    bb, cached = build("bert", "lt_prefix")
    uncached = build_method(MethodConfig(name="lt_prefix", num_virtual_tokens=3, cache_label_states=False),
                            bb, LABELS)
    uncached.load_trainable_state(cached.trainable_state())
    batch = make_batch(bb)
    cached.eval(), uncached.eval()
    torch.testing.assert_close(cached.scores(batch), uncached.scores(batch), atol=1e-5, rtol=1e-5)


def test_batched_eval_equals_one_label_at_a_time():
    bb, method = build("gpt2", "lt_prefix")
    method.eval()
    batch = make_batch(bb)
    scores = method.scores(batch)
    for k in range(len(LABELS)):
        one = method.pair_logits(method.text_inputs(batch), torch.full((3,), k))
        torch.testing.assert_close(scores[:, k], one, atol=1e-5, rtol=1e-5)


def test_draw_pairs_half_true_and_wrong_labels_are_wrong():
    labels = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(1))
    idx, target = draw_pairs(labels, 5, torch.Generator().manual_seed(0))
    assert target.sum() == 32
    assert torch.equal(idx[target == 1], labels[target == 1])
    assert (idx[target == 0] != labels[target == 0]).all()
    idx2, target2 = draw_pairs(labels, 5, torch.Generator().manual_seed(0))
    assert torch.equal(idx, idx2) and torch.equal(target, target2)
    idx3, _ = draw_pairs(labels, 5, torch.Generator().manual_seed(2))
    assert not torch.equal(idx, idx3)


# The warm start's claims (label, then text) are tested in tests/test_exactness.py.


def test_random_init_is_selectable():
    bb = tiny_backbone("bert")
    a = build_method(MethodConfig(name="lt_prompt", init_from_label=False), bb, LABELS)
    assert torch.equal(a.G.weight, torch.eye(bb.geo.hidden))


def test_head_learning_rate_is_its_own_group():
    bb = tiny_backbone("bert")
    m = build_method(MethodConfig(name="lt_prefix", lr=3e-4, head_lr=5e-3), bb, LABELS)
    groups = m.param_groups(3e-4)
    assert [g["lr"] for g in groups] == [3e-4, 5e-3]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in m.head.parameters()}
    assert sum(p.numel() for g in groups for p in g["params"]) == m.num_trainable()
    plain = build_method(MethodConfig(name="prefix"), bb, LABELS).param_groups(1e-2)
    assert all(g["lr"] == 1e-2 for g in plain)


def test_labels_with_near_identical_frozen_states_warn_with_the_cosine(caplog):
    """The warning half of the label check (the error half, identical tokens, is in failure_cases)."""
    from conftest import make_tokenizer
    from ltune_cli.models.backbone import check_distinct_labels

    tok = make_tokenizer()
    ids = torch.tensor([[2, 8, 3], [2, 9, 3], [2, 12, 3]])  # three different label words
    mask = torch.ones_like(ids)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 8, generator=g)
    near = base + 2e-2 * torch.randn(3, 8, generator=g)  # label 1 ~ label 0
    states = torch.stack([base, near, torch.randn(3, 8, generator=g)])  # (K, l, d)
    with caplog.at_level("WARNING", logger="ltune"):
        check_distinct_labels(["good", "Good", "bad"], ids, mask, states, tok, None)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "'good' and 'Good' have near-identical frozen states (cosine 0.99" in lines[0], lines
    caplog.clear()
    with caplog.at_level("WARNING", logger="ltune"):
        check_distinct_labels(["good", "Good", "bad"], ids, mask, torch.randn(3, 3, 8, generator=g), tok, None)
    assert not caplog.records
    with pytest.raises(LtuneError, match="'good' and 'bad' reach the model as the same tokens"):
        check_distinct_labels(["good", "Good", "bad"], ids[[0, 1, 0]], mask, states, tok, None)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("name", ["lt_prefix", "lt_prompt"])
def test_label_echo_and_decoder_lr_follow_the_model_kind(family, name):
    """label_echo=auto and method.decoder_lr apply to causal decoders only; on/off force the echo."""
    bb = tiny_backbone(family)
    decoder = bb.geo.kind == "decoder"
    m = build_method(MethodConfig(name=name, lr=3e-4, decoder_lr=1e-5), bb, ["negative", "positive"])
    assert m.echo == decoder and m.default_lr() == (1e-5 if decoder else 3e-4)
    assert m.positions_before_text() == m.label_len + (m.echo_ids.shape[1] if decoder else 0)
    assert build_method(MethodConfig(name=name, label_echo="on"), bb, ["negative", "positive"]).echo
    assert not build_method(MethodConfig(name=name, label_echo="off"), bb, ["negative", "positive"]).echo
    assert build_method(MethodConfig(name=name, lr=3e-4), bb, ["negative", "positive"]).default_lr() == 3e-4


def test_engine_trains_the_map_at_decoder_lr(sentiment_files, tmp_path, tiny_llama_dir, monkeypatch):
    """The optimizer gets method.decoder_lr for a decoder's label map (train.lr still overrides)."""
    from conftest import tiny_overrides
    from ltune_cli import engine
    from ltune_cli.config import compose

    seen = []
    real = engine.make_optimizer
    monkeypatch.setattr(engine, "make_optimizer", lambda groups, wd: seen.append([g["lr"] for g in groups])
                        or real(groups, wd))
    for extra, want in (([], [1e-5, 5e-3]), (["train.lr=0.1"], [0.1, 5e-3])):
        ov = tiny_overrides(*sentiment_files, tmp_path / f"run{len(seen)}", method="lt_prefix", steps=1)
        engine.train(compose([*ov, f"model.path={tiny_llama_dir}", "method.lr=3e-4", "method.decoder_lr=1e-5",
                              "method.head_lr=5e-3", *extra]))
        assert seen[-1] == want


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("name", ["prefix", "prompt"])
def test_baselines_in_pair_framing_train_per_label_tokens(family, name):
    """method.pair_framing: P trainable tokens per label, a pair head, L-Tuning's loss; no echo of
    the label's text, and the baseline's learning rate on a decoder too."""
    from ltune_cli.methods.base import PairMethod

    bb, method = build(family, name, pair_framing=True, decoder_lr=1e-9)
    g, K, P = bb.geo, len(LABELS), 3
    per_label = P * g.hidden if name == "prompt" else P * g.layers * 2 * g.kv_dim
    assert isinstance(method, PairMethod) and not method.echo and method.default_lr() == method.cfg.lr
    assert method.num_trainable() == K * per_label + 2 * g.hidden + 2
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    before = method.table.detach().clone()
    batch = make_batch(bb, labels=(1, 1, 1))
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        method.training_loss(batch, gen).backward()
        opt.step()
        opt.zero_grad()
    changed = [not torch.equal(before[k], method.table[k]) for k in range(K)]
    assert changed[1] and all(p.grad is None for p in bb.parameters())
    assert method.scores(batch).shape == (3, K)
    with pytest.raises(LtuneError, match="method.pair_framing' is for prefix and prompt"):
        build(family, "lt_prompt", pair_framing=True)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("name,variant,pairs", [(n, v, False) for n, v in METHODS] + [("prefix", "per_token", True),
                                                                                        ("prompt", "per_token", True)])
def test_memory_plan_counts_what_the_method_trains(family, name, variant, pairs):
    from ltune_cli import memory

    bb, method = build(family, name, variant, pair_framing=pairs)
    g = bb.geo
    arch = {"hidden": g.hidden, "layers": g.layers, "heads": g.heads, "kv_heads": g.kv_heads}
    label_len = method.label_len if hasattr(method, "label_len") else 1
    assert memory.method_params(arch, method.cfg, len(LABELS), label_len)["trainable"] == method.num_trainable()
