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


CONFIG_DIR_ENV = "LTUNE_CONFIG_DIR"
#: The config groups a user's own folder may add options to (docs/config-dir.md).
USER_GROUPS = ("model", "dataset", "method", "hardware", "logger", "sweep")


def user_conf_dir() -> Path | None:
    """Your own config folder (`--config-dir DIR` or LTUNE_CONFIG_DIR): `<DIR>/<group>/<name>.yaml`
    files composed with the shipped conf/ (Hydra's search path). None when unset.

    Refused in one line: a missing folder, a folder with no group sub-folder (the YAMLs would never
    be found), and a file named like a shipped one (Hydra reads conf/ first, so it would be ignored).
    """
    from ltune_cli.errors import LtuneError

    raw = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if not raw:
        return None
    where = f"--config-dir / {CONFIG_DIR_ENV}={raw}"
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise LtuneError(f"{where}: {'not a folder' if path.exists() else 'no such folder'} ({path}); give the "
                         f"folder that holds your {'/, '.join(USER_GROUPS)}/ sub-folders.")
    groups = [g for g in USER_GROUPS if (path / g).is_dir()]
    if not groups:
        raise LtuneError(f"{where}: {path} has none of the sub-folders {'/, '.join(USER_GROUPS)}/; put a dataset "
                         f"in {path}/dataset/<name>.yaml (see docs/config-dir.md).")
    from omegaconf import OmegaConf

    shipped = conf_dir()
    for g in groups:
        for f in sorted((path / g).glob("*.yaml")):
            if (shipped / g / f.name).is_file():
                raise LtuneError(f"{f} has the name of a shipped config ({g}={f.stem}), which would be used "
                                 f"instead; rename yours (e.g. {g}/my_{f.name}).")
            try:  # Hydra's own parse error does not name the file
                OmegaConf.load(f)
            except Exception as e:  # noqa: BLE001 - any YAML error is the file's
                raise LtuneError(f"{f}: not valid YAML ({str(e).strip().splitlines()[0]}).") from None
    return path
