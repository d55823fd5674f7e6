"""How much memory a run needs per process, printed before training and kept in results.json.

    frozen weights   bytes of the loaded base as it sits in this process (dtype, 8/4-bit,
                     FSDP shard), counted from its tensors: exact
    trainable        the method's fp32 weights, + their gradients (same size)
    optimizer        AdamW's two fp32 moments per trainable weight
    other            the method's constants (cached label states)
    activations      what autograd keeps for backward in one micro-batch (hardware.batch_size
                     texts of the longest training length) plus one block's transient tensors
                     and their gradients, or the evaluation forward if that is larger

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
    """Add up the distinct storages autograd saves for backward, parameters excluded."""
    seen: dict[tuple, int] = {}

    def pack(t):
        base = t._base if t._base is not None else t
        if isinstance(t, torch.nn.Parameter) or isinstance(base, torch.nn.Parameter):
            return t
        if hasattr(t, "to_local"):
            return t
        try:
            st = t.untyped_storage()
            seen[(t.device, st.data_ptr())] = st.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (meta, sparse)
            pass
        return t

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
    B, E = int(hw.batch_size), int(hw.eval_batch_size)
    was = method.training
    method.train()
    try:
        order = np.argsort(-s.train_enc.lengths, kind="stable")
        a1, n1 = _probe(s, s.train_enc, order[:1])
        a2, n2 = _probe(s, s.train_enc, order[:2]) if len(order) > 1 else (2 * a1, 2 * n1)
        eorder = np.argsort(-s.eval_enc.lengths, kind="stable")
        e1, _ = _probe(s, s.eval_enc, eorder[:1])
    except torch.OutOfMemoryError:
        return {"estimate_bytes": None, "note": "out of memory while probing two texts"}
    finally:
        method.train(was)
    per_text_scored = max(0, a2 - a1)  # one text, all the sequences `scores` runs for it
    seqs_per_text = max(1, n2 - n1)
    fixed = max(0, a1 - per_text_scored)  # label maps etc., independent of the batch
    per_seq = per_text_scored / seqs_per_text
    saved = fixed + per_seq * B  # training runs one sequence per text
    transient_train = 2 * per_seq * B / layers  # one block's tensors and their gradients in backward
    train_act = saved + transient_train
    # Evaluation keeps nothing: about one block's tensors at a time (x1.2: the embeddings and
    # the pooled output around it; calibrated on MiniLM and SmolLM2, docs/gpu.md).
    # Scoring may cut an eval batch into several forwards (PairMethod.scores on a CPU): the peak
    # is one forward's worth of texts.
    e_texts = min(E, method.texts_per_forward(E, int(s.eval_enc.lengths.max()), s.device))
    eval_act = 1.2 * max(0, e1 - fixed) * e_texts / layers
    activations = max(train_act, eval_act)
    grads = trainable
    optimizer = 2 * n_train * 4
    total = frozen + trainable + grads + optimizer + extra + activations
    return {"estimate_bytes": int(total), "frozen_bytes": int(frozen), "trainable_bytes": int(trainable),
            "grad_bytes": int(grads), "optimizer_bytes": int(optimizer), "other_bytes": int(extra),
            "activation_bytes": int(activations), "train_activation_bytes": int(train_act),
            "eval_activation_bytes": int(eval_act), "processes": world,
            "micro_batch": B, "longest_train_tokens": int(s.train_enc.lengths.max())}


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
            f"activations {g('activation_bytes')} (micro-batch {est['micro_batch']}, "
            f"{est['longest_train_tokens']} tokens)")


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
