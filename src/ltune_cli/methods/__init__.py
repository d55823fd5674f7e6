"""Methods register by name; `build_method` is the only place a name is looked up."""

from __future__ import annotations

from ltune_cli.errors import LtuneError, suggest

REGISTRY: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    from ltune_cli.methods import lt_prefix, lt_prompt, prefix, prompt  # noqa: F401


def build_method(cfg, backbone, label_texts):
    _load_all()
    if cfg.name not in REGISTRY:
        raise LtuneError(f"unknown method '{cfg.name}' (method=).{suggest(cfg.name, REGISTRY)}")
    return REGISTRY[cfg.name](backbone, cfg, label_texts)
