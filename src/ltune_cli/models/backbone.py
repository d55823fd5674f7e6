"""The frozen base model behind every method, with one forward for all families.

`Backbone.encode` runs the frozen LM over a text batch, optionally with soft prompt
embeddings prepended (prompt methods) or a key/value prefix at every layer (prefix
methods), and returns one pooled vector per text. Family differences (positions, cache
layout, pooling) come from `families.FAMILIES`; this file never branches on a model name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ltune_cli.errors import LtuneError
from ltune_cli.models.families import FAMILIES, Geometry, geometry


@dataclass
class LabelStates:
    """Frozen LM hidden states of the K label texts, padded to a common length l.

    states: (K, l, d) float, mask: (K, l) long (1 = real label token), ids: (K, l) token ids.
    """

    states: torch.Tensor
    mask: torch.Tensor
    ids: torch.Tensor


class Backbone(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, geo: Geometry, *, pooling: str = "auto",
                 max_length: int = 128, padding_side: str = "right"):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.geo = geo
        self.family = FAMILIES[geo.family]
        self.pooling = ("cls" if geo.kind == "encoder" else "last") if pooling == "auto" else pooling
        self.max_length = max_length
        self.padding_side = padding_side
        self.pad_id = _pad_id(tokenizer)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    # The frozen base never trains: keep dropout off whatever mode the method is in.
    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input word embeddings (B, T, d), before positions/LayerNorm (the model adds those)."""
        return self.model.get_input_embeddings()(input_ids)

    def require_kv_cache(self, method: str) -> None:
        if not self.family.kv_cache:
            raise LtuneError(
                f"method '{method}' needs a key/value prefix, but {self.family.no_cache_reason}; "
                f"use method=prompt or method=lt_prompt with this model.")

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states (B, T, d) of a plain forward (used for label texts)."""
        out = self._forward(input_ids=input_ids, attention_mask=attention_mask,
                            **self._positions(attention_mask, attention_mask.shape[1]))
        return out.last_hidden_state.to(self.device)  # device_map: back from the last block's device

    @property
    def shares_prompt(self) -> bool:
        """Whether a prompt is read once and handed to its texts as a key/value prefix.

        In a causal decoder the prompt's positions never attend to the text after them, so
        their keys/values are the same for every text behind the same prompt: `prompt` reads
        its P soft tokens once per forward (not once per text), `lt_prompt` its K label
        prompts. The text then attends to them exactly as in one concatenated forward
        (tests/test_methods.py checks scores and gradients). Needs a key/value cache and
        last-token pooling (the pooled state is then a text position)."""
        return self.geo.kind == "decoder" and self.family.kv_cache and self.pooling == "last"

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
               token_type_ids: torch.Tensor | None = None,
               prompt: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None,
               prompt_index: torch.Tensor | None = None,
               prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
               prefix_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled representation (B, d) of a text batch.

        input_ids, attention_mask: (B, T). prompt: (U, P, d) soft embeddings placed before the
        text, prompt_mask (U, P); text i reads prompt prompt_index[i] (default: prompt i, or
        the one prompt when U == 1). prefix: per layer (key, value), each (B, kv_heads, P,
        head_dim), prefix_mask (B, P). The attention mask always covers prefix/prompt + text.
        """
        B, T = input_ids.shape
        kwargs: dict = {}
        if prompt is not None:
            U, P = prompt.shape[:2]
            pm = prompt_mask if prompt_mask is not None else attention_mask.new_ones(U, P)
            if self.shares_prompt:  # read the U prompts once; texts attend to their keys/values
                prefix = [(_rows(k, prompt_index, B), _rows(v, prompt_index, B))
                          for k, v in self.prompt_kv(prompt, pm)]
                prefix_mask, prompt = _rows(pm, prompt_index, B), None
            else:
                prompt, pm = _rows(prompt.to(self.dtype), prompt_index, B), _rows(pm, prompt_index, B)
        if prompt is not None:
            P = prompt.shape[1]
            embeds = torch.cat([prompt, self.embed(input_ids)], dim=1)
            mask = torch.cat([pm, attention_mask], dim=1)
            kwargs.update(inputs_embeds=embeds, attention_mask=mask, **self._positions(mask, P + T))
            if token_type_ids is not None and self.family.uses_token_type_ids:
                kwargs["token_type_ids"] = torch.cat([token_type_ids.new_zeros(B, P), token_type_ids], 1)
            text_mask = mask
        else:
            kwargs.update(input_ids=input_ids)
            text_mask = attention_mask
            if token_type_ids is not None and self.family.uses_token_type_ids:
                kwargs["token_type_ids"] = token_type_ids
            if prefix is not None:
                P = prefix[0][0].shape[2]
                pm = prefix_mask if prefix_mask is not None else attention_mask.new_ones(B, P)
                full = torch.cat([pm, attention_mask], dim=1)
                # A read-only cache per forward: each layer attends to [prefix; text], nothing is
                # appended, so a block recomputed in backward (gradient checkpointing) sees the same.
                cache = prefix_cache_class()(ddp_cache_data=[(k.to(self.dtype), v.to(self.dtype))
                                                             for k, v in prefix])
                # Text positions continue after the prefix, as if the prefix had been read
                # first (what a label-initialised L-Tuning prefix is at step 0).
                kwargs.update(attention_mask=full, past_key_values=cache, use_cache=True,
                              **self._positions(full, T))
            else:
                kwargs.update(attention_mask=attention_mask, **self._positions(attention_mask, T))
        hidden = self._forward(**kwargs).last_hidden_state.to(self.device)  # (B, T', d)
        return self.pool(hidden, text_mask)

    def prompt_kv(self, prompt: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The per-layer (key, value), each (U, kv_heads, P, head_dim), that the frozen LM writes
        when it reads the soft tokens `prompt` (U, P, d); differentiable in `prompt`."""
        cache = reading_cache_class()()
        self._forward(inputs_embeds=prompt.to(self.dtype), attention_mask=mask, past_key_values=cache,
                      use_cache=True, **self._positions(mask, mask.shape[1]))
        return [cache.read[i] for i in range(len(cache.read))]

    def _forward(self, **kwargs):
        """The frozen model's forward. On a CPU in bf16/fp16, SDPA's math kernel: with torch's
        default (flash) kernel a MiniLM training step ran 1.4-1.8x slower at these lengths
        (scripts/bf16_attention_kernel.py, BENCHMARKS.md); fp32 keeps torch's choice."""
        if self.device.type == "cpu" and self.dtype in (torch.bfloat16, torch.float16):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.MATH]):
                return self.model(**kwargs)
        return self.model(**kwargs)

    def _positions(self, mask: torch.Tensor, length: int) -> dict:
        """position_ids of the last `length` columns of `mask`, counting real tokens only, so
        left and right padding give the same positions; RoBERTa's offset is family data."""
        if self.family.positions != "explicit":
            return {}
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
        return {"position_ids": pos + self.family.position_offset}

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, d): [CLS] (first real token), masked mean, or last real token."""
        mask = mask.to(hidden.dtype)
        if self.pooling == "mean":
            return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        T = mask.shape[1]
        if self.pooling == "cls":
            # first position with a 1 (prompt tokens come first when present)
            idx = mask.argmax(dim=1)
        else:  # last real token, right or left padding alike
            idx = T - 1 - mask.flip(1).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]

    @torch.no_grad()
    def label_states(self, label_texts: list[str], label_len: int | None = None) -> LabelStates:
        """Encode the K label texts once through the frozen LM (eval mode, no grad).

        The label goes in as the tokenizer frames any input ([CLS] label [SEP] for BERT):
        a lone word without its special tokens gives BERT-style encoders the same state for
        every label (MiniLM: cosine 1.000 between "negative" and "positive"; 0.72 framed).
        A decoder reads the label after a start token (`label_start_id`): at position 0 a causal
        LM writes nearly the same state for any token (SmolLM2-135M: cosine 0.9999 between the
        two labels, so the trainable map moved both labels' prefixes alike and lt_prefix /
        lt_prompt stayed at chance; 0.90 after <|im_start|>).
        """
        start = self.label_start_id()
        enc = [([start] if start is not None else []) + self.tokenizer(t)["input_ids"] for t in label_texts]
        for t, ids in zip(label_texts, enc, strict=True):
            if not ids:
                raise LtuneError(f"label text '{t}' tokenizes to nothing (dataset.label_texts).")
        length = label_len or max(len(ids) for ids in enc)
        ids = torch.full((len(enc), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), length), dtype=torch.long)
        for i, row in enumerate(enc):
            row = row[:length]
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        was_training = self.training
        self.eval()
        states = self.hidden_states(ids, mask).float() * mask[..., None]
        self.train(was_training)
        return LabelStates(states=states, mask=mask, ids=ids)

    def label_start_id(self) -> int | None:
        """The token a decoder reads before a label text: the tokenizer's BOS (else EOS), unless
        the tokenizer already starts every input with it; None for encoders (framed by CLS)."""
        if self.geo.kind != "decoder":
            return None
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None or tok("a")["input_ids"][:1] == [start]:
            return None
        return int(start)

    @torch.no_grad()
    def reading_kv(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The key/values the frozen LM writes when it reads `ids`: (N, l, L, 2, kv_heads, head_dim).

        An empty cache handed to the forward is filled by every attention layer (encoders
        included), which is exactly the prefix under which a text reads as "label, then text".
        """
        from transformers import DynamicCache

        cache = DynamicCache()
        self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True,
                   **self._positions(mask, mask.shape[1]))
        layers = [torch.stack([layer.keys, layer.values], 0) for layer in cache.layers]  # (2, N, kvh, l, hd)
        if len(layers) != self.geo.layers or layers[0].shape[2] != self.geo.kv_heads:
            raise LtuneError(f"the {self.geo.family} cache layout ({len(layers)} layers, "
                             f"{layers[0].shape[2]} key/value heads) does not match the family table "
                             f"({self.geo.layers}, {self.geo.kv_heads}); set method.init_from_label=false.")
        return torch.stack(layers, 0).permute(2, 4, 0, 1, 3, 5).float().to(self.device)


