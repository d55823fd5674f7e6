"""What the benchmark runs: one training step of an ltune method or of HF PEFT, and an eval pass.

`LtuneTrain.step` is the engine's step (engine._train with grad_accum=1): collate the batch,
method.training_loss under the run's autocast, backward, loss.item(), gradient clipping,
AdamW step, LR-schedule step, zero_grad. `PeftTrain.step` is the same step around a PEFT
PromptTuning/PrefixTuning model for sequence classification on the same weights.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ltune_cli.batching import Encoded, collate
from ltune_cli.memory import forward_input
from ltune_cli.models.backbone import half_matmuls


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters the per-token matmuls use: all but embedding tables and the [CLS]-only pooler."""
    skip = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Embedding) or name.split(".")[-1] == "pooler":
            skip |= {id(p) for p in mod.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


class PositionCount:
    """Counts the positions a model's forwards put through its layers: the real (unmasked) new
    columns of each forward's attention mask (a prefix's keys/values are not positions; a prompt
    a decoder reads once counts once). With `grad_only`, forwards run without grad are left out
    (the re-encoding mode's label forward is not part of the 4*N*tokens of a training step).
    Counted per batch as a tensor (no device sync in the timed step)."""

    def __init__(self, module: torch.nn.Module, grad_only: bool):
        self.module, self.grad_only = module, grad_only
        self.by_batch: dict[tuple, torch.Tensor | int] = {}
        self._now: torch.Tensor | int = 0

    def _hook(self, module, args, kwargs) -> None:
        if self.grad_only and not torch.is_grad_enabled():
            return
        x = forward_input(args, kwargs)
        mask = kwargs.get("attention_mask")
        T = x.shape[1]
        self._now = self._now + (mask[:, -T:].sum() if mask is not None else x.shape[0] * T)

    @contextlib.contextmanager
    def batch(self, idx: np.ndarray):
        self._now = 0
        handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            self.by_batch[tuple(int(i) for i in idx)] = self._now

    def positions(self, idx: np.ndarray) -> float:
        return float(self.by_batch[tuple(int(i) for i in idx)])


class _TrainStep:
    """What both runners share: the engine's optimizer and schedule, and the step around the
    runner's own loss (collate, loss under autocast, backward, loss.item(), clipping, AdamW,
    schedule, zero_grad)."""

    def _optimizer(self, groups: list[dict], tc, loop_adamw: bool = False) -> None:
        from ltune_cli.engine import make_optimizer, make_scheduler

        # The engine's optimizer; loop_adamw=True is the what-if of torch's default for-loop AdamW.
        self.opt = (torch.optim.AdamW(groups, weight_decay=tc.weight_decay) if loop_adamw
                    else make_optimizer(groups, tc.weight_decay))
        self.sched = make_scheduler(self.opt, tc)
        self.max_grad_norm = tc.max_grad_norm

    def loss(self, batch: dict, n: int) -> torch.Tensor:
        raise NotImplementedError

    def step(self, idx: np.ndarray) -> None:
        batch = collate(self.enc, idx, self.pad_id, self.padding_side, self.device)
        with self.count.batch(idx):
            with self.autocast():
                loss = self.loss(batch, len(idx))
            with self.matmuls():  # as engine._step: backward's half products where the forward's are
                loss.backward()
        loss_val = loss.item()
        if not np.isfinite(loss_val):
            raise FloatingPointError(f"non-finite loss {loss_val}")
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


class LtuneTrain(_TrainStep):
    impl = "ltune"

    def __init__(self, cfg, backbone, label_texts: list[str], enc: Encoded, device, autocast,
                 loop_adamw: bool = False):
        from ltune_cli.engine import seed_everything
        from ltune_cli.methods import build_method

        self.cfg, self.enc, self.backbone, self.autocast = cfg, enc, backbone, autocast
        self.matmuls = half_matmuls(device, cfg.hardware.dtype)
        self.device = device
        seed_everything(cfg.seed)  # as engine.build: method init independent of what ran before
        self.method = build_method(cfg.method, backbone, label_texts).to(device)
        self.params = self.method.trainable_parameters()
        tc = cfg.train
        lr = tc.lr if tc.lr is not None else cfg.method.lr
        self._optimizer(self.method.param_groups(lr), tc, loop_adamw)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.method.train()
        self.count = PositionCount(backbone.model, grad_only=True)
        self.label_tokens = (int(self.method.label_len) if hasattr(self.method, "label_len") else None)

    @property
    def pad_id(self) -> int:
        return self.backbone.pad_id

    @property
    def padding_side(self) -> str:
        return self.backbone.padding_side

    def num_trainable(self) -> int:
        return self.method.num_trainable()

    def loss(self, batch, n):
        # engine._step's scaling of a micro-batch's loss, with one micro-batch
        return self.method.training_loss(batch, self.gen) * (n / n)


class PeftTrain(_TrainStep):
    """HF PEFT PromptTuning / PrefixTuning + AutoModelForSequenceClassification, same step."""

    impl = "peft"

    def __init__(self, kind: str, cfg, backbone, num_labels: int, enc: Encoded, device, dtype, autocast):
        from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        from ltune_cli.engine import seed_everything
        from ltune_cli.models.offline import resolve

        self.enc, self.device, self.autocast = enc, device, autocast
        self.matmuls = half_matmuls(device, cfg.hardware.dtype)
        self.pad_id = backbone.pad_id
        # Decoders' classification heads pool the last position when given inputs_embeds (prompt
        # tuning): left padding makes that the last real token. Same tokens, same cost.
        self.padding_side = "left" if backbone.geo.kind == "decoder" else "right"
        seed_everything(cfg.seed)
        path = resolve(cfg.model.path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, dtype=backbone.dtype, revision=cfg.model.revision,
                trust_remote_code=cfg.model.trust_remote_code)
        finally:
            hf_logging.set_verbosity(verbosity)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = backbone.pad_id
        P = cfg.method.num_virtual_tokens
        pcfg = (PrefixTuningConfig if kind == "prefix" else PromptTuningConfig)(
            task_type=TaskType.SEQ_CLS, num_virtual_tokens=P)
        self.model = get_peft_model(model, pcfg).to(device)
        self.model.train()  # as HF Trainer runs it (the base's dropout is on where it has any)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        tc = cfg.train
        lr = tc.lr if tc.lr is not None else cfg.method.lr
        self._optimizer([{"params": self.params, "lr": lr}], tc)  # as ltune's
        self.count = PositionCount(self.model.get_base_model().base_model, grad_only=True)
        self.label_tokens = None

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    def loss(self, batch, n):
        return self.model(**batch).loss


def real_tokens(enc: Encoded, idx: np.ndarray) -> int:
    return int(sum(len(enc.input_ids[i]) for i in idx))


def padded_tokens(enc: Encoded, idx: np.ndarray) -> int:
    return int(len(idx) * max(len(enc.input_ids[i]) for i in idx))


def subset(enc: Encoded, idx) -> Encoded:
    idx = list(idx)
    tt = [enc.token_type_ids[i] for i in idx] if enc.token_type_ids is not None else None
    return Encoded([enc.input_ids[i] for i in idx], tt, enc.labels[np.asarray(idx)], 0)


class EvalPass:
    """engine.evaluate over a fixed text set, with `K` label texts."""

    def __init__(self, cfg, backbone, label_texts: list[str], enc: Encoded, device, autocast,
                 batch_size: int | None = None):
        from ltune_cli.engine import Setup, seed_everything
        from ltune_cli.methods import build_method

        seed_everything(cfg.seed)
        method = build_method(cfg.method, backbone, label_texts).to(device)
        method.eval()
        self.setup = Setup(cfg, None, backbone, method, None, enc, device, autocast,
                           half_matmuls(device, cfg.hardware.dtype))
        self.pairs = len(enc) * len(label_texts)
        self.texts = len(enc)
        self.count = PositionCount(backbone.model, grad_only=False)
        self.batch_size = batch_size

    def run(self) -> None:
        from ltune_cli.engine import evaluate

        with self.count.batch(np.arange(0)):  # the whole pass
            evaluate(self.setup, batch_size=self.batch_size)

    def positions(self) -> float:
        """Positions one pass puts through the layers (texts, once per pair for pair methods,
        + prompt positions)."""
        return self.count.positions(np.arange(0))
