"""How much memory a run needs per process, printed before training and kept in results.json.

    frozen weights   bytes of the loaded base as it sits in this process (dtype, 8/4-bit,
                     FSDP shard), counted from its tensors: exact
    trainable        the method's fp32 weights, + their gradients (same size)
    optimizer        AdamW's two fp32 moments per trainable weight
    other            the method's constants (cached label states); on CUDA, cuBLAS's workspaces
    activations      what autograd keeps for backward in one micro-batch (hardware.batch_size
                     texts of the longest training length) plus one block's transient tensors
                     and their gradients, or the evaluation forward if that is larger
    transients       (bf16/fp16) autocast's cached half-precision copy of every trainable Linear
                     weight, alive through each forward; the gradient temporaries of those
                     weights at the end of backward (the half-precision gradient, its fp32 cast,
                     and with grad_accum > 1 the new fp32 gradient before it is added); and at
                     start-up the least-squares warm start of the label maps (fit_linear). The
                     largest of these moments counts: for Llama-2-7B lt_prefix the 1.07 B-weight
                     map makes them GiBs (docs/gpu.md)

Activations are measured, not taken from a formula: probe forwards of `method.scores` on
the longest one and two training texts run under a saved-tensors hook that adds up the
storage autograd keeps (frozen weights it references are not counted again); the
difference is one text's worth, divided by the sequences the frozen LM ran per text
(L-Tuning scores K (text, label) pairs per text, trains on one), scaled to the batch. So
every family, attention implementation, method, prefix length and gradient checkpointing
goes through the same code. Evaluation keeps nothing: its peak is about one block's tensors
for eval_batch_size texts, from a probe on the longest eval text.

docs/gpu.md compares the estimate with measured peaks (torch's CPU allocator traced by the
profiler, and RSS); on CUDA, results.json also records torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

GiB = 1024**3


def _tensor_bytes(t: torch.Tensor) -> int:
    if hasattr(t, "to_local"):  # a DTensor (FSDP shard): what this process holds
        t = t.to_local()
    return t.numel() * t.element_size()


def frozen_bytes(module: torch.nn.Module) -> int:
    return sum(_tensor_bytes(p) for p in module.parameters()) + sum(_tensor_bytes(b) for b in module.buffers())


@contextlib.contextmanager
def count_saved():
    """Add up the distinct storages autograd saves for backward, parameters excluded.

    The pack hook keeps `t.detach()`, never `t`: a saved tensor that is its node's own output
    would hold its grad_fn, which holds it, a cycle through C++ that no gc.collect() frees when
    backward never runs (the probes' case; pytorch/pytorch#115255). Returning `t` kept every
    probe's graph, the frozen weights it saved among them, alive after the run: a run in a
    process that goes on (a sweep, the tests) kept its whole model; on CUDA each run's peak
    carried the probes' activations (0.1-0.8 GiB, docs/gpu.md)."""
    seen: dict[tuple, int] = {}

    def pack(t):
        base = t._base if t._base is not None else t
        counted = not (isinstance(t, torch.nn.Parameter) or isinstance(base, torch.nn.Parameter)
                       or hasattr(t, "to_local"))
        if counted:
            try:
                st = t.untyped_storage()
                seen[(t.device, st.data_ptr())] = st.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without storage (meta, sparse)
                pass
        return t.detach()

    box = {"bytes": 0}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield box
    box["bytes"] = sum(seen.values())


def forward_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The (B, T[, d]) input of a model forward seen by a forward pre-hook: input_ids, or
    inputs_embeds when the ids are absent (given by keyword, or as the first positional)."""
    x = kwargs.get("input_ids")
    if x is None and args:
        x = args[0]
    return x if x is not None else kwargs.get("inputs_embeds")


def _probe(s, enc, idx) -> tuple[int, int]:
    """(bytes autograd saves, sequences the frozen LM runs) for `method.scores` on rows idx."""
    from ltune_cli.batching import collate

    batch = collate(enc, idx, s.backbone.pad_id, s.backbone.padding_side, s.device)
    seqs = {"n": 0}

    def count(module, args, kwargs):
        x = forward_input(args, kwargs)
        if x is not None and torch.is_grad_enabled():
            seqs["n"] += x.shape[0]

    dev = s.device
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    hook = s.backbone.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad(), count_saved() as box, s.autocast():
            out = s.method.scores(batch)
            del out
    finally:
        hook.remove()
    return box["bytes"], seqs["n"]


def estimate(s, cfg, world: int = 1) -> dict:
    """The per-process memory estimate of a run (bytes), before its first step.

    The probes call `method.scores` (every method has it) on the longest texts: L-Tuning
    scores K (text, label) sequences per text there and trains on one, so the per-text
    bytes are divided by the sequences the frozen LM ran per text (counted by a hook).
    """
    hw = cfg.hardware
    method = s.method
    n_train = method.num_trainable()
    frozen = frozen_bytes(s.backbone.model)
    trainable = sum(_tensor_bytes(p) for p in method.trainable_parameters())
    # Method-side constants that are neither parameters nor activations (cached label states).
    extra = sum(_tensor_bytes(b) for b in method.buffers()) + _label_state_bytes(method)
    layers = max(1, s.backbone.geo.layers)
    # An evaluation batch holds at most the evaluation set (a 64-text dev set at eval_batch_size 256
    # was estimated as 256 texts: 1.3x its CUDA peak).
    B, E = int(hw.batch_size), min(int(hw.eval_batch_size), len(s.eval_enc))
    was = method.training
    method.train()
    try:
        order = np.argsort(-s.train_enc.lengths, kind="stable")
        a1, n1 = _probe(s, s.train_enc, order[:1])
        a2, n2 = _probe(s, s.train_enc, order[:2]) if len(order) > 1 else (2 * a1, 2 * n1)
        eorder = np.argsort(-s.eval_enc.lengths, kind="stable")
        e1, _ = _probe(s, s.eval_enc, eorder[:1])
        if hw.gradient_checkpointing:
            # The probes above saw each block's input only. One block probed with all its tensors
            # kept adds (its tensors - its input): what backward holds while it recomputes a block,
            # and about what an evaluation forward holds at a time. (Without it the evaluation of
            # Llama-2-7B lt_prompt on an H200 was estimated at 0.17 GiB and took 2.3: docs/gpu.md.)
            from ltune_cli.models.backbone import block_kept

            with block_kept(s.backbone.model):
                f1, _ = _probe(s, s.train_enc, order[:1])
                f2, _ = _probe(s, s.train_enc, order[:2]) if len(order) > 1 else (2 * f1, 0)
                fe1, _ = _probe(s, s.eval_enc, eorder[:1])
        else:
            f1, f2, fe1 = a1, a2, e1
    except torch.OutOfMemoryError:
        return {"estimate_bytes": None, "note": "out of memory while probing two texts"}
    finally:
        method.train(was)
    per_text_scored = max(0, a2 - a1)  # one text, all the sequences `scores` runs for it
    seqs_per_text = max(1, n2 - n1)
    fixed = max(0, a1 - per_text_scored)  # label maps etc., independent of the batch
    per_seq = per_text_scored / seqs_per_text
    saved = fixed + per_seq * B  # training runs one sequence per text
    # One block's whole tensors per text: without checkpointing a layer's share of the probe;
    # with it, that share (the block's input) plus what keeping the block's tensors added.
    block_per_text = per_text_scored / layers + max(0, (f2 - a2) - (f1 - a1))
    transient_train = 2 * block_per_text / seqs_per_text * B  # one block's tensors and their gradients in backward
    train_act = saved + transient_train
    # Evaluation keeps nothing: about one block's tensors at a time (x1.2: the embeddings and
    # the pooled output around it; calibrated on MiniLM and SmolLM2, docs/gpu.md).
    # Scoring may cut an eval batch into several forwards (PairMethod.scores on a CPU): the peak
    # is one forward's worth of texts.
    e_texts = min(E, method.texts_per_forward(E, int(s.eval_enc.lengths.max()), s.device))
    eval_act = 1.2 * (max(0, e1 - fixed) / layers + max(0, fe1 - e1)) * e_texts
    grads = trainable
    optimizer = 2 * n_train * 4
    extra += cuda_workspace_bytes(s.device)  # "other": kept by cuBLAS from the first matmul on
    half = hw.dtype in ("bf16", "fp16") and s.device.type in ("cuda", "cpu", "mps")
    tr = transients(method, half=half, accumulate=int(hw.grad_accum) * world > 1)
    # Forward (train or eval): activations + the cached half copies; end of backward: the map's
    # gradient temporaries (activations are freed by then); start-up: weights + the warm start.
    during_step = max(train_act + tr["autocast_copy"], tr["grad_temporaries"], eval_act + tr["autocast_copy"])
    startup = tr["warm_start"] - (trainable + grads + optimizer + extra)  # before the optimizer exists
    activations = max(train_act, eval_act)
    transient = max(during_step, startup) - activations
    total = frozen + trainable + grads + optimizer + extra + activations + transient
    return {"estimate_bytes": int(total), "frozen_bytes": int(frozen), "trainable_bytes": int(trainable),
            "grad_bytes": int(grads), "optimizer_bytes": int(optimizer), "other_bytes": int(extra),
            "activation_bytes": int(activations), "train_activation_bytes": int(train_act),
            "eval_activation_bytes": int(eval_act), "transient_bytes": int(transient),
            "autocast_copy_bytes": int(tr["autocast_copy"]), "grad_temporary_bytes": int(tr["grad_temporaries"]),
            "warm_start_bytes": int(tr["warm_start"]), "processes": world,
            "micro_batch": B, "longest_train_tokens": int(s.train_enc.lengths.max())}


def cuda_workspace_bytes(device: torch.device) -> int:
    """cuBLAS's workspaces, which torch allocates through its caching allocator (they count in
    torch.cuda.max_memory_allocated) and keeps: one per thread and stream that runs matmuls, the
    training loop's and autograd's device thread's (backward). 32 MiB each on an H200, where they
    were seen alive at the peak (docs/gpu.md); 0 off CUDA."""
    if device.type != "cuda":
        return 0
    get = getattr(torch._C, "_cuda_getCublasWorkspaceSize", None)  # torch >= 2.12
    if get is not None:
        return 2 * int(get())
    import os
    import re

    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if env:  # ":SIZE_KiB:COUNT" pairs
        size = sum(int(k) * int(n) * 1024 for k, n in re.findall(r":(\d+):(\d+)", env))
    else:  # torch's default (CublasHandlePool.cpp): larger on Hopper
        size = 4096 * 8 * 1024 if torch.cuda.get_device_capability(device)[0] >= 9 else 4096 * 1024 * 2 + 16 * 1024 * 8
    return 2 * size


def _maps(method) -> list[torch.nn.Linear]:
    """The method's trainable Linear maps, head excluded (it runs in fp32 outside autocast)."""
    head = getattr(method, "head", None)
    return [m for name, m in method.named_children() if isinstance(m, torch.nn.Linear) and m is not head
            and m.weight.requires_grad]


