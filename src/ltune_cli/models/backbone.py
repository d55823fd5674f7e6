"""The frozen base model behind every method, with one forward for all families.

`Backbone.encode` runs the frozen LM over a text batch, optionally with soft prompt
embeddings prepended (prompt methods) or a key/value prefix at every layer (prefix
methods), and returns one pooled vector per text. Family differences (positions, cache
layout, pooling) come from `families.FAMILIES`; this file never branches on a model name.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ltune_cli.errors import LtuneError
from ltune_cli.models.families import (
    FAMILIES,
    Geometry,
    geometry,
    position_offset,
    require_kv_cache,
    resolve_pooling,
)


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
        self.position_offset = position_offset(self.family, model.config)
        self.pooling = resolve_pooling(geo.kind, geo.family, pooling)  # auto: encoders cls, decoders last
        self.max_length = max_length
        self.padding_side = padding_side
        self.pad_id = _pad_id(tokenizer)
        self.sharded = any(hasattr(p, "to_local") for p in model.parameters())  # FSDP (DTensor weights)
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
        require_kv_cache(self.geo.family, method)

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
        last-token pooling (the pooled state is then a text position). Not on an FSDP-sharded
        base: the prompt's keys/values come out of a block's inside, not its output, so FSDP
        would not gather the block again for their backward (it frees a block's weights after
        its forward); the prompt is then read with each text, in one concatenated forward."""
        return self.geo.kind == "decoder" and self.family.kv_cache and self.pooling == "last" and not self.sharded

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
               token_type_ids: torch.Tensor | None = None,
               prompt: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None,
               prompt_index: torch.Tensor | None = None,
               prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
               prefix_mask: torch.Tensor | None = None,
               suffix_ids: torch.Tensor | None = None, suffix_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled representation (B, d) of a text batch.

        input_ids, attention_mask: (B, T). prompt: (U, P, d) soft embeddings placed before the
        text, prompt_mask (U, P); text i reads prompt prompt_index[i] (default: prompt i, or
        the one prompt when U == 1). prefix: per layer (key, value), each (B, kv_heads, P,
        head_dim), prefix_mask (B, P). The attention mask always covers prefix/prompt + text.
        """
        if suffix_ids is not None:
            input_ids, attention_mask, token_type_ids = _append(input_ids, attention_mask, token_type_ids,
                                                                suffix_ids, suffix_mask)
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
            types = None
            if token_type_ids is not None and self.family.uses_token_type_ids:
                types = torch.cat([token_type_ids.new_zeros(B, P), token_type_ids], 1)
            # Real tokens first, in order, pads last: a shorter prompt's pad slots would otherwise
            # sit between prompt and text, where a model counting positions by slot (DeBERTa's
            # relative attention) sees them, so a pair's score would depend on the other labels.
            order = torch.sort(1 - mask.long(), dim=1, stable=True).indices  # (B, P + T)
            embeds = embeds.gather(1, order[..., None].expand_as(embeds))
            mask = mask.gather(1, order)
            kwargs.update(inputs_embeds=embeds, attention_mask=mask, **self._positions(mask, P + T))
            if types is not None:
                kwargs["token_type_ids"] = types.gather(1, order)
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
        # Taken out of the cache, not left in it: with gradient checkpointing the blocks' saved
        # state refers to the cache (an argument the recomputation gets again), and a cache holding
        # their outputs closed a cycle through C++ that gc cannot free when backward never runs
        # (memory.estimate's probes): each run left its graphs alive (test_gpu_config).
        return [cache.read.pop(i) for i in range(len(cache.read))]

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
        return {"position_ids": pos + self.position_offset}

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
        self.check_positions(length, "the label texts (dataset.label_texts)", fix="set method.label_len=<n> to "
                             "keep their first n tokens, or use shorter label texts")
        ids, mask = ids.to(self.device), mask.to(self.device)
        was_training = self.training
        self.eval()
        states = self.hidden_states(ids, mask).float() * mask[..., None]
        self.train(was_training)
        s = 0 if start is None else 1  # the shared start token says nothing about the label
        check_distinct_labels(label_texts, ids[:, s:], mask[:, s:], states[:, s:], self.tokenizer, label_len)
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

    @property
    def max_positions(self) -> int | None:
        """How many positions the model's learned position table holds (BERT/RoBERTa/GPT-2: 512,
        1024), or None when it has none to run off (rotary, ALiBi, relative positions).
        Found as the embedding table sized max_position_embeddings (n_positions); RoBERTa's
        offset (family data) is subtracted."""
        config = self.model.config
        n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        words = self.model.get_input_embeddings()
        if not n or not any(isinstance(m, nn.Embedding) and m is not words and m.num_embeddings == n
                            for m in self.model.modules()):
            return None
        return n - self.position_offset

    def check_positions(self, length: int, what: str, fix: str) -> None:
        """An LtuneError when `length` positions run past the position table (an IndexError deep
        in the model otherwise, or a device-side assert on a GPU)."""
        limit = self.max_positions
        if limit is not None and length > limit:
            raise LtuneError(f"{what} need {length} positions, but the model has {limit} "
                             f"(max_position_embeddings); {fix}.")

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
        # (2, N, kvh, l, hd) each; device_map: every layer's cache sits on its own layer's device
        layers = [torch.stack([layer.keys, layer.values], 0).to(self.device) for layer in cache.layers]
        if len(layers) != self.geo.layers or layers[0].shape[2] != self.geo.kv_heads:
            raise LtuneError(f"the {self.geo.family} cache layout ({len(layers)} layers, "
                             f"{layers[0].shape[2]} key/value heads) does not match the family table "
                             f"({self.geo.layers}, {self.geo.kv_heads}); set method.init_from_label=false.")
        return torch.stack(layers, 0).permute(2, 4, 0, 1, 3, 5).float().to(self.device)


#: Above this cosine of their mean frozen states, two labels get a warning (MiniLM: distinct
#: label words 0.40-0.88; SmolLM2 single-token labels 0.992-0.99988, its first position barely
#: depends on the token: those warn, and rightly so, L-Tuning's map starts from near-equal inputs).
SIMILAR_LABELS_COSINE = 0.999


def check_distinct_labels(label_texts, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor,
                          tokenizer, label_len: int | None) -> None:
    """L-Tuning tells labels apart only through what the frozen LM reads: two labels that reach
    it as the same tokens (cut to method.label_len, or both [UNK]) are an error; two whose
    frozen states are near-identical get a warning with their cosine. ids, mask: (K, l);
    states: (K, l, d), zero at padding."""
    import logging

    rows = [tuple(r[m.bool()].tolist()) for r, m in zip(ids.cpu(), mask.cpu(), strict=True)]
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        if row in seen:
            a, b = label_texts[seen[row]], label_texts[i]
            tokens = " ".join(tokenizer.convert_ids_to_tokens(list(row)))
            cut = f" after method.label_len={label_len} truncation" if label_len else ""
            raise LtuneError(f"label texts '{a}' and '{b}' reach the model as the same tokens{cut} ({tokens}), "
                             f"so L-Tuning cannot tell them apart; use distinct label texts (dataset.label_texts)"
                             + (" or a larger method.label_len." if label_len else "."))
        seen[row] = i
    pooled = states.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (K, d)
    cos = torch.nn.functional.cosine_similarity(pooled[:, None], pooled[None], dim=-1)
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if cos[i, j] >= SIMILAR_LABELS_COSINE:
                logging.getLogger("ltune").warning(
                    "label texts '%s' and '%s' have near-identical frozen states (cosine %.5f): L-Tuning may "
                    "not tell them apart; consider more distinct label texts (dataset.label_texts)",
                    label_texts[i], label_texts[j], float(cos[i, j]))


def _append(ids, mask, types, suffix_ids, suffix_mask):
    """The suffix columns after the text's: the mask leaves a gap of the text's pads before a
    row's suffix, which positions counted from the mask ("explicit", "mask") do not see; on the
    prompt path (DeBERTa's positions by slot) encode() moves real tokens first anyway."""
    mask = torch.cat([mask, suffix_mask.to(mask.dtype)], 1)
    if types is not None:
        types = torch.cat([types, types.new_zeros(suffix_ids.shape)], 1)
    return torch.cat([ids, suffix_ids], 1), mask, types


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


_SLOWDOWN: dict[str, float] = {}


def cpu_half_slowdown(dtype: str) -> float:
    """How many times longer a matrix product takes in `dtype` (bf16/fp16) than in fp32 on this
    CPU: one thread, a 256 x 256 product, best of three (well under a second). About 1 or less
    where the CPU has bf16 instructions (AVX-512 BF16, AMX); 36-54 on an AVX2-only AMD EPYC, where
    the study's bf16 runs took 220 s a step instead of 2.6 (BENCHMARKS.md)."""
    if dtype not in _SLOWDOWN:
        import time

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            def best(x):
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    x @ x
                    times.append(time.perf_counter() - t)
                return min(times)

            a = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
            _SLOWDOWN[dtype] = best(a.to(DTYPES[dtype])) / max(best(a), 1e-9)
        finally:
            torch.set_num_threads(threads)
    return _SLOWDOWN[dtype]


SLOW_HALF = 3.0  # a half-precision product this many times slower than fp32: the CPU lacks bf16/fp16 instructions


def half_matmuls(device: torch.device, dtype: str):
    """() -> the context that bf16/fp16 matrix products run in: on a CPU without instructions for
    them (cpu_half_slowdown > SLOW_HALF), HalfMatmulsInFp32; elsewhere nothing (nullcontext)."""
    if device.type != "cpu" or dtype not in ("bf16", "fp16") or cpu_half_slowdown(dtype) <= SLOW_HALF:
        return contextlib.nullcontext
    return HalfMatmulsInFp32


_MATMULS = frozenset({torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
                      torch.ops.aten.baddbmm.default, torch.ops.aten.mv.default, torch.ops.aten.addmv.default})
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # what the mode sees of a frozen weight or bias


@functools.cache  # asked for every op under the mode; an op's kernels do not change in a process
def _only_composite(func) -> bool:
    """Whether `func` runs as its CompositeImplicitAutograd decomposition wherever it runs (no
    kernel of its own): taking it apart then changes nothing but which ops this mode sees. An op
    with a kernel of its own (silu_backward) keeps it: its decomposition may round differently."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    name = func.name()
    return has(name, "CompositeImplicitAutograd") and not any(
        has(name, k) for k in ("CPU", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional"))


class HalfMatmulsInFp32(TorchDispatchMode):
    """Within: a bf16/fp16 matrix product of CPU tensors (mm, addmm, bmm, baddbmm, mv, addmv) runs
    on fp32 copies of its operands and its result is rounded to the half type once, which is
    what the native kernel computes (fp32 accumulation, one rounding): on a test layer, forward
    and backward, bit for bit the same (tests/test_gpu_settings.py). Where the CPU has no bf16
    instructions the native kernel took 36-70x as long as fp32; this takes about as long. Other
    ops, other devices and tensor subclasses (FSDP's DTensor) pass through untouched. Entered
    around forwards (engine.autocaster) and backward (engine._step).

    Under torch.inference_mode (evaluation, `ltune eval`) composite ops such as aten.linear and
    aten.matmul reach this mode whole instead of as the mm / addmm they are made of: they are
    decomposed here (OpOverload.decompose, what happens to them outside inference mode), so
    their products come back through this mode too. A frozen model's bias is an nn.Parameter:
    plain tensors and parameters qualify, tensor subclasses with their own dispatch do not."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMULS:
            ts = [a for a in args if isinstance(a, torch.Tensor)]
            half = ts[0].dtype if ts else None
            if half in (torch.bfloat16, torch.float16) and all(
                    type(t) in _PLAIN and t.device.type == "cpu" and t.dtype == half for t in ts):
                return func(*[a.float() if isinstance(a, torch.Tensor) else a for a in args], **kwargs).to(half)
        elif _only_composite(func):
            with self:  # the parts dispatch here again (as FakeTensorMode does it)
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


def half_matmuls_note(dtype: str) -> str:
    """The line a run logs when half_matmuls chose HalfMatmulsInFp32 for `dtype`."""
    flags = "avx512_bf16 / amx_bf16" if dtype == "bf16" else "avx512_fp16 / amx_fp16"
    return (f"hardware.dtype={dtype} on this CPU: its {dtype} matrix products take {cpu_half_slowdown(dtype):.0f}x "
            f"as long as fp32 ones (no {dtype} instructions: lscpu shows no {flags}); they run on fp32 copies, "
            f"rounded to {dtype} once: the native kernel's result, at fp32's speed")


def load_backbone(model_cfg, hardware_cfg=None, *, model=None, tokenizer=None) -> Backbone:
    """Load the frozen base + tokenizer from model_cfg.path (hub id, folder or offline:<key>).

    `model`/`tokenizer` may be given directly (tests build tiny random models this way).
    Large-model settings of hardware_cfg (docs/gpu.md): load_in=8bit|4bit (bitsandbytes),
    device_map=auto (accelerate places/offloads the base), strategy=fsdp (blocks sharded over
    the processes), gradient_checkpointing (blocks recomputed in backward).
    """
    from ltune_cli.models.folder import describe

    hw = hardware_cfg
    if hw is not None and str(hw.device).startswith("cuda") and not torch.cuda.is_available():
        why = (f" (model={model_cfg.name}'s hardware_preset; a base of this size is meant for a GPU)"
               if getattr(model_cfg, "hardware_preset", None) == hw.name else "")
        raise LtuneError(f"hardware={hw.name}{why} runs on CUDA, but no CUDA device is visible. To run on this "
                         f"machine's CPU anyway (fp32, slow for a large base) add hardware=cpu.")
    # config.json first: family, geometry and pooling come from the model; an unsupported family
    # or cls pooling on a decoder is refused before any weight loads.
    info = describe(model_cfg) if model is None else None
    device = resolve_device(hw.device if hw else "cpu")
    dtype = DTYPES[hw.dtype] if hw else torch.float32
    placement = _placement(hw, device, dtype)  # from_pretrained places quantized / device-mapped bases
    if model is None:
        model, tokenizer = _from_pretrained(info.path, model_cfg, dtype, **(placement or _direct(hw, device)))
    geo = geometry(model.config, getattr(model_cfg, "family", "auto"))
    pooling = resolve_pooling(geo.kind, geo.family, model_cfg.pooling)
    _check_arch(model_cfg, geo, pooling)
    if getattr(model.config, "use_cache", None):
        # Nothing is generated: plain forwards keep no key/value cache (prefix forwards pass their own).
        model.config.use_cache = False
    from ltune_cli import distributed

    if _fsdp(hw):  # on the CPU until sharded: each block goes to the device as its shard
        distributed.shard_frozen(model.to(dtype=dtype), device)
    elif not placement:
        model.to(device=device, dtype=dtype)  # a no-op when from_pretrained loaded it there
    if getattr(hw, "gradient_checkpointing", False):
        enable_checkpointing(model)
    if getattr(hw, "compile", False):
        # torch.compile the frozen base (dynamic shapes: batches are padded to their own longest).
        # Off by default: on one CPU thread MiniLM spent ~14 s compiling before its first step to
        # run ~15% faster a step afterwards (BENCHMARKS.md, benchmarks/results-compile-minilm).
        model.compile(dynamic=True)
    return Backbone(model, tokenizer, geo, pooling=pooling, max_length=model_cfg.max_length,
                    padding_side=model_cfg.padding_side)


def _check_arch(model_cfg, geo: Geometry, pooling: str) -> None:
    """Say what was loaded when it is not the model conf/model/<name>.yaml's `arch` documents
    (model.path pointed elsewhere): the run uses the loaded model's own family, shapes and
    pooling; the preset's `arch` is documentation of another model, not a setting."""
    arch = getattr(model_cfg, "arch", None) or {}
    got = {"model_type": geo.family, "layers": geo.layers, "hidden": geo.hidden, "heads": geo.heads,
           "kv_heads": geo.kv_heads}
    if any(k in arch and arch[k] != got[k] for k in got):
        import logging

        logging.getLogger("ltune").info(
            "model.path=%s: a %s %s read from its config.json (%d layers, d=%d, %d heads / %d key/value heads), "
            "pooling %s; model=%s's arch (%s) describes another model and is not used.", model_cfg.path, geo.family,
            geo.kind, geo.layers, geo.hidden, geo.heads, geo.kv_heads, pooling, model_cfg.name,
            ", ".join(f"{k} {arch[k]}" for k in got if k in arch))


def _fsdp(hw) -> bool:
    from ltune_cli import distributed

    return getattr(hw, "strategy", "single") == "fsdp" and distributed.state().enabled


def _direct(hw, device: torch.device) -> dict:
    """from_pretrained arguments that load a plain base straight onto its GPU, tensor by tensor,
    instead of building it in host RAM and copying it over (every rank of a ddp run did that).
    FSDP loads on the CPU: each block then goes to the GPU as its shard (shard_frozen).
    transformers places through accelerate (a dependency); without it: load, then move."""
    import importlib.util

    if device.type != "cuda" or _fsdp(hw) or importlib.util.find_spec("accelerate") is None:
        return {}
    return {"device_map": {"": device}}


def _placement(hw, device: torch.device, dtype: torch.dtype) -> dict:
    """from_pretrained arguments for an 8/4-bit or device-mapped base ({} = load, then .to(device))."""
    import importlib.util

    load_in = getattr(hw, "load_in", "none") if hw else "none"
    device_map = getattr(hw, "device_map", "none") if hw else "none"
    if load_in != "none":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise LtuneError(f"hardware.load_in={load_in} loads the frozen base through bitsandbytes, which is not "
                             f"installed: pip install -e '.[quant]' (needs a CUDA GPU), or drop "
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
    model._ltune_first_block = id(blocks[0])
    for b in blocks:
        def forward(*args, _forward=b.forward, _id=id(b), **kwargs):
            if not torch.is_grad_enabled() or _KEPT[0] == _id:
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, context_fn=_same_attention_kernels, **kwargs)

        b.forward = forward
    return len(blocks)


_KEPT: list = [None]  # id of the checkpointed block that runs plainly (block_kept)


@contextlib.contextmanager
def block_kept(model: nn.Module):
    """Within: the first block wrapped by enable_checkpointing keeps every tensor for backward, as
    without checkpointing; the others keep their inputs. memory.estimate measures one block's
    whole set of tensors this way (what backward holds while it recomputes a block, and about
    what an evaluation forward holds at a time) without holding every block's at once."""
    _KEPT[0] = getattr(model, "_ltune_first_block", None)
    try:
        yield
    finally:
        _KEPT[0] = None


def _same_attention_kernels():
    """checkpoint's context_fn, called as a block's forward starts: the recomputation in backward
    runs with the SDPA kernels allowed now. checkpoint restores autocast and the RNG, not these
    global flags, and the forward may run inside an sdpa_kernel context (Backbone._forward: the
    math kernel on a CPU in bf16) that backward is outside of: the recomputed block then picked
    another kernel, saved other tensors, and backward failed ("Recomputed values ... have
    different metadata"): hardware=gpu_large with hardware.device=cpu, or any bf16 run with
    hardware.gradient_checkpointing=true on a CPU."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cuda = torch.backends.cuda
    allowed = [backend for backend, on in ((SDPBackend.FLASH_ATTENTION, cuda.flash_sdp_enabled()),
                                           (SDPBackend.EFFICIENT_ATTENTION, cuda.mem_efficient_sdp_enabled()),
                                           (SDPBackend.MATH, cuda.math_sdp_enabled()),
                                           (SDPBackend.CUDNN_ATTENTION, cuda.cudnn_sdp_enabled())) if on]
    return contextlib.nullcontext(), sdpa_kernel(allowed)


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


def _from_pretrained(path: str, model_cfg, dtype, **placement):
    """Tokenizer and frozen base from `path` (resolved by folder.describe, which checked the folder)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ltune_cli.models.folder import load_error

    hf_logging.disable_progress_bar()
    kw = dict(revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        model = AutoModel.from_pretrained(path, dtype=dtype, **kw, **placement)
    except OSError as e:
        from pathlib import Path

        raise load_error(path, e, Path(path).expanduser().exists()) from None
    return model, tokenizer

