"""What `ltune train` would refuse, checked by `ltune validate` without loading any weight.

Each check calls the same function train calls, so the two cannot drift apart: the model
folder and family (models/folder.describe: config.json only), method x family (a method's
`needs_kv_cache` against the family row), the process layout (distributed.check_layout /
needs_launch), the device and optional dependencies of the hardware preset
(backbone.resolve_device / _placement: bitsandbytes, accelerate, a CUDA GPU), and the Hydra
launcher named by a `hydra/launcher=` override (its plugin must be installed).
"""

from __future__ import annotations

import importlib.util

from ltune_cli.errors import LtuneError, suggest

# hydra/launcher=<name> -> (plugin module, pip extra that installs it)
LAUNCHERS = {
    "basic": (None, None),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "-e '.[launchers]'"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "-e '.[launchers]'"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "-e '.[launchers]'"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "-e '.[ray]'"),
}


def check(cfg):
    """Raise the LtuneError train would raise for `cfg`; return the model's folder.ModelInfo.
    (The launcher is checked on the overrides, before composing: check_launchers.)"""
    from ltune_cli.methods import REGISTRY, _load_all
    from ltune_cli.models.families import require_kv_cache
    from ltune_cli.models.folder import describe

    info = describe(cfg.model)
    _load_all()
    if getattr(REGISTRY.get(cfg.method.name), "needs_kv_cache", False):
        require_kv_cache(info.geo.family, cfg.method.name)
    check_hardware(cfg.hardware)
    return info


def check_hardware(hw) -> None:
    import torch

    from ltune_cli import distributed
    from ltune_cli.models.backbone import DTYPES, _placement, resolve_device

    distributed.needs_launch(hw)  # layouts that cannot work, nproc=0 without a GPU, nodes > 1
    # Optional packages first (bitsandbytes for load_in, accelerate for device_map), as on a GPU,
    # so a missing package is named even on a machine that has no GPU either.
    _placement(hw, torch.device("cuda"), DTYPES[hw.dtype])
    device = resolve_device(hw.device)  # a GPU preset (device cuda) on a machine without one
    _placement(hw, device, DTYPES[hw.dtype])  # 8/4-bit needs that device to be CUDA


def check_launchers(overrides) -> None:
    """A `hydra/launcher=<name>` override (ltune sweep) names a launcher whose plugin is installed."""
    for o in overrides:
        key, _, name = o.partition("=")
        if key.lstrip("+~") != "hydra/launcher":
            continue
        if name not in LAUNCHERS:
            raise LtuneError(f"unknown launcher '{name}' (hydra/launcher).{suggest(name, LAUNCHERS)}")
        module, extra = LAUNCHERS[name]
        if module and importlib.util.find_spec(module.split(".")[0]) and importlib.util.find_spec(module):
            continue
        if module:
            raise LtuneError(f"hydra/launcher={name} needs its Hydra plugin ({module.split('.')[-1]}), which is "
                             f"not installed: pip install {extra}.")