def _rows(x: torch.Tensor, index: torch.Tensor | None, n: int) -> torch.Tensor:
    """Rows `index` of x; without an index, x itself, broadcast to n rows when it has one."""
    if index is not None:
        return x[index.to(x.device)]  # device_map: a layer's keys may sit on another device
    return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def resolve_device(device: str) -> torch.device:
    """auto/cuda/cpu/cuda:N -> a device; plain "cuda" is this process's GPU (torchrun's LOCAL_RANK)."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())  # distributed.session set it per rank
    if device == "auto":
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LtuneError(f"hardware.device={device} but no CUDA device is visible; use hardware=cpu "
                         f"(or hardware.device=auto).")
    try:
        return torch.device(device)
    except RuntimeError:
        raise LtuneError(f"hardware.device='{device}' is not a device; use auto, cpu, cuda or cuda:N.") from None


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_backbone(model_cfg, hardware_cfg=None, *, model=None, tokenizer=None) -> Backbone:
    """Load the frozen base + tokenizer from model_cfg.path (hub id, folder or offline:<key>).

    `model`/`tokenizer` may be given directly (tests build tiny random models this way).
    Large-model settings of hardware_cfg (docs/gpu.md): load_in=8bit|4bit (bitsandbytes),
    device_map=auto (accelerate places/offloads the base), strategy=fsdp (blocks sharded over
    the processes), gradient_checkpointing (blocks recomputed in backward).
    """
    hw = hardware_cfg
    device = resolve_device(hw.device if hw else "cpu")
    dtype = DTYPES[hw.dtype] if hw else torch.float32
    placement = _placement(hw, device, dtype)  # from_pretrained places quantized / device-mapped bases
    if model is None:
        model, tokenizer = _from_pretrained(model_cfg, dtype, **placement)
    geo = geometry(model.config, getattr(model_cfg, "family", "auto"))
    _check_arch(model_cfg, geo)
    if not placement:
        model.to(device=device, dtype=dtype)
    if getattr(model.config, "use_cache", None):
        # Nothing is generated: plain forwards keep no key/value cache (prefix forwards pass their own).
        model.config.use_cache = False
    from ltune_cli import distributed

    if getattr(hw, "strategy", "single") == "fsdp" and distributed.state().enabled:
        distributed.shard_frozen(model)
    if getattr(hw, "gradient_checkpointing", False):
        enable_checkpointing(model)
    if getattr(hw, "compile", False):
        # torch.compile the frozen base (dynamic shapes: batches are padded to their own longest).
        # Off by default: on one CPU thread MiniLM spent ~14 s compiling before its first step to
        # run ~15% faster a step afterwards (BENCHMARKS.md, benchmarks/results-compile-minilm).
        model.compile(dynamic=True)
    return Backbone(model, tokenizer, geo, pooling=model_cfg.pooling, max_length=model_cfg.max_length,
                    padding_side=model_cfg.padding_side)


def _check_arch(model_cfg, geo: Geometry) -> None:
    """Warn when the loaded model is not the one conf/model/<name>.yaml's `arch` describes."""
    arch = getattr(model_cfg, "arch", None) or {}
    got = {"model_type": geo.family, "layers": geo.layers, "hidden": geo.hidden, "heads": geo.heads,
           "kv_heads": geo.kv_heads}
    diff = [f"{k} {got[k]} (expected {arch[k]})" for k in got if k in arch and arch[k] != got[k]]
    if diff:
        import logging

        logging.getLogger("ltune").warning("model.path=%s is not the %s architecture of model=%s: %s",
                                           model_cfg.path, model_cfg.name, model_cfg.name, ", ".join(diff))


