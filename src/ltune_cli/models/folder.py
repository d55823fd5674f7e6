"""What a model folder (or hub id) is, read from its config.json before any weight loads.

Family, geometry and pooling come from the model itself, not from the conf/model preset (a
preset's `arch` only documents the model it names): `ltune train model.path=<folder>` with the
default preset runs a Llama folder as a Llama. `ltune validate` and `ltune train` both call
`describe`, so validate refuses what train would refuse, and train refuses it before loading.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ltune_cli.errors import LtuneError
from ltune_cli.models.families import FAMILIES, Geometry, family_name, geometry, resolve_pooling


@dataclass(frozen=True)
class ModelInfo:
    path: str  # a local folder or a hub id (offline:<key> resolved)
    local: bool
    config: object  # the transformers PretrainedConfig (no weights)
    geo: Geometry
    pooling: str  # resolved: cls | mean | last

    def summary(self) -> str:
        g = self.geo
        return (f"{g.family} {g.kind}, {g.layers} layers, d={g.hidden}, {g.heads} heads / {g.kv_heads} key/value "
                f"heads, pooling {self.pooling}")


def describe(model_cfg) -> ModelInfo:
    """Read model_cfg.path's config (config.json, no weights) into family, geometry and pooling.

    Refuses, each in one line: a missing folder, a folder without config.json or weights, an
    unsupported family (with the supported list), cls pooling on a decoder.
    """
    from ltune_cli.models.offline import resolve

    path = resolve(model_cfg.path)
    folder = Path(path).expanduser()
    local = folder.exists() or path.startswith((".", "/", "~"))
    requested = getattr(model_cfg, "family", "auto")
    if local:
        if not folder.is_dir():
            raise LtuneError(f"model.path={path}: no such folder.")
        cfg_file = folder / "config.json"
        if not cfg_file.is_file():
            raise LtuneError(f"model.path={path}: the folder has no config.json; point model.path at a folder "
                             f"written by save_pretrained.")
        try:
            raw = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise LtuneError(f"{cfg_file}: not valid JSON ({str(e).splitlines()[0]}).") from None
        model_type = raw.get("model_type") if isinstance(raw, dict) else None
        if requested == "auto" and not model_type:
            raise LtuneError(f"{cfg_file} names no model_type; set model.family to one of {', '.join(FAMILIES)}.")
        family_name(model_type, requested, where=str(cfg_file))  # unsupported: refused before anything loads
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise LtuneError(f"model.path={path}: the folder has no weights (*.safetensors or *.bin); "
                             f"point model.path at a folder written by save_pretrained.")
    config = _auto_config(path, model_cfg, local)
    geo = geometry(config, requested)
    return ModelInfo(path, local, config, geo, resolve_pooling(geo.kind, geo.family, model_cfg.pooling))


def _auto_config(path: str, model_cfg, local: bool):
    import transformers
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, revision=model_cfg.revision,
                                          trust_remote_code=model_cfg.trust_remote_code)
    except OSError as e:
        raise load_error(path, e, local) from None
    except (ValueError, KeyError) as e:  # a model_type this transformers does not know
        raise LtuneError(f"model.path={path}: transformers {transformers.__version__} cannot read its config "
                         f"({str(e).splitlines()[0][:160].rstrip('.')}); upgrade transformers, or set "
                         f"model.trust_remote_code=true if the folder ships its own modeling code.") from None


def load_error(path: str, e: Exception, local: bool) -> LtuneError:
    if _is_gated(e):
        return LtuneError(
            f"model '{path}' (model.path) is gated on the Hugging Face hub: accept its license at "
            f"https://huggingface.co/{path}, then log in with `hf auth login` or set HF_TOKEN=<your token> "
            f"(a token of the account that was granted access).")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return LtuneError(
        f"could not load model '{path}' (model.path): {str(e).splitlines()[0][:160].rstrip('.')}. "
        f"{'The hub is unreachable (offline). ' if not local or offline else ''}"
        f"Point model.path at a local folder with config.json + weights, or use model=minilm / "
        f"model=smollm2_135m, which ship with the package.")


def _is_gated(e: BaseException) -> bool:
    """A gated hub repo (or one that needs a token): transformers wraps huggingface_hub's
    GatedRepoError / 401 in an OSError; look through the chain."""
    from huggingface_hub.errors import GatedRepoError

    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, GatedRepoError) or "gated repo" in str(e).lower():
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False
