"""`ltune export <run>`: a run's trained weights in a form other tools load.

--format peft (prefix, prompt runs): a PEFT adapter folder that `PeftModel.from_pretrained(base,
folder)` loads, written by PEFT itself (`get_peft_model` + `save_pretrained`, so the file's key
names are PEFT's), task type FEATURE_EXTRACTION on the bare `AutoModel`:

    prefix -> PREFIX_TUNING, no projection: prompt_embeddings (P, L * 2 * kv_heads * head_dim),
              row p = position p's (layer, key/value, head, head_dim) flattened: ltune's prefix
              (L, 2, kv_heads, P, head_dim) permuted. kv_heads/token_dim are written explicitly
              (grouped- and multi-query caches: Llama, Falcon).
    prompt -> PROMPT_TUNING: prompt_embeddings (P, d), ltune's prompt as it is.

The K-way classifier head is not part of a PEFT prompt-learning adapter (modules_to_save names
modules inside the base model; ltune's head sits on the pooled hidden state outside it), so it is
written beside the adapter as head.safetensors ({"weight": (K, d), "bias": (K,)}), and
ltune.json says how to pool (`peft_logits` is the recipe, README shows it in plain code).

Before anything is kept, the folder is loaded back with PEFT and scored on probe texts; the
export is refused unless those logits match ltune's own (`CHECK_TOLERANCE`): a family whose
layout PEFT gets wrong is refused, never exported silently wrong.

--format ltune (lt_prefix, lt_prompt; any run): PEFT has no method that maps label states to
a prefix or prompt, so the run's trainable weights go out as adapter.safetensors + ltune.json
(method, variant, label texts, base model, shapes, how the weights are used).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ltune_cli import runfolder
from ltune_cli.errors import LtuneError

FORMATS = ("auto", "peft", "ltune")
PEFT_METHODS = {"prefix": "PREFIX_TUNING", "prompt": "PROMPT_TUNING"}
#: max |PEFT - ltune| / max |ltune| over the probe logits. Measured on the tiny random models
#: (initializer_range 0.25) in fp32: 0 for prefix on every family, <= 1.3e-6 for prompt on a
#: decoder (ltune reads the prompt once and passes its key/values on; PEFT concatenates).
#: A wrong layout is off by O(1). Half precision rounds at ~4e-3.
CHECK_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 5e-2}
PROBE_TEXTS = ("the movie was good", "a dull and awful plot", "it was fine")


def default_out(run: Path, fmt: str) -> Path:
    return Path(run) / f"adapter-{fmt}"


def export_run(run, out=None, fmt: str = "auto", overrides=(), *, backbone=None) -> dict:
    """Write the export of `run` into `out` (a new or empty folder); returns ltune.json's record.
    `overrides`: where the base runs for the check (RUNTIME_KEYS, e.g. hardware=cpu for a GPU run)."""
    from ltune_cli.evaluate import RUNTIME_KEYS, load_run_config

    run = Path(run)
    if fmt not in FORMATS:
        raise LtuneError(f"--format {fmt}: use one of {', '.join(FORMATS)}.")
    cfg, _ = load_run_config(run, list(overrides or ()), RUNTIME_KEYS, "export")
    method = str(cfg.method.name)
    pairs = bool(cfg.method.get("pair_framing", False))  # per-label tokens + pair head: not PEFT's shape
    if fmt == "auto":
        fmt = "peft" if method in PEFT_METHODS and not pairs else "ltune"
    if fmt == "peft" and pairs:
        raise LtuneError(f"--format peft: this run's {method} scores (text, label) pairs with its own tokens per "
                         f"label (method.pair_framing=true), which PEFT cannot express; use --format ltune.")
    if fmt == "peft" and method not in PEFT_METHODS:
        raise LtuneError(f"--format peft: this run's method is {method}, which PEFT cannot express (its prefix or "
                         f"prompt is computed from the label texts by a trained map); use --format ltune "
                         f"(adapter.safetensors + ltune.json with the label texts).")
    out = Path(out) if out is not None else default_out(run, fmt)
    _check_out(out)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=_parent(out)))
    try:
        record = (_write_peft if fmt == "peft" else _write_ltune)(run, cfg, tmp, backbone)
        runfolder.write_json(tmp / "ltune.json", record)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _parent(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LtuneError(f"export --out {out}: cannot create its parent folder ({runfolder.os_reason(e)}).") from None
    return out.parent


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LtuneError(f"export --out {out}: already exists and is not an empty folder; choose a new folder "
                         f"(an export never overwrites files).")


def _base(cfg) -> dict:
    return {"ltune_version": runfolder._version(), "method": str(cfg.method.name),
            "label_texts": [str(t) for t in cfg.dataset.label_texts], "base_model": str(cfg.model.path),
            "model": str(cfg.model.name), "dataset": str(cfg.dataset.name)}


def _write_ltune(run: Path, cfg, out: Path, backbone) -> dict:
    """adapter.safetensors (the run's trainable weights as trained) + the record that explains them."""
    import shutil as sh

    state = runfolder.read_trainable(run)
    sh.copyfile(run / "trainable.safetensors", out / "adapter.safetensors")
    m = cfg.method
    uses = {
        "lt_prefix": "each label text is read by the frozen base (eval mode; decoders after their BOS/EOS token); "
                     "Z maps its last-layer states (l, d) to a key/value prefix (l, L, 2, kv_heads, head_dim) "
                     "(variant paper: F pools each token to a scalar first); the text is read under that prefix "
                     "(pad slots masked, positions after the label's real tokens) and pooled; with label_echo "
                     "(auto: decoders) the text is followed by the label's own tokens and the pair pooled at the "
                     "last of them; head (2, d): score = z[1] - z[0]; the prediction is the label with the highest "
                     "score",
        "lt_prompt": "each label text is read by the frozen base; G maps its last-layer states (l, d) to l soft "
                     "tokens placed before the text (with label_echo, auto on decoders, the label's own tokens "
                     "follow the text); pooled; head (2, d): score = z[1] - z[0]; argmax over labels",
        "prefix": "prefix (L, 2, kv_heads, P, head_dim): per layer key/value prefix; head (K, d) on the pooled state",
        "prompt": "prompt (P, d): soft tokens before the text; head (K, d) on the pooled state",
    }[str(m.name)]
    return {**_base(cfg), "format": "ltune", "why": ("PEFT has no method for a prefix/prompt computed from the "
                                                     "label texts; these are ltune's own weights"
                                                     if m.name not in PEFT_METHODS else "requested --format ltune"),
            "variant": str(m.variant) if m.name == "lt_prefix" else None, "label_len": m.label_len,
            # on: each text is followed by its label's tokens and the pair pooled at the last one
            # (auto: on for decoders); PairMethod.pair_batch
            "label_echo": str(m.label_echo) if m.name in ("lt_prefix", "lt_prompt") else None,
            "num_virtual_tokens": m.num_virtual_tokens if m.name in PEFT_METHODS else None,
            "pooling": str(cfg.model.pooling), "max_length": int(cfg.model.max_length),
            "weights": {k: list(v.shape) for k, v in sorted(state.items())}, "uses": uses,
            "files": ["adapter.safetensors", "ltune.json"]}


def _write_peft(run: Path, cfg, out: Path, backbone) -> dict:
    import importlib.util

    import torch

    if importlib.util.find_spec("peft") is None:
        raise LtuneError("export --format peft writes the adapter with PEFT, which is not installed: "
                         "pip install -e '.[peft]' (or --format ltune).")

    from ltune_cli import engine

    hw = cfg.hardware
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)
    label_texts = [str(t) for t in cfg.dataset.label_texts]
    backbone, method = engine.build_model(cfg, label_texts, backbone=backbone)
    runfolder.load_trainable(method, run)
    method.eval()
    if cfg.dataset.text_pair_column and backbone.family.uses_token_type_ids:
        raise LtuneError(f"export --format peft: {cfg.dataset.name} has text pairs and {backbone.geo.family} reads "
                         f"them with token_type_ids, which PEFT's prompt-learning forward drops, so PEFT would not "
                         f"reproduce ltune's scores; use --format ltune.")
    base = _base(cfg)
    if cfg.dataset.text_pair_column:  # how ltune's batching (encode_examples) joins a pair
        base["text_pairs"] = ("tokenizer(text, text_pair)" if getattr(backbone.tokenizer, "sep_token", None)
                              else "tokenizer(text + '\\n' + text_pair): the tokenizer has no pair template")
    return write_peft_adapter(method, out, base, str(hw.dtype))