def _placement(hw, device: torch.device, dtype: torch.dtype) -> dict:
    """from_pretrained arguments for an 8/4-bit or device-mapped base ({} = load, then .to(device))."""
    import importlib.util

    load_in = getattr(hw, "load_in", "none") if hw else "none"
    device_map = getattr(hw, "device_map", "none") if hw else "none"
    if load_in != "none":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise LtuneError(f"hardware.load_in={load_in} loads the frozen base through bitsandbytes, which is not "
                             f"installed: pip install 'ltune-cli[quant]' (needs a CUDA GPU), or drop "
                             f"hardware.load_in.")
        if device.type != "cuda":
            raise LtuneError(f"hardware.load_in={load_in} (bitsandbytes) needs a CUDA device; this run is on "
                             f"{device}. Drop hardware.load_in, or use hardware.dtype=bf16 on a GPU.")
        from transformers import BitsAndBytesConfig

        compute = dtype if dtype != torch.float32 else torch.bfloat16
        q = (BitsAndBytesConfig(load_in_8bit=True) if load_in == "8bit" else
             BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute))
        return {"quantization_config": q, "device_map": {"": device}}
    if device_map != "none":
        if importlib.util.find_spec("accelerate") is None:
            raise LtuneError(f"hardware.device_map={device_map} needs accelerate: pip install accelerate.")
        kw: dict = {"device_map": device_map}
        if getattr(hw, "offload_folder", None):
            kw["offload_folder"] = hw.offload_folder
        return kw
    return {}