def fit_linear_transient_bytes(in_features: int, out_features: int, rows: int, bias: bool = True,
                               chunk: int = 1 << 14) -> int:
    """Peak bytes methods.base.fit_linear allocates for an (in -> out) map fitted on `rows` rows:
    one chunk of the fp32 solution (in [+1], chunk) and of the fp32 targets (rows, chunk, and its
    row-weighted copy), plus the small float64 N x N solve. tests/test_gpu_config.py measures
    fit_linear against this."""
    i, c = in_features + int(bias), min(chunk, out_features)
    return 4 * i * c + 8 * rows * c + 24 * rows * i


def map_transients(n: int, *, half: bool, accumulate: bool) -> tuple[int, int]:
    """(autocast copy, gradient temporaries) in bytes for label maps of n weights."""
    copy = 2 * n if half else 0  # autocast caches the bf16/fp16 cast of a leaf weight per forward
    # backward of a Linear under autocast: a half-precision weight gradient, cast to fp32 (the
    # cast's result becomes .grad, counted under gradients, unless one is there to add it to)
    temporaries = (2 * n + 4 * n if accumulate else 2 * n) if half else (4 * n if accumulate else 0)
    return copy, temporaries


def transients(method, *, half: bool, accumulate: bool) -> dict:
    """Short-lived bytes the persistent terms miss, each at its own moment (see the module doc)."""
    maps = _maps(method)
    n = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in maps)
    copy, temporaries = map_transients(n, half=half, accumulate=accumulate)
    warm = 0
    if getattr(method.cfg, "init_from_label", False) and maps:
        lab = getattr(method, "labels_frozen", None)
        rows = int(lab.mask.sum()) if lab is not None else 1
        warm = max(fit_linear_transient_bytes(m.in_features, m.out_features, rows, m.bias is not None)
                   for m in maps)
        # what is alive then: the base, the method's weights, the label states
        warm += sum(_tensor_bytes(p) for p in method.trainable_parameters()) + _label_state_bytes(method)
    return {"autocast_copy": copy, "grad_temporaries": temporaries, "warm_start": warm}