def write_peft_adapter(method, out: Path, base: dict, dtype: str = "fp32") -> dict:
    """The PEFT adapter of a prefix/prompt `method` (weights loaded) + head.safetensors into `out`,
    checked by loading it back with PEFT; returns ltune.json's record (not written here)."""
    import warnings

    from safetensors.torch import save_file

    backbone = method.backbone
    P = int(method.cfg.num_virtual_tokens)
    batch, ref = _probe(method, backbone, base["label_texts"], dtype)  # before PEFT wraps the base
    peft_cfg, weights = _peft_config(method, P)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations PEFT triggers
        _save_with_peft(backbone.model, peft_cfg, weights, out)
        head = {"weight": method.head.weight.detach().float().cpu().contiguous(),
                "bias": method.head.bias.detach().float().cpu().contiguous()}
        save_file(head, str(out / "head.safetensors"), metadata={"format": "pt"})
        record = {**base, "format": "peft", "peft_type": PEFT_METHODS[method.name],
                  "task_type": "FEATURE_EXTRACTION", "num_virtual_tokens": P, "family": backbone.geo.family,
                  "base_model_folder": peft_cfg.base_model_name_or_path,
                  "pooling": backbone.pooling, "prompt_positions": P if method.name == "prompt" else 0,
                  "padding_side": "right", "head": "head.safetensors: logits = pooled @ weight.T + bias, "
                                                    "one per label text, argmax = prediction",
                  "files": ["adapter_config.json", "adapter_model.safetensors", "head.safetensors", "ltune.json",
                            "README.md (PEFT's model card)"]}
        record["check"] = _check(backbone, out, record, head, batch, ref, dtype)
    return record