def enable_checkpointing(model: nn.Module) -> int:
    """Recompute each transformer block in backward instead of keeping its activations.

    Not transformers' gradient_checkpointing_enable(): that only acts in training mode (the
    frozen base stays in eval mode, no dropout) and it drops the key/value cache inside a
    checkpointed block, which is how prefix methods pass their prefix. Here each block's
    forward is wrapped in torch.utils.checkpoint (non-reentrant); the prefix cache is
    read-only (prefix_cache_class), so the recomputation sees the same prefix. Returns the
    number of blocks wrapped.
    """
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    inner = {id(c) for b in blocks for c in b.modules() if c is not b}
    blocks = [b for b in blocks if id(b) not in inner]
    if not blocks:
        raise LtuneError(f"hardware.gradient_checkpointing: {type(model).__name__} has no transformer blocks "
                         f"transformers can recompute; set hardware.gradient_checkpointing=false.")
    for b in blocks:
        def forward(*args, _forward=b.forward, **kwargs):
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        b.forward = forward
    return len(blocks)


_PREFIX_CACHE: type | None = None
_READING_CACHE: type | None = None


def reading_cache_class() -> type:
    """A cache that records what each layer writes and returns it unchanged; a block recomputed
    in backward (gradient checkpointing) writes the same again, so a repeated write replaces."""
    global _READING_CACHE
    if _READING_CACHE is None:
        from transformers import DynamicCache

        class ReadingCache(DynamicCache):
            def __init__(self):
                super().__init__()
                self.read: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

            def update(self, key_states, value_states, layer_idx, *args, **kwargs):
                self.read[layer_idx] = (key_states, value_states)
                return key_states, value_states

        _READING_CACHE = ReadingCache
    return _READING_CACHE


def prefix_cache_class() -> type:
    """A DynamicCache that holds the prefix and never grows: update() returns [prefix; new]."""
    global _PREFIX_CACHE
    if _PREFIX_CACHE is None:
        from transformers import DynamicCache

        class PrefixCache(DynamicCache):
            def update(self, key_states, value_states, layer_idx, *args, **kwargs):
                layer = self.layers[layer_idx]
                return (torch.cat([layer.keys.to(key_states.device), key_states], dim=-2),
                        torch.cat([layer.values.to(value_states.device), value_states], dim=-2))

        _PREFIX_CACHE = PrefixCache
    return _PREFIX_CACHE


def _from_pretrained(model_cfg, dtype, **placement):
    import os
    from pathlib import Path

    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from ltune_cli.models.offline import resolve

    path = resolve(model_cfg.path)
    local = Path(path).expanduser()
    looks_local = local.exists() or path.startswith((".", "/", "~"))
    if looks_local:
        if not local.is_dir():
            raise LtuneError(f"model.path={path}: no such folder.")
        if not any(local.glob("*.safetensors")) and not any(local.glob("*.bin")):
            raise LtuneError(f"model.path={path}: the folder has no weights (*.safetensors or *.bin); "
                             f"point model.path at a folder written by save_pretrained.")
    kw = dict(revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        model = AutoModel.from_pretrained(path, dtype=dtype, **kw, **placement)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise LtuneError(
            f"could not load model '{path}' (model.path): {str(e).splitlines()[0][:160].rstrip('.')}. "
            f"{'The hub is unreachable (offline). ' if not looks_local or offline else ''}"
            f"Point model.path at a local folder with config.json + weights, or use model=minilm / "
            f"model=smollm2_135m, which ship with the package.") from None
    return model, tokenizer