def _label_state_bytes(method) -> int:
    ls = getattr(method, "labels_frozen", None)
    if ls is None:
        return 0
    return sum(_tensor_bytes(t) for t in (ls.states, ls.mask, ls.ids))


def describe(est: dict) -> str:
    if est.get("estimate_bytes") is None:
        return f"memory estimate unavailable: {est.get('note')}"
    unit, div = ("GiB", GiB) if est["estimate_bytes"] >= GiB else ("MiB", 1024**2)

    def g(k):
        return f"{est[k] / div:.2f}"

    return (f"memory estimate per process: {g('estimate_bytes')} {unit} = frozen weights {g('frozen_bytes')} + "
            f"trainable {g('trainable_bytes')} + gradients {g('grad_bytes')} + AdamW {g('optimizer_bytes')} + "
            f"activations {g('activation_bytes')} + transients {g('transient_bytes')} (micro-batch "
            f"{est['micro_batch']}, {est['longest_train_tokens']} tokens)")


def peak(device: torch.device) -> dict:
    """Measured peaks of this process: CUDA allocator (when on CUDA) and resident set size."""
    out = {}
    if device.type == "cuda":
        out["peak_cuda_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_bytes"] = int(rss if sys.platform == "darwin" else rss * 1024)
    except (ImportError, OSError):
        pass
    return out


