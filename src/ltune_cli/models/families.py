"""Model families as data: where each architecture differs, in one table.

The methods need, from any frozen base: its depth, how many key/value heads a layer's
cache holds and their size (for prefixes), whether it is an encoder (pool [CLS]/mean)
or a decoder (pool the last real token), and how positions are passed. Everything else
is the same code path. Adding a family is adding a row, never a modeling file.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltune_cli.errors import LtuneError, suggest


@dataclass(frozen=True)
class Family:
    kind: str  # "encoder" | "decoder"
    # How text positions are given to the model:
    #   "explicit": we pass position_ids (offset added: RoBERTa counts from padding_idx + 1)
    #   "mask": positions come from the attention mask inside the model (Bloom's ALiBi)
    #   "relative": no absolute positions (DeBERTa's relative attention)
    positions: str = "explicit"
    # First text position: a number, or a config attribute whose value + 1 it is (RoBERTa's
    # position ids start after its padding_idx, which is config.pad_token_id).
    position_offset: int | str = 0
    # Whether the model's attention accepts a key/value cache (needed for prefix methods).
    kv_cache: bool = True
    # Config attribute holding the number of key/value heads; None = one per attention head.
    kv_heads_attr: str | None = None
    # Special cases of the cache layout, keyed by config flags: (flag, value, kv_heads rule).
    # Rules: "heads" = num_attention_heads, "one" = 1 (multi-query), or a config attribute.
    kv_heads_rules: tuple[tuple[str, object, str], ...] = ()
    uses_token_type_ids: bool = False
    no_cache_reason: str = ""


FAMILIES: dict[str, Family] = {
    "bert": Family("encoder", uses_token_type_ids=True),
    "roberta": Family("encoder", position_offset="pad_token_id"),  # padding_idx + 1 (2 when pad is 1)
    "deberta-v2": Family("encoder", positions="relative", kv_cache=False, uses_token_type_ids=True,
                         no_cache_reason="DeBERTa-v2's attention in transformers takes no key/value cache"),
    "gpt2": Family("decoder"),
    "llama": Family("decoder", kv_heads_attr="num_key_value_heads"),
    "bloom": Family("decoder", positions="mask"),
    # Falcon: the new decoder architecture (40B/180B/Falcon-2) caches keys broadcast to all
    # heads; the original 7B layout is multi-query (one shared key/value head).
    "falcon": Family("decoder", kv_heads_attr="num_kv_heads",
                     kv_heads_rules=(("new_decoder_architecture", True, "heads"), ("multi_query", True, "one"))),
    # Llama-like decoders (rotary positions, grouped-query cache) and XLM-RoBERTa (RoBERTa's
    # layout and position offset). Each has a tiny model and an oracle test (tests/test_families.py).
    "qwen2": Family("decoder", kv_heads_attr="num_key_value_heads"),
    "mistral": Family("decoder", kv_heads_attr="num_key_value_heads"),
    "gemma": Family("decoder", kv_heads_attr="num_key_value_heads"),
    "gemma2": Family("decoder", kv_heads_attr="num_key_value_heads"),
    "xlm-roberta": Family("encoder", position_offset="pad_token_id"),  # padding_idx + 1
}


@dataclass(frozen=True)
class Geometry:
    """The shapes a method needs: layers L, hidden d, heads, key/value heads and head size."""

    family: str
    kind: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def position_offset(fam: Family, config) -> int:
    """The number added to 0-based text positions (Family.position_offset resolved on `config`)."""
    if isinstance(fam.position_offset, int):
        return fam.position_offset
    return int(getattr(config, fam.position_offset)) + 1


def family_name(model_type: str | None, requested: str = "auto", where: str = "config.json") -> str:
    """The FAMILIES row a model runs with: its own model_type, or model.family when set.

    Refuses an unsupported family with the supported list (read from config.json before any
    weight loads, so the refusal is immediate)."""
    name = model_type if requested == "auto" else requested
    if name in FAMILIES:
        return name
    near = suggest(name, FAMILIES) if requested != "auto" else ""  # a typo in model.family, not a model_type
    near = near if near.startswith(" Did you mean") else ""
    src = "model.family" if requested != "auto" else f"model_type in {where}"
    raise LtuneError(f"model family '{name}' ({src}) is not supported.{near} Supported: {', '.join(FAMILIES)}; "
                     f"a Llama-like decoder of another family runs with model.family=llama (docs/models.md).")


def family_of(config, requested: str = "auto") -> tuple[str, Family]:
    name = family_name(getattr(config, "model_type", None), requested)
    return name, FAMILIES[name]


def require_kv_cache(family: str, method: str) -> None:
    """Refuse a method that passes a key/value prefix on a family whose attention takes none."""
    fam = FAMILIES[family]
    if not fam.kv_cache:
        raise LtuneError(f"method '{method}' needs a key/value prefix, but {fam.no_cache_reason}; "
                         f"use method=prompt or method=lt_prompt with this model.")


def resolve_pooling(kind: str, family: str, requested: str = "auto") -> str:
    """auto: the first token ([CLS]) for encoders, the last real token for decoders.

    The first token of a causal decoder attends to nothing after it: it cannot see the text,
    so every text would get the same encoding. That combination is refused."""
    if requested == "auto":
        return "cls" if kind == "encoder" else "last"
    if requested == "cls" and kind == "decoder":
        raise LtuneError(f"model.pooling=cls on a {family} decoder: its first token cannot see the text after "
                         f"it, so every text would get the same encoding; use model.pooling=auto (the last "
                         f"real token) or mean.")
    return requested


def resolve_label_echo(kind: str, requested: str = "auto") -> bool:
    """L-Tuning's label echo (method.label_echo): auto = on for causal decoders, whose last text
    token attends to a label read before the text only weakly; off for encoders ([CLS] reads both
    ways). docs/methods.md "Decoders"."""
    return kind == "decoder" if requested == "auto" else requested == "on"


def geometry(config, requested: str = "auto") -> Geometry:
    name, fam = family_of(config, requested)
    missing = [a for a in ("num_attention_heads", "hidden_size", "num_hidden_layers") if getattr(config, a, None) is None]
    if missing:
        raise LtuneError(f"the model's config ({getattr(config, 'model_type', '?')}) has no {', '.join(missing)}: "
                         f"the {name} family row does not describe it (model.family).")
    heads = config.num_attention_heads
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, fam.kv_heads_attr, None) if fam.kv_heads_attr else None
    kv_heads = kv_heads or heads
    for flag, value, rule in fam.kv_heads_rules:
        if getattr(config, flag, None) == value:
            kv_heads = heads if rule == "heads" else 1 if rule == "one" else getattr(config, rule)
            break
    return Geometry(name, fam.kind, config.num_hidden_layers, hidden, heads, kv_heads, head_dim)


# conf/model arch keys that are transformers config attributes of the same name, per family
ARCH_FLAGS = {
    "falcon": ("alibi", "multi_query", "new_decoder_architecture", "parallel_attn", "bias"),
    "deberta-v2": ("relative_attention", "position_buckets", "pos_att_type", "position_biased_input",
                   "share_att_key", "norm_rel_ebd", "max_relative_positions"),
}


def config_from_arch(arch: dict):
    """A transformers config (no weights) of a conf/model preset's published architecture (`arch`):
    what `ltune validate` plans from, as a model transformers can build (tests build every preset at
    tiny width this way; scripts/gpu_figures.py builds a 7B one with random weights)."""
    from transformers import AutoConfig

    mt, layers, hidden, heads, kv = arch["model_type"], arch["layers"], arch["hidden"], arch["heads"], arch["kv_heads"]
    kw: dict = {"vocab_size": arch["vocab"]}
    flags = {k: arch[k] for k in ARCH_FLAGS.get(mt, ()) if k in arch}
    if mt in ("bert", "roberta", "deberta-v2"):
        kw.update(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                  intermediate_size=arch["intermediate"], max_position_embeddings=arch["max_positions"],
                  type_vocab_size=arch.get("type_vocab", 2))
        if mt == "roberta":
            kw["pad_token_id"] = arch.get("pad_token_id", 1)
    elif mt == "gpt2":
        kw.update(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=arch["max_positions"], bos_token_id=0,
                  eos_token_id=0)
    elif mt == "bloom":
        kw.update(n_layer=layers, hidden_size=hidden, n_head=heads, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    elif mt == "llama":
        kw.update(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                  intermediate_size=arch["intermediate"], max_position_embeddings=arch["max_positions"],
                  pad_token_id=0, bos_token_id=0, eos_token_id=0)
    elif mt == "falcon":
        kw.update(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, pad_token_id=0,
                  bos_token_id=0, eos_token_id=0)
        if flags.get("new_decoder_architecture"):
            kw["num_kv_heads"] = kv
    else:
        raise LtuneError(f"arch.model_type={mt}: no config builder for it (known: bert, roberta, deberta-v2, "
                         f"gpt2, bloom, llama, falcon).")
    return AutoConfig.for_model(mt, **kw, **flags)