def _peft_config(method, P: int):
    """(PEFT config, the (P, width) tensor PEFT keeps as its prompt embedding)."""
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType

    g = method.backbone.geo
    if method.name == "prefix":
        # ltune (L, 2, kvh, P, hd) -> PEFT's rows (P, L * 2 * kvh * hd): get_prompt views a row as
        # (L * 2, kvh, hd) and splits it into per-layer (key, value).
        weights = method.prefix.detach().permute(3, 0, 1, 2, 4).reshape(P, -1)
        cfg = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P,
                                 num_layers=g.layers, token_dim=g.kv_dim, num_attention_heads=g.kv_heads,
                                 prefix_projection=False, inference_mode=True)
    else:
        weights = method.prompt.detach()
        cfg = PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P, token_dim=g.hidden,
                                 num_layers=g.layers, num_attention_heads=g.heads, inference_mode=True)
    cfg.base_model_name_or_path = str(method.backbone.model.config._name_or_path or "") or None
    return cfg, weights.float().cpu().contiguous()


def _save_with_peft(model, peft_cfg, weights, out: Path) -> None:
    """PEFT wraps the base (prompt learning adds no module to it), takes the weights and saves itself."""
    import torch
    from peft import get_peft_model

    try:
        pm = get_peft_model(model, peft_cfg)
        emb = pm.prompt_encoder["default"].embedding.weight
        if tuple(emb.shape) != tuple(weights.shape):
            raise LtuneError(f"export --format peft: PEFT lays this model's {peft_cfg.peft_type.value} out as "
                             f"{tuple(emb.shape)}, ltune's weights are {tuple(weights.shape)}; use --format ltune.")
        with torch.no_grad():
            emb.copy_(weights.to(emb.device, emb.dtype))
        pm.save_pretrained(str(out))
    except LtuneError:
        raise
    except Exception as e:  # noqa: BLE001 - PEFT refusing this architecture
        raise LtuneError(f"export --format peft: PEFT cannot build a {peft_cfg.peft_type.value} adapter for this "
                         f"model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); use --format "
                         f"ltune.") from None


def peft_logits(peft_model, batch: dict, record: dict, head: dict):
    """(B, K) logits of a loaded PEFT adapter, as ltune.json describes: the base's last hidden
    state (B, prompt_positions + T, d), pooled (cls: position 0; last: the last real token; mean:
    over real positions, prompt included), then the head. batch: right-padded input_ids,
    attention_mask (B, T); token_type_ids are not passed (PEFT drops them)."""
    import torch

    mask = batch["attention_mask"]
    hidden = peft_model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    P = record["prompt_positions"]
    if P:
        mask = torch.cat([mask.new_ones(mask.shape[0], P), mask], 1)
    m = mask.to(hidden.dtype)
    if record["pooling"] == "mean":
        pooled = (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
    elif record["pooling"] == "cls":
        pooled = hidden[:, 0]
    else:
        pooled = hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]
    return pooled.float() @ head["weight"].T.to(pooled.device) + head["bias"].to(pooled.device)


def _probe(method, backbone, label_texts, dtype: str):
    """(batch of PROBE_TEXTS + the label texts, right-padded; ltune's (N, K) logits on it)."""
    import torch

    from ltune_cli.batching import collate, encode_examples
    from ltune_cli.data import Example
    from ltune_cli.engine import autocaster

    texts = [*PROBE_TEXTS, *label_texts]
    enc = encode_examples([Example(t, 0) for t in texts], backbone.tokenizer, 64, what="export check")
    batch = collate(enc, list(range(len(texts))), backbone.pad_id, "right", backbone.device)
    with torch.inference_mode(), autocaster(backbone.device, dtype)():
        return batch, method.scores(batch).float().cpu()


def _check(backbone, out: Path, record: dict, head: dict, batch: dict, ref, dtype: str) -> dict:
    """Load `out` back with PEFT and compare its logits with ltune's `ref`; refuse on a mismatch."""
    import torch
    from peft import PeftModel

    from ltune_cli.engine import autocaster

    with torch.inference_mode(), autocaster(backbone.device, dtype)():
        pm = PeftModel.from_pretrained(backbone.model, str(out)).eval()
        got = peft_logits(pm, batch, record, head).float().cpu()
    err = ((got - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()
    tol = CHECK_TOLERANCE[dtype]
    if not err <= tol:
        raise LtuneError(f"export --format peft: the adapter loaded with PEFT gives other logits than ltune on "
                         f"{backbone.geo.family} (relative difference {err:.2e} > {tol:g}); PEFT lays this "
                         f"model's cache out differently. Use --format ltune.")
    return {"texts": len(ref), "max_relative_difference": err, "tolerance": tol, "dtype": dtype}


def read_record(folder) -> dict:
    return json.loads((Path(folder) / "ltune.json").read_text(encoding="utf-8"))