# --------------------------------------------------------------------------- before anything loads
# `ltune validate` has no model to probe (a 7B base may not even be downloadable where it runs):
# `plan` counts from the model's published architecture (conf/model/<name>.yaml `arch`). Weights,
# gradients, AdamW and the transients are exact counts; activations follow the usual per-layer
# tally of what a block saves (Korthikanti et al. 2022, without dropout: the frozen base runs in
# eval mode; flash/memory-efficient attention on GPUs keeps no T x T scores, except BLOOM, whose
# ALiBi attention is eager). With no tokenizer at hand, lengths in tokens are bounded from the
# characters: a text of c characters is taken as c/3 tokens (English BPE/WordPiece average ~4),
# capped at model.max_length; a label as 1.5 tokens a word plus two special tokens.
EAGER_ATTENTION = ("bloom",)
GATED_MLP = ("llama",)
BIASED = ("bert", "roberta", "deberta-v2", "gpt2", "bloom")
CUDA_CONTEXT = GiB  # CUDA context + allocator slack the tensors do not show


def arch_params(arch: dict) -> dict:
    """Parameter counts of the bare model from its published architecture: embeddings, the
    Linear weights of the blocks (what 8/4-bit loading quantizes) and the rest (norms, biases)."""
    mt, V, d, L = arch["model_type"], int(arch["vocab"]), int(arch["hidden"]), int(arch["layers"])
    h, kvh, inter = int(arch["heads"]), int(arch["kv_heads"]), int(arch["intermediate"])
    kv_dim = kvh * (d // h)
    emb = V * d + d * int(arch.get("type_vocab", 0) or 0)
    if arch.get("positions") == "learned" or mt in ("bert", "roberta", "gpt2"):
        emb += int(arch.get("max_positions", 512)) * d
    if arch.get("relative_attention"):
        emb += 2 * int(arch.get("position_buckets", 256)) * d
    mlp = (3 if mt in GATED_MLP else 2) * d * inter
    linear = L * (2 * d * d + 2 * d * kv_dim + mlp)
    biased = mt in BIASED or bool(arch.get("bias"))
    per_layer_rest = 4 * d + ((2 * d + 2 * kv_dim + inter + d) if biased else 0)
    rest = L * per_layer_rest + 2 * d
    return {"embedding": emb, "linear": linear, "rest": rest, "total": emb + linear + rest}


def method_params(arch: dict, method, num_labels: int, label_len: int) -> dict:
    """(trainable weights, of which in Linear maps the warm start fits) per method."""
    d, L = int(arch["hidden"]), int(arch["layers"])
    kv_dim = int(arch["kv_heads"]) * (d // int(arch["heads"]))
    P, K, l = int(method.num_virtual_tokens), num_labels, label_len
    pair_head = 2 * d + 2
    if getattr(method, "pair_framing", False) and method.name in ("prefix", "prompt"):  # P tokens per label
        per_label = L * 2 * kv_dim * P if method.name == "prefix" else P * d
        return {"trainable": K * per_label + pair_head, "maps": 0, "map_in": 0}
    if method.name == "prefix":
        return {"trainable": L * 2 * kv_dim * P + d * K + K, "maps": 0, "map_in": 0}
    if method.name == "prompt":
        return {"trainable": P * d + d * K + K, "maps": 0, "map_in": 0}
    if method.name == "lt_prompt":
        return {"trainable": d * d + pair_head, "maps": d * d, "map_in": d}
    if method.variant == "paper":
        z = l * l * L * 2 * kv_dim
        return {"trainable": d + z + pair_head, "maps": z, "map_in": l}
    z = (d + 1) * L * 2 * kv_dim
    return {"trainable": z + pair_head, "maps": z, "map_in": d}


def token_bounds(cfg, data) -> tuple[int, int]:
    """(longest text, longest label) in tokens, bounded from characters (see above)."""
    import math

    texts = [e.text + " " + (e.text_pair or "") for e in [*data.train, *data.eval]]
    longest = min(int(cfg.model.max_length), math.ceil(max((len(t) for t in texts), default=1) / 3) + 3)
    label = cfg.method.label_len or max(math.ceil(1.5 * len(t.split())) + 2 for t in data.label_texts)
    return longest, int(label)


def _echoes(method_cfg, model_type: str) -> bool:
    """Whether L-Tuning reads the label again after the text (PairMethod: label_echo)."""
    from ltune_cli.errors import LtuneError
    from ltune_cli.models.families import FAMILIES, family_name, resolve_label_echo

    try:
        kind = FAMILIES[family_name(model_type)].kind
    except LtuneError:  # an unknown family: refused later, where it loads
        kind = "encoder"
    return resolve_label_echo(kind, str(getattr(method_cfg, "label_echo", "auto")))


def plan(cfg, data) -> dict | None:
    """Per-process estimate (bytes) from conf/model's `arch` and the data (data.Splits), before
    anything loads; None when the model config has no `arch` (the run prints its probed estimate)."""
    arch = dict(cfg.model.arch or {})
    if not arch:
        return None
    num_labels = len(data.label_texts)
    longest, label_len = token_bounds(cfg, data)
    hw, m = cfg.hardware, cfg.method
    mt, d, L = arch["model_type"], int(arch["hidden"]), int(arch["layers"])
    h, kvh, inter = int(arch["heads"]), int(arch["kv_heads"]), int(arch["intermediate"])
    kv_dim = kvh * (d // h)
    half = hw.dtype in ("bf16", "fp16") or hw.load_in != "none"
    b = 2 if half else 4
    p = arch_params(arch)
    if hw.load_in == "8bit":
        frozen = p["linear"] * 1 + (p["embedding"] + p["rest"]) * 2
    elif hw.load_in == "4bit":  # NF4: half a byte a weight + its block constants
        frozen = p["linear"] * 0.53 + (p["embedding"] + p["rest"]) * 2
    else:
        frozen = p["total"] * b
    world = max(1, int(hw.nproc) or int(hw.gpus_per_node) or 1) if hw.strategy != "single" else 1
    if hw.strategy == "fsdp":  # blocks sharded; embeddings whole; one block gathered at a time
        frozen = (p["embedding"] + p["rest"]) * b + p["linear"] * b / world + p["linear"] * b / L
    mp = method_params(arch, m, num_labels, label_len)
    n_train, n_map = mp["trainable"], mp["maps"]
    trainable, grads, optimizer = 4 * n_train, 4 * n_train, 8 * n_train
    # Activations of one micro-batch: one sequence per text in training, at max_length tokens,
    # plus the prefix (P or the label's l positions) the attention reads.
    T = longest
    prefix = int(m.num_virtual_tokens) if m.name in ("prefix", "prompt") else label_len
    if m.name in ("lt_prefix", "lt_prompt") and _echoes(m, mt):  # the label read again after the text
        T += label_len
    mlp_saved = (4 if mt in GATED_MLP else 2) * inter
    per_token_layer = (8 * d + 2 * kv_dim + mlp_saved) * b
    if mt in EAGER_ATTENTION:  # scores and probabilities, T x (T + prefix) per head
        per_token_layer += h * (T + prefix) * (b + 4)
    B, E = int(hw.batch_size), min(int(hw.eval_batch_size), max(1, len(data.eval)))
    tokens = B * (T + (prefix if m.name in ("prompt", "lt_prompt") else 0))
    if hw.gradient_checkpointing:  # block inputs kept; one block recomputed with its gradients
        train_act = L * d * b * tokens + 3 * per_token_layer * tokens
    else:
        train_act = L * per_token_layer * tokens + 2 * per_token_layer * tokens
    pairs = E * (num_labels if m.name.startswith("lt_") or getattr(m, "pair_framing", False) else 1)
    eval_act = 1.2 * per_token_layer * pairs * T
    copy, temporaries = map_transients(n_map, half=half, accumulate=int(hw.grad_accum) * world > 1)
    label_states = num_labels * label_len * d * 4
    warm = 0
    if m.init_from_label and n_map:
        out = n_map // mp["map_in"]
        warm = fit_linear_transient_bytes(mp["map_in"], out, num_labels * label_len, m.name == "lt_prefix"
                                          and m.variant != "paper") + trainable + label_states
    activations = max(train_act, eval_act)
    during = max(train_act + copy, temporaries, eval_act + copy)
    transient = max(during, warm - (trainable + grads + optimizer + label_states)) - activations
    total = frozen + trainable + grads + optimizer + label_states + activations + transient
    return {"estimate_bytes": int(total), "frozen_bytes": int(frozen), "trainable_bytes": int(trainable),
            "grad_bytes": int(grads), "optimizer_bytes": int(optimizer), "other_bytes": int(label_states),
            "activation_bytes": int(activations), "train_activation_bytes": int(train_act),
            "eval_activation_bytes": int(eval_act), "transient_bytes": int(transient),
            "autocast_copy_bytes": int(copy), "grad_temporary_bytes": int(temporaries),
            "warm_start_bytes": int(warm), "processes": world, "micro_batch": B, "longest_train_tokens": T,
            "trainable_params": int(n_train), "frozen_params": int(p["total"])}


def check_fits(est: dict, hw) -> None:
    """Refuse a preset whose estimate (+ the CUDA context) exceeds its declared GPU memory."""
    from ltune_cli.errors import LtuneError

    limit = hw.gpu_mem_gb
    if limit is None or est is None:
        return
    need = (est["estimate_bytes"] + CUDA_CONTEXT) / GiB
    if need > limit:
        method = (est["trainable_bytes"] + est["grad_bytes"] + est["optimizer_bytes"]) / GiB
        what = (f"the method's {method:.1f} GiB of trainable weights, gradients and AdamW do not shrink with the "
                f"batch: use a GPU with more memory or a smaller method (prefix, prompt, lt_prompt)"
                if method > 0.5 * limit or est["frozen_bytes"] / GiB + method > limit else
                "lower hardware.batch_size and raise hardware.grad_accum, set hardware.gradient_checkpointing=true, "
                "or use hardware=gpu_large / fsdp / gpu_8bit")
        raise LtuneError(
            f"hardware={hw.name} declares hardware.gpu_mem_gb={limit:g} but this run needs about {need:.1f} GiB per "
            f"GPU (estimate {est['estimate_bytes'] / GiB:.1f} + 1 CUDA context): {what}. A larger GPU: set "
            f"hardware.gpu_mem_gb=<its GiB>.")
