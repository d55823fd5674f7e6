"""Where the tool's bundled resources live: `conf/` and the vendored GLUE data.

In a source checkout (editable install) they are top-level folders of the repository;
in a wheel they are packaged inside `ltune_cli/` (see pyproject's force-include).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent


def _first_existing(*candidates: Path) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def conf_dir() -> Path:
    return _first_existing(PACKAGE_DIR / "conf", REPO_ROOT / "conf")


def glue_dir() -> Path:
    env = os.environ.get("LTUNE_GLUE_DIR")
    if env:
        return Path(env)
    return _first_existing(PACKAGE_DIR / "glue", REPO_ROOT / "data" / "glue")


def r8_dir() -> Path:
    """The vendored Reuters R8 topics (data/r8: train.tsv, dev.tsv)."""
    return _first_existing(PACKAGE_DIR / "r8", REPO_ROOT / "data" / "r8")


def cache_dir() -> Path:
    """Converted model weights (e.g. the GGUF -> safetensors copy of SmolLM2)."""
    env = os.environ.get("LTUNE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ltune"


def outputs_dir() -> Path:
    return Path(os.environ.get("LTUNE_OUTPUTS", "outputs"))
