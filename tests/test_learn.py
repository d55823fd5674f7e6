"""What a decoder needs to learn (issue 11 item 12): a prefix that starts as a reading of real
tokens, and label texts read after a start token. The slow tests pin both on SmolLM2-135M."""

from __future__ import annotations

import pytest
import torch

from conftest import DECODERS, tiny_backbone
from ltune_cli.config import MethodConfig
from ltune_cli.methods import build_method

LABELS = ["negative", "positive"]
TEXT = "the movie was good"


def _draws(bb, draw):
    """What the method draws after seed 0 and its K-way head's initialisation."""
    torch.manual_seed(0)
    torch.nn.Linear(bb.geo.hidden, len(LABELS))
    return draw()


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_prefix_starts_as_a_reading_of_vocabulary_tokens(family):
    """init=vocab: at step 0 the text is encoded exactly as the frozen LM encodes the P drawn
    tokens followed by the text (positions continue after them, as for lt_prefix)."""
    bb = tiny_backbone(family)
    ids = _draws(bb, lambda: torch.randint(0, bb.model.get_input_embeddings().weight.shape[0], (1, 3)))
    torch.manual_seed(0)
    method = build_method(MethodConfig(name="prefix", num_virtual_tokens=3, init="vocab"), bb, LABELS)
    enc = bb.tokenizer([TEXT], return_tensors="pt")
    got = method.encode({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    joint = torch.cat([ids, enc["input_ids"]], 1)
    want = bb.hidden_states(joint, torch.ones_like(joint))[:, -1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_prefix_normal_init_is_selectable():
    bb = tiny_backbone("llama")
    torch.manual_seed(0)
    m = build_method(MethodConfig(name="prefix", num_virtual_tokens=3, init="normal"), bb, LABELS)
    assert torch.equal(m.prefix, _draws(bb, lambda: torch.randn(m.prefix.shape)))


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_decoder_reads_label_after_start_token(family):
    """A decoder's label texts start with the tokenizer's BOS (else EOS); added once only."""
    bb = tiny_backbone(family)
    assert bb.label_start_id() is None  # the tiny tokenizer has neither
    plain = bb.label_states(LABELS).ids
    bb.tokenizer.bos_token = "[CLS]"
    start = bb.tokenizer.bos_token_id
    framed = bb.label_states(LABELS)
    assert framed.ids[:, 0].tolist() == [start, start]
    assert torch.equal(framed.ids[:, 1:], plain)
    assert framed.mask[:, 0].tolist() == [1, 1]
    bb.tokenizer.bos_token, bb.tokenizer.eos_token = None, "[SEP]"
    assert bb.label_start_id() == bb.tokenizer.eos_token_id


def test_encoder_label_framing_unchanged():
    bb = tiny_backbone("bert")
    bb.tokenizer.bos_token = "[CLS]"
    assert bb.label_start_id() is None
    assert bb.label_states(LABELS).ids[0].tolist() == bb.tokenizer("negative")["input_ids"]


# --- SmolLM2-135M (slow: real weights; ~1 min on an idle core) -------------------------------
@pytest.fixture(scope="module")
def smollm2():
    from ltune_cli.config import compose
    from ltune_cli.models.backbone import load_backbone

    torch.set_num_threads(1)
    cfg = compose(["model=smollm2_135m"])
    return load_backbone(cfg.model, cfg.hardware)


@pytest.mark.slow
def test_smollm2_labels_differ_once_read_after_bos(smollm2):
    """Read at position 0, 'negative' and 'positive' end in states of cosine 0.99987 (the map
    of lt_prefix / lt_prompt then moves both labels alike); after <|im_start|>, 0.897."""
    lab = smollm2.label_states(LABELS)
    assert lab.ids[:, 0].tolist() == [smollm2.tokenizer.bos_token_id] * 2
    last = smollm2.pool(lab.states, lab.mask)
    assert torch.nn.functional.cosine_similarity(last[0], last[1], dim=0) < 0.95


@pytest.mark.slow
@pytest.mark.parametrize("init,low,high", [("vocab", 0.65, 1.0), ("normal", 0.0, 0.6)])
def test_smollm2_prefix_step0_keeps_the_text(init, low, high):
    """A logistic probe on the step-0 prefix encodings (200 train / 200 dev SST-2 texts):
    0.755 with init=vocab vs 0.470 with an N(0, 1) prefix on 300 / 200 (frozen base: 0.72)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from step0_probe import probe, step0_features

    acc = probe(*step0_features("smollm2_135m", "prefix", 200, 200, [f"method.init={init}"]))
    assert low <= acc <= high, acc


# --- the decoder learns (issue 11 item 12): every method on SmolLM2 beats the frozen probe ----
#: The bar: a standardised logistic probe on the frozen last-token states (600 SST-2 train
#: sentences, L-BFGS) reaches 0.723 on 400 dev sentences (scripts/step0_probe.py smollm2_135m none
#: 600 400); the issue measured 0.743 on 300. Short runs here, on the first 200 dev sentences.
SMOLLM2_PROBE = 0.743


@pytest.mark.slow
@pytest.mark.parametrize("method,steps", [("prefix", 100), ("lt_prefix", 200), ("lt_prompt", 300)])
def test_smollm2_learns_sst2(method, steps, tmp_path, smollm2):
    """Default settings a user gets (label echo and decoder_lr for L-Tuning): each method ends
    above the frozen-feature probe; prefix and lt_prefix on a short budget, lt_prompt on the
    default 300 steps (a 200-step run ended at 0.57). Before the label echo,
    lt_prefix and lt_prompt stayed at 0.48-0.55 (docs/methods.md "Decoders")."""
    import json

    from ltune_cli import engine
    from ltune_cli.config import compose

    cfg = compose(["model=smollm2_135m", f"method={method}", f"train.max_steps={steps}",
                   f"train.eval_every={steps}", "dataset.eval_limit=200", "hardware.num_threads=1",
                   "train.progress=false", f"out_dir={tmp_path / 'run'}"])
    run = engine.train(cfg, backbone=smollm2)
    acc = json.loads((run / "results.json").read_text())["final"]["accuracy"]
    assert acc > SMOLLM2_PROBE, f"{method}: {acc:.3f} after {steps} steps"


#: MiniLM's frozen-feature probe ([CLS] states, same recipe): 0.630 (docs/methods.md "Decoders").
MINILM_PROBE = 0.630


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prefix", "prompt", "lt_prefix", "lt_prompt"])
def test_minilm_learns_sst2(method, tmp_path):
    """The encoder at its default budget (300 steps): every method above its frozen probe."""
    import json

    from ltune_cli import engine
    from ltune_cli.config import compose

    torch.set_num_threads(1)
    cfg = compose([f"method={method}", "dataset.eval_limit=200", "hardware.num_threads=1",
                   "train.progress=false", f"out_dir={tmp_path / 'run'}"])
    acc = json.loads((engine.train(cfg) / "results.json").read_text())["final"]["accuracy"]
    assert acc > MINILM_PROBE, f"{method}: {acc:.3f}"
