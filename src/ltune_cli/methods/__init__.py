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
    cls = REGISTRY[cfg.name]
    if getattr(cfg, "pair_framing", False):  # a baseline in L-Tuning's (text, label) pair framing
        if not hasattr(cls, "in_pairs"):
            raise LtuneError(f"config key 'method.pair_framing' is for prefix and prompt; {cfg.name} scores "
                             f"(text, label) pairs already: drop method.pair_framing.")
        cls = cls.in_pairs
    return cls(backbone, cfg, label_texts)
