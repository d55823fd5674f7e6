"""The study driver (ltune_cli.study): plan -> jobs, selection on held-out train, resumable runs."""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest

from ltune_cli import study
from ltune_cli.errors import LtuneError

SPEC = {
    "name": "t", "cells": {"minilm": ["sst2", "r8"]}, "methods": ["prefix", "lt_prefix"],
    "common": ["train.max_steps=10", "train.eval_every=5", "hardware.num_threads=1"], "datasets": {"r8": ["model.max_length=64"]},
    "pilot": {"cells": ["minilm/sst2"], "overrides": ["train.max_steps=30"]},
    "tune": {"seed": 0, "holdout": {"sst2": 50, "r8": 40}, "lr_scale": [0.5, 2.0], "num_virtual_tokens": [5, 10]},
    "final": {"seeds": 2, "seeds_by_dataset": {"r8": 3}},
    "ablate": {"cells": ["minilm/r8"], "seeds": 1,
               "variants": {"labels_meaningless": ["lt_prefix"], "labels_swapped": ["lt_prefix"],
                            "pair_framing": ["prefix"]}},
}


def _config_yaml(job) -> str:
    """The config.yaml `ltune train` would write for the job's overrides (the keys the study reads)."""
    from omegaconf import OmegaConf

    pairs = [o.split("=", 1) for o in job.overrides]
    dots = [f"{study.GROUPS.get(k, k)}={v}" for k, v in pairs]
    return OmegaConf.to_yaml(OmegaConf.from_dotlist(dots))


def _finish(job, root, score, seed=0, val_loss=None, preds=None, curve=()):
    """A completed run folder as `ltune train` leaves it, with the given final score (and, if given,
    predictions against GOLD and an accuracy curve [(step, accuracy), ...] before the last step)."""
    from ltune_cli import runfolder

    folder = job.folder(root)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(_config_yaml(job))
    final = {"accuracy": score} if val_loss is None else {"accuracy": score, "val_loss": val_loss}
    if preds is not None:
        (folder / "predictions.json").write_text(json.dumps({"gold": GOLD, "pred": preds}))
    evals = [{"kind": "eval", "step": st, "accuracy": a} for st, a in curve] + [{"kind": "eval", "step": 10, **final}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    (folder / "results.json").write_text(json.dumps({
        **dict.fromkeys(runfolder.RESULT_KEYS), "schema": runfolder.SCHEMA,
        "run": {"method": job.method, "model": job.model, "dataset": job.dataset},
        "status": "completed", "primary_metric": "accuracy", "seed": seed, "final": final,
        "steps": 10, "trainable_params": 1, "train_time_s": 1.0, "wall_time_s": 2.0, "train_examples": 300,
        "eval_examples": len(GOLD) if preds is not None else 5}))


GOLD = [0, 1] * 20


def test_jobs_cover_the_grid_with_explicit_values(tmp_path, monkeypatch):
    tune = study.tune_jobs(SPEC)
    # per cell: prefix 2 lr x 2 P + lt_prefix 2 lr
    assert len(tune) == 2 * (4 + 2)
    j = next(j for j in tune if j.method == "lt_prefix" and j.dataset == "r8" and j.values["lr_scale"] == 2.0)
    assert "method.lr=0.0006" in j.overrides and "method.head_lr=0.01" in j.overrides  # 2 x 3e-4, 2 x 5e-3
    assert "dataset.holdout=40" in j.overrides and "model.max_length=64" in j.overrides
    pilot = study.pilot_jobs(SPEC)
    assert len(pilot) == 2 and all("train.max_steps=30" in j.overrides for j in pilot)
    assert all(sum(o.startswith("train.max_steps=") for o in j.overrides) == 1 for j in pilot)  # last wins
    longer = study.pilot_jobs({**SPEC, "pilot": {**SPEC["pilot"], "cell_overrides": {"minilm/sst2": ["train.max_steps=90"]}}})
    assert all("train.max_steps=90" in j.overrides and "train.max_steps=30" not in j.overrides for j in longer)


def test_selection_reads_held_out_scores_and_drives_final_and_ablations(tmp_path):
    root = tmp_path / "study"
    with pytest.raises(LtuneError, match="has not completed"):
        study.choose(SPEC, root)
    for j in study.tune_jobs(SPEC):  # best: lr 2.0, P 5 for prefix; lr 0.5 for lt_prefix
        best = (j.values["lr_scale"] == 2.0 and j.values["num_virtual_tokens"] == 5) if j.method == "prefix" \
            else j.values["lr_scale"] == 0.5
        _finish(j, root, 0.9 if best else 0.6)
    chosen = study.choose(SPEC, root)
    assert chosen[("minilm", "sst2", "prefix")]["lr_scale"] == 2.0
    assert chosen[("minilm", "sst2", "prefix")]["num_virtual_tokens"] == 5
    assert chosen[("minilm", "r8", "lt_prefix")]["lr_scale"] == 0.5
    final = study.final_jobs(SPEC, chosen)
    assert len(final) == 2 * 2 + 2 * 3  # sst2: 2 seeds, r8: 3 seeds
    f = next(j for j in final if j.method == "prefix")
    assert "method.lr=0.02" in f.overrides and "method.num_virtual_tokens=5" in f.overrides
    assert not any(o.startswith("dataset.holdout") for o in f.overrides)  # final runs score on dev
    only = {**SPEC, "ablate": {**SPEC["ablate"], "only": {"minilm/r8": ["labels_swapped"]}}}
    assert [j.values["ablation"] for j in study.ablate_jobs(only, chosen)] == ["labels_swapped"]
    with pytest.raises(LtuneError, match="ablate.only minilm/r8 names warm_start"):
        study.ablate_jobs({**SPEC, "ablate": {**SPEC["ablate"], "only": {"minilm/r8": ["warm_start"]}}}, chosen)
    abl = {j.values["ablation"]: j for j in study.ablate_jobs(SPEC, chosen)}
    assert abl["labels_meaningless"].overrides[-2].startswith("dataset.label_texts=[label zero,label one,")
    assert abl["labels_swapped"].overrides[-2] == ("dataset.label_texts=[acquisition,crude oil,trade,"
                                                   "foreign exchange,interest rates,shipping,grain,earnings]")


EXTEND = {**SPEC, "cells": {"minilm": ["sst2"]}, "ablate": {**SPEC["ablate"], "cells": []},
          "tune": {**SPEC["tune"], "extend": {"below": [0.125], "above": [8.0, 32.0]}}}


def test_a_best_scale_at_an_edge_of_the_grid_extends_it_one_scale_at_a_time(tmp_path):
    """Where a method's best run sits at the lowest / highest scale tried, the grid goes one scale
    further (at the best run's P), again while the best stays at the edge, until the list ends."""
    root = tmp_path / "study"
    base = study.tune_jobs(EXTEND, root)
    assert len(base) == 4 + 2  # nothing has run: the grid only
    score = {("prefix", 2.0, 10): 0.8, ("lt_prefix", 0.5, None): 0.8}  # prefix: top edge; lt_prefix: bottom
    for j in base[:-1]:
        _finish(j, root, score.get((j.method, j.values["lr_scale"], j.values["num_virtual_tokens"]), 0.6))
    def added():
        return [(j.method, j.tag) for j in study.tune_jobs(EXTEND, root) if j not in base]

    assert added() == [("prefix", "lr8-P10-s0")]  # lt_prefix's grid still runs: not extended yet
    _finish(base[-1], root, 0.6)
    assert added() == [("prefix", "lr8-P10-s0"), ("lt_prefix", "lr0.125-s0")]
    more = study.tune_jobs(EXTEND, root)
    assert "method.lr=0.08" in more[4].overrides and "method.num_virtual_tokens=10" in more[4].overrides
    partial = study.choose(EXTEND, root, strict=False)
    assert partial[("minilm", "sst2", "prefix")]["edge"] == "above"  # among the runs completed so far
    assert partial[("minilm", "sst2", "prefix")]["tuning"] == "running"
    from ltune_cli import study_report
    assert "- Equal tuning: all 2 choices are still being tuned." \
        == study_report.tuning_note(partial, EXTEND)
    with pytest.raises(LtuneError, match="lr8-P10-s0 has not completed"):
        study.choose(EXTEND, root)
    _finish(more[4], root, 0.9)  # better again, at the top: one more above
    _finish(more[-1], root, 0.5)  # worse: lt_prefix's best lies inside
    assert added() == [("prefix", "lr8-P10-s0"), ("prefix", "lr32-P10-s0"), ("lt_prefix", "lr0.125-s0")]
    _finish(study.tune_jobs(EXTEND, root)[5], root, 0.95)  # the best again at the top, and the list is used up
    assert len(added()) == 3
    chosen = study.choose(EXTEND, root)
    inside = {**chosen, ("minilm", "sst2", "prefix"): {**chosen[("minilm", "sst2", "prefix")], "edge": None}}
    assert study_report.tuning_note(inside, EXTEND) == (
        "- Equal tuning: none of the 2 tuned choices lies at an edge of the learning-rate scales tried (the grid's "
        "extensions included): each is a best with a worse scale on either side.")
    assert chosen[("minilm", "sst2", "prefix")] | {"score": 0} == {
        "lr_scale": 32.0, "num_virtual_tokens": 10, "score": 0, "held_out_val_loss": None, "edge": "above"}
    assert chosen[("minilm", "sst2", "lt_prefix")]["lr_scale"] == 0.5
    assert chosen[("minilm", "sst2", "lt_prefix")]["edge"] is None and "tuning" not in chosen[("minilm", "sst2", "lt_prefix")]
    assert ("- Equal tuning: 1 of 2 tuned choices lies at an edge of the learning-rate scales tried, the grid's "
            "extensions included (minilm/sst2/prefix); the best may lie beyond them.") \
        == study_report.tuning_note(chosen, EXTEND)
    # choices not made yet count as still being tuned, whether or not any of their runs has completed
    only = {k: v for k, v in chosen.items() if k[2] == "lt_prefix"}
    assert study_report.tuning_note(only, EXTEND).endswith("on either side. 1 more is still being tuned.")
    assert study_report.tuning_note({}, EXTEND) == "- Equal tuning: all 2 choices are still being tuned."
    assert len(study.planned_jobs(EXTEND, "tune", root)) == 6 + 3


def _mutate(plan: dict, key: str, value) -> dict:
    """A copy of the plan with dotted `key` set to `value` (DELETE: removed)."""
    import copy

    out = copy.deepcopy(plan)
    *path, last = key.split(".")
    node = out
    for k in path:
        node = node[k]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


DELETE = object()


@pytest.mark.parametrize("key, value, said", [
    ("final.seeds_by_datset", {"r8": 5}, "unknown key 'final.seeds_by_datset'. Did you mean 'seeds_by_dataset'?"),
    ("seed", 1, "unknown key 'seed'."),
    ("methods", DELETE, "key 'methods' is missing"),
    ("final.seeds", "three", "key 'final.seeds': Value 'three' of type 'str' could not be converted to Integer"),
    ("tune.lr_scale", 3, "key 'tune.lr_scale': "),
    ("cells", {"minilm": ["sst3"]}, "key 'cells.minilm': no dataset 'sst3' in "),
    ("methods", ["prefix", "lt_prefx"], "key 'methods': no method 'lt_prefx' in "),
    ("datasets", {"r9": ["model.max_length=64"]}, "key 'datasets.r9': no dataset 'r9'"),
    ("cell_overrides", {"minilm/sst": ["x=1"]}, "key 'cell_overrides.minilm/sst': no dataset 'sst'"),
    ("ablate.cells", ["minilm/cola"], "key 'ablate.cells': 'minilm/cola' is not a cell of the plan; name one of "
                                      "minilm/r8, minilm/sst2 (model/dataset), or add it to cells."),
    ("tune.holdout", {"sst2": 50}, "key 'tune.holdout': no held-out slice for r8;"),
    ("final.seeds", 0, "key 'final.seeds': 0; it must be at least 1."),
    ("ablate.variants", {"labels_swapped": ["lt_prompt"]}, "key 'ablate.variants.labels_swapped': lt_prompt not "
                                                           "among the plan's methods"),
])
def test_a_plan_with_a_wrong_key_or_name_stops_with_one_line(tmp_path, capsys, key, value, said):
    """A study plan is checked against its schema before anything runs: a misspelt key (RTE would
    silently run 3 seeds, not 5), a missing or mistyped value, a name with no conf file or a cell
    outside the plan is one line naming the file and the key, exit 2, never a traceback."""
    import yaml

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(_mutate(SPEC, key, value)))
    assert study.main(["status", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: study plan {plan}: ") and said in err, err
    assert len(err.strip().splitlines()) == 1


def test_an_ablation_variant_can_run_more_seeds_in_one_cell(tmp_path, capsys):
    """ablate.seeds_by_cell: a contrast between ablations (the A.5 variant's warm start) gets more
    seeds in one cell, every other variant and cell keeps its own; a cell or variant the plan's
    ablations do not have is an error, not an entry applied to nothing."""
    import yaml

    more = {**SPEC, "ablate": {**SPEC["ablate"], "seeds_by_cell": {"minilm/r8": {"labels_swapped": 4}}}}
    chosen = {(m, d, meth): {"lr_scale": 1.0} for m, d in study.cells(more) for meth in more["methods"]}
    seeds = {}
    for j in study.ablate_jobs(more, chosen):
        seeds.setdefault(j.values["ablation"], []).append(int(j.tag.rsplit("-s", 1)[1]))
    assert seeds == {"labels_meaningless": [0], "labels_swapped": [0, 1, 2, 3], "pair_framing": [0]}
    plan = tmp_path / "plan.yaml"
    for entry, said in (({"minilm/sst2": {"labels_swapped": 4}}, "key 'ablate.seeds_by_cell.minilm/sst2': not one "
                                                                 "of ablate.cells; name one of minilm/r8."),
                        ({"minilm/r8": {"label_swapped": 4}}, "key 'ablate.seeds_by_cell.minilm/r8.label_swapped': "
                                                              "not one of ablate.variants;"),
                        ({"minilm/r8": {"labels_swapped": 0}}, "key 'ablate.seeds_by_cell.minilm/r8.labels_swapped': "
                                                               "0; it must be at least 1.")):
        plan.write_text(yaml.safe_dump(_mutate(SPEC, "ablate.seeds_by_cell", entry)))
        assert study.main(["status", "--plan", str(plan)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err
    plan.write_text(yaml.safe_dump(more))
    assert study.load_spec(str(plan))["ablate"]["seeds_by_cell"] == {"minilm/r8": {"labels_swapped": 4}}


def test_a_plan_that_is_not_yaml_or_not_a_mapping_stops_with_one_line(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    for text, said in (("name: t\n\tcells: 1\n", "cannot read it as YAML (line 2, column 1: found character '\\t'"),
                       ("- 1\n", "the file must be a mapping of keys")):
        plan.write_text(text)
        assert study.main(["status", "--plan", str(plan)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: study plan {plan}: ") and said in err and len(err.strip().splitlines()) == 1, err


def test_a_plan_gets_the_schema_defaults_and_keeps_its_values(tmp_path):
    import yaml

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({k: v for k, v in SPEC.items() if k not in ("pilot", "ablate")}))
    spec = study.load_spec(str(plan))
    assert {k: spec[k] for k in SPEC if k not in ("pilot", "ablate", "tune")} == {
        k: v for k, v in SPEC.items() if k not in ("pilot", "ablate", "tune")}
    assert spec["tune"]["lr_scale"] == [0.5, 2.0] and spec["tune"]["num_virtual_tokens"] == [5, 10]
    assert spec["ablate"]["cells"] == [] and spec["pilot"]["cells"] == [] and spec["results"] is None
    assert study.ablate_jobs(spec, {}) == [] and study.pilot_jobs(spec) == []


@pytest.mark.parametrize("extend", [{"lower": [0.125]}, {"above": [1.0]}, {"above": 8.0}, {"below": ["x"]}])
def test_a_tune_extension_that_would_extend_nothing_is_an_error(tmp_path, extend, capsys):
    """A misspelt side, a scale inside the grid or not a list: said, exit 2, not silently ignored."""
    import yaml

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**EXTEND, "tune": {**EXTEND["tune"], "extend": extend}}))
    assert study.main(["run", "tune", "--plan", str(plan), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study plan t: tune.extend.") and "beyond the grid (0.5, 2)" in err
    assert len(err.strip().splitlines()) == 1


def test_running_the_tune_stage_runs_the_extensions_its_runs_call_for(tmp_path, monkeypatch):
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path))
    ran = []

    def fake_run_job(job, root, stop=None):  # a higher scale scores better, up to 8
        ran.append((job.method, job.tag))
        _finish(job, root, min(job.values["lr_scale"], 8.0) / 10)
        return "completed"

    monkeypatch.setattr(study, "run_job", fake_run_job)
    assert study.run_stage(EXTEND, "tune", jobs_in_parallel=2) == 0
    assert ran[6:] == [("prefix", "lr8-P5-s0"), ("lt_prefix", "lr8-s0"), ("prefix", "lr32-P5-s0"),
                       ("lt_prefix", "lr32-s0")]
    chosen = study.choose(EXTEND, study.root_of(EXTEND))
    assert {k[2]: (v["lr_scale"], v["edge"]) for k, v in chosen.items()} == {"prefix": (8.0, None),
                                                                               "lt_prefix": (8.0, None)}


def test_run_skips_completed_resumes_checkpointed_and_restarts_empty(tmp_path, monkeypatch):
    root = tmp_path / "study"
    jobs = study.tune_jobs(SPEC)[:3]
    _finish(jobs[0], root, 0.5)
    (jobs[1].folder(root) / "checkpoints" / "step_5").mkdir(parents=True)
    jobs[2].folder(root).mkdir(parents=True)  # a start that left nothing to resume from
    calls = []

    class FakePopen:  # the run, done at once
        def __init__(self, argv, **kw):
            self.returncode = fake_run(argv)

        def wait(self):
            return self.returncode

    def fake_run(argv):
        calls.append(argv)
        folder = argv[argv.index("--resume") + 1] if "--resume" in argv else argv[-1].split("=", 1)[1]
        from pathlib import Path
        if "--resume" not in argv:
            assert not Path(folder).exists()
        (Path(folder)).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "results.json").write_text(json.dumps({"status": "completed"}))
        (Path(folder) / "config.yaml").write_text(_config_yaml(next(j for j in jobs if j.folder(root) == Path(folder))))
        return 0

    monkeypatch.setattr(study.subprocess, "Popen", FakePopen)
    assert [study.run_job(j, root) for j in jobs] == ["skipped", "completed", "completed"]
    assert len(calls) == 2 and "--resume" in calls[0] and "--resume" not in calls[1]
    assert calls[1][-1] == f"out_dir={jobs[2].folder(root)}"


def test_a_run_another_process_is_writing_is_left_alone(tmp_path, monkeypatch):
    """Two `study run`s at once: the folder another writer holds is neither cleaned nor resumed."""
    from ltune_cli import runfolder

    root = tmp_path / "study"
    job = study.tune_jobs(SPEC)[0]
    job.folder(root).mkdir(parents=True)  # no checkpoint yet: would be cleaned if nobody held it
    lock = runfolder.RunLock(job.folder(root))
    lock.acquire()
    monkeypatch.setattr(study.subprocess, "Popen", lambda *a, **k: pytest.fail("started a second writer"))
    try:
        status = study.run_job(job, root)
    finally:
        lock.release()
    assert status.startswith("skipped, running elsewhere: pid ") and job.folder(root).is_dir()


# A run as `study run` starts it, standing in for `ltune train`: it says it has started, then waits;
# a stop signal makes it write which one and exit 130, as the engine does after its checkpoint.
STOPPABLE_RUN = """
import os, pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
def stop(signum, frame):
    (folder / "stopped").write_text(signal.Signals(signum).name)
    sys.exit(130)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2):
    signal.signal(s, stop)
(folder / "started").write_text(str(os.getpid()))
time.sleep(20)
sys.exit(1)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR2"])
def test_a_stop_signal_stops_the_runs_going_and_starts_no_more(tmp_path, monkeypatch, capsys, sig):
    """`kill <study pid>`, Ctrl-C, a closed terminal, SLURM's warning: each run going gets the signal
    (and checkpoints), no queued run starts, and the stage ends at once with how to resume; the
    signal's old handler is back afterwards. Was: SIGTERM left the runs going as orphans; Ctrl-C
    waited for every queued run of the stage."""
    import os
    import signal
    import sys
    import threading
    import time

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path))
    real_popen = subprocess.Popen

    def popen(argv, **kw):
        assert kw.get("start_new_session")  # a terminal's Ctrl-C reaches a run only through the study
        return real_popen([sys.executable, "-c", STOPPABLE_RUN, argv[-1].split("=", 1)[1]], **kw)

    monkeypatch.setattr(study.subprocess, "Popen", popen)
    root, jobs = study.root_of(SPEC), study.tune_jobs(SPEC)
    began = lambda: [j for j in jobs if (j.folder(root) / "started").exists()]  # noqa: E731

    def send():
        deadline = time.time() + 30
        while len(began()) < 2 and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), getattr(signal, sig))

    import yaml

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(SPEC))
    before = signal.getsignal(getattr(signal, sig))
    threading.Thread(target=send, daemon=True).start()
    t0 = time.time()
    assert study.main(["run", "tune", "--plan", str(plan), "--jobs", "2"]) == 128 + getattr(signal, sig)
    assert time.time() - t0 < 15  # not the runs' 20 s: they stopped on the signal
    assert len(began()) == 2 and len(jobs) > 2  # nothing started after it
    logs = sorted(p.name for p in root.rglob("*.log"))  # and no log says a queued run was
    assert logs == sorted(f"{j.tag}.log" for j in began()), logs
    assert [(j.folder(root) / "stopped").read_text() for j in began()] == [sig, sig]
    out = capsys.readouterr().out
    assert f"stopped by {sig}: no more runs started; 2 stopped where their last checkpoint is" in out
    again = re.search(r"`(\S+) -m ltune_cli\.study (.*)` resumes them and runs the rest\.", out)
    assert again[2] == f"run tune --plan {plan} --jobs 2"
    assert os.path.samefile(again[1], sys.executable)  # as a path from here: `.venv/bin/python` in a checkout
    assert "not started" not in out
    assert signal.getsignal(getattr(signal, sig)) is before


def test_ctrl_c_outside_the_runs_is_one_line_not_a_traceback(monkeypatch, capsys):
    def interrupted(plan):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "load_spec", interrupted)
    assert study.main(["status"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_runs_table_has_one_row_per_completed_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path))
    root = study.root_of(SPEC)
    for n, j in enumerate(study.tune_jobs(SPEC)):
        _finish(j, root, 0.5 + n / 100)
    table = study.runs_table(SPEC)
    assert (table["stage"] == "tune").sum() == 12 and table["accuracy"].max() == pytest.approx(0.61)


def test_wall_times_of_runs_on_different_machines_are_shown_apart(tmp_path, monkeypatch):
    """A cell whose final runs ran on different machines (results.json "sittings"; the machine of
    most of a run's steps): its minutes are one mean per machine, each named, never one mean."""
    from ltune_cli import study_report

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path))
    root = study.root_of(SPEC)
    for j in study.tune_jobs(SPEC):
        _finish(j, root, 0.6)
    fast, slow = ({"host": h, "cpu": c, "logical_cpus": 2, "accelerator": None}
                  for h, c in (("a", "Xeon with AMX"), ("b", "AMD EPYC")))
    cell = [j for j in study.final_jobs(SPEC, study.choose(SPEC, root)) if (j.dataset, j.method) == ("r8", "prefix")]
    assert len(cell) == 3
    for n, (j, sittings, minutes) in enumerate(zip(cell, (
            None,  # from before the key: not recorded
            [{"machine": slow, "steps": [0, 10], "wall_s": 1800.0}],
            [{"machine": None, "steps": [0, 3], "wall_s": 100.0}, {"machine": slow, "steps": [3, 10], "wall_s": 2000.0}],
    ), (10.0, 30.0, 40.0))):
        _finish(j, root, 0.6, seed=n)
        res = json.loads((j.folder(root) / "results.json").read_text())
        (j.folder(root) / "results.json").write_text(json.dumps({**res, "wall_time_s": minutes * 60,
                                                                 **({"sittings": sittings} if sittings else {})}))
    table = study.runs_table(SPEC)
    assert [m if isinstance(m, str) else None for m in table[table["stage"] == "final"]["machine"]] == [
        None, "AMD EPYC", "AMD EPYC"]
    row = next(r for r in study_report.cost_table(SPEC, table) if r.startswith("| minilm | prefix"))
    assert "10.0 (n=1, machine not recorded); 35.0 ± 7.1 (n=2, AMD EPYC)" in row, row
    assert study.machine_of({"sittings": [{"machine": fast, "steps": [0, 2]}, {"machine": slow, "steps": [2, 10]}]}) \
        == "AMD EPYC"


def test_only_restricts_every_stage_and_final_needs_only_its_own_tune_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path))
    spec = SPEC
    part = study.only(spec, datasets="sst2", methods="prefix")
    assert {(j.dataset, j.method) for j in study.tune_jobs(part)} == {("sst2", "prefix")}
    assert part["ablate"]["cells"] == [] and study.pilot_jobs(part) != []
    root = study.root_of(part)
    for job in study.tune_jobs(part):  # the rest of the grid has not run: final still starts
        _finish(job, root, 0.5)
    assert {j.method for j in study.jobs_for(part, "final", root)} == {"prefix"}
    with pytest.raises(LtuneError, match="has not completed"):
        study.jobs_for(spec, "final", root)
    with pytest.raises(LtuneError, match="no method lt_prompt"):
        study.only(spec, methods="prefix,lt_prompt")


def test_results_report_every_section_from_the_run_folders(tmp_path, monkeypatch):
    """`study results`: every number in RESULTS.md and the CSV is read from a run folder; the
    differences, steps to target, ablations and the verdict follow the runs (LT-prefix 0.9 vs
    prefix 0.6 on sst2, equal on r8; meaningless labels cost 0.3 there, swapped ones nothing)."""
    from ltune_cli import study_report

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "out"))
    root = study.root_of(SPEC)
    for j in study.tune_jobs(SPEC):
        best = j.values["lr_scale"] == 2.0 and j.values.get("num_virtual_tokens") in (None, 10)
        _finish(j, root, 0.8 if best else 0.6)

    def preds(n_right):  # right on the first n_right of GOLD
        return [g if i < n_right else 1 - g for i, g in enumerate(GOLD)]

    for j in study.final_jobs(SPEC, study.choose(SPEC, root)):
        seed = int(j.tag[1:])
        right = 36 - seed if (j.dataset, j.method) == ("sst2", "lt_prefix") else 24 + seed
        curve = [(5, 0.7)] if (j.dataset, j.method) == ("sst2", "lt_prefix") else [(5, 0.5)]
        _finish(j, root, right / 40, seed=seed, preds=preds(right), curve=curve)
    for j in study.ablate_jobs(SPEC, study.choose(SPEC, root)):
        seed = int(j.tag.rsplit("-s", 1)[1])
        right = 24 + seed - (12 if j.values["ablation"] == "labels_meaningless" else 0)
        if j.values["ablation"] == "labels_swapped":  # 2 fewer right, on other texts: a wide interval over 0
            right -= 2
            _finish(j, root, right / 40, seed=seed, preds=[g if i >= 40 - right else 1 - g for i, g in enumerate(GOLD)])
        else:
            _finish(j, root, right / 40, seed=seed, preds=preds(right))
    _finish(study.pilot_jobs(SPEC)[0], root, 0.6, preds=preds(24), curve=[(5, 0.5)])  # the pilot: one of two
    md, csv = tmp_path / "RESULTS.md", tmp_path / "results" / "runs.csv"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nkept above\n{study_report.README_BEGIN}\nold numbers\n{study_report.README_END}\nkept below\n")
    study_report.write_results(SPEC, md, csv, readme=readme)
    text = md.read_text()
    block = readme.read_text()
    # the setup, read from the run folders (this fixture's config.yaml holds only the plan's overrides)
    assert "| minilm | sst2 | 300 | 40 | ? | 10 | ? | ? | 2 of 2 |\n| minilm | r8 | 300 | 40 | 64 | 10 | ? | ? | 3 of 3 |" in text
    final = study_report.load_stage_runs(SPEC, study_report._with_columns(study.runs_table(SPEC)), "final")
    for r in final[("minilm", "r8", "prefix")]:
        r.config["dataset.eval_limit"] = "40"  # scored the first 40 of a longer split
    final[("minilm", "r8", "lt_prefix")].pop()
    assert "| minilm | r8 | 300 | 40 / 40 (the first) | 64 | 10 | ? | ? | 2-3 of 3 |" in study_report.setup_table(SPEC, final)
    assert block.startswith(f"# x\nkept above\n{study_report.README_BEGIN}\n") and block.endswith(
        f"\n{study_report.README_END}\nkept below\n") and "old numbers" not in block
    assert "10 of 10 final runs completed so far" in block and "(RESULTS.md)" in block
    assert "| model | dataset | prefix | LT-prefix | LT-prefix − prefix |" in block  # no LT-prompt in this plan
    assert "| minilm | sst2 | 0.613 ± 0.018 (n=2) | 0.887 ± 0.018 (n=2) | +0.275 [" in block
    assert "| minilm | r8 | 0.625 ± 0.025 (n=3) | 0.625 ± 0.025 (n=3) | +0.000 [" in block
    # r8: the best method's 0.625 is within 2 standard errors (2·sqrt(.25/40) = 0.158) of the majority
    # class's 0.5: every method at chance there, so its comparison is left out of the judgement
    assert ("- Scores, the paper's +0-2 points over prefix / prompt tuning on BERT-size encoders, on minilm (encoder): "
            "**supported**. L-Tuning ahead with an interval excluding 0 in 1, behind in 0, not distinguishable from its "
            "baseline in 0 of 1 model x dataset x pair comparisons (accuracy; 1 more, where "
            "neither method of the pair beats chance, left out: see Learning); mean difference, per metric: accuracy "
            "+0.275 over 1.") in block  # as in RESULTS.md
    assert "- Learning: in 1 of 2 cells (minilm/r8) not even the best method ends above chance (dev split, primary metric" in block
    assert "score judgements leave them out; minilm/r8 had no pilot at a longer budget." in block
    # a pilot (longer budget) that learnt, or did not, where the final runs are at chance: 0.6 on 40
    # held-out texts is within 2 standard errors of the majority's 0.5
    assert study_report.pilot_learning(SPEC, study.runs_table(SPEC)) == {("minilm", "sst2"): {
        "steps": 10, "texts": 40, "metric": "accuracy", "chance": 0.5, "best": "prefix", "score": 0.6, "learnt": [],
        "methods": 1}}
    pilot = {"steps": 30, "texts": 40, "metric": "accuracy", "chance": 0.5, "best": "lt_prefix", "score": 0.9, "methods": 2}
    r8_rows = [{"model": "minilm", "dataset": "r8", "learnt": False, "plateaued": True, "pilot": {**pilot, **p}}
               for p in ({"learnt": ["lt_prefix"]}, {"learnt": [], "score": 0.6})]
    r8_diff = [{"model": "minilm", "dataset": "r8", "diff": 0.0, "excludes_zero": False, "better": None}]
    said = ["\n".join(study_report.verdict(SPEC, r8_diff, [], [], {}, [row])) for row in r8_rows]
    assert ("leave them out; but in minilm/r8's pilot LT-prefix learns (best: LT-prefix accuracy 0.900 vs chance 0.500 on 40 "
            "held-out train texts at 30 steps, default learning rates): its budget may be what holds it at chance.") in said[0]
    assert ("leave them out; in minilm/r8's pilot no method learns either (best of 2 runs: LT-prefix accuracy 0.600 vs "
            "chance 0.500 on 40 held-out train texts at 30 steps, default learning rates): a longer budget did not lift it.") in said[1]
    at_chance = [{"model": "minilm", "dataset": "r8", "learnt": False, "plateaued": True}]
    only_r8 = [{"model": "minilm", "dataset": "r8", "diff": 0.0, "excludes_zero": False, "better": None}]
    assert ("on minilm (encoder): **not testable here**: in every comparison neither method beats chance (see "
            "Learning).") in "\n".join(study_report.verdict(SPEC, only_r8, [], [], {}, at_chance))
    assert [study_report._judgement(*a) for a in ((2, 0, 2), (0, 2, 2), (1, 1, 3), (1, 5, 7), (3, 1, 4), (0, 1, 2),
                                                  (0, 0, 2))] == [
        "**supported**", "**contradicted**", "**mixed** (1 for, 1 against, of 3)",
        "**mixed**, mostly against it (1 for, 5 against, of 7)", "**mixed**, mostly for it (3 for, 1 against, of 4)",
        "**partly contradicted** (1 of 2)", "**not supported**, no difference resolved"]
    for line in block.splitlines():
        if line.startswith("- "):
            assert line in text.splitlines()
    assert "| tune | 12 / 12 | 0.0 |" in text and "| final | 10 / 10 |" in text and "| pilot | 1 / 2 |" in text
    assert "the study's step budget per cell: minilm/sst2 10, minilm/r8 10." in text
    longer = {**SPEC, "models": {"minilm": ["train.max_steps=20"]}, "cell_overrides": {"minilm/r8": ["train.max_steps=30"]}}
    assert study_report._budget_text(longer) == "minilm/sst2 20, minilm/r8 30"
    assert ("minilm / sst2, accuracy (40 held-out texts; always answering the majority class: accuracy 0.500, MCC 0):"
            "\n\n| method | 5 | 10 |\n"
            "|---|---|---|\n| prefix | 0.500 | 0.600 |\n") in text
    assert "| ablate | 3 / 3 |" in text and "| superseded |" not in text
    assert "| minilm | sst2 | prefix | 2 (edge) | 10 | 0.800 |  | 4 / 4 |" in text
    assert ("- Equal tuning: 4 of 4 tuned choices lie at an edge of the learning-rate scales tried, the grid's "
            "extensions included (minilm/r8/lt_prefix, minilm/r8/prefix, minilm/sst2/lt_prefix, minilm/sst2/prefix)") in text
    # Table 1, wide per model: sst2 prefix seeds 0, 1 -> 24, 25 right of 40; lt_prefix 36, 35
    assert "| prefix | 0.613 ± 0.018 (n=2) | 0.625 ± 0.025 (n=3) |" in text
    assert "| LT-prefix | 0.887 ± 0.018 (n=2) | 0.625 ± 0.025 (n=3) |" in text
    assert "Scored examples: sst2 40, r8 40." in text
    assert ("| minilm | sst2 | LT-prefix | accuracy 0.887 | 0.500 | yes (threshold 0.658) | 0.700 at 5, 0.887 at 10 | +0.188 over the last 5 "
            "steps | no |") in text
    assert ("| minilm | r8 | prefix | accuracy 0.625 | 0.500 | no (threshold 0.658) | 0.500 at 5, 0.625 at 10 | +0.125 over the last 5 steps "
            "| no |") in text
    assert ("- Budget: the best method had not plateaued within its step budget in 2 of 2 cells (minilm/sst2 at 10, "
            "minilm/r8 at 10 steps: its accuracy moved by more than 0.02 over its last evaluations)") in text
    # the other methods still moving at the budget's end: named below the table and in the verdict
    moving = ("minilm/sst2 prefix (0.500 → 0.613, +0.113 over the last 5 steps); minilm/r8 LT-prefix (0.500 → 0.625, "
              "+0.125 over the last 5 steps)")
    assert f"Other methods whose seed-mean accuracy there moved by more than 0.02 over their last three evaluations: {moving}." in text
    assert f"- Budget, the other methods: 2 method x cells still moved by more than 0.02 over the last evaluations ({moving})" in block
    assert 0.1 - 0.08 > 0.02 and not study_report._moved(0.1 - 0.08) and study_report._moved(0.0201)  # equal, not "more"
    monkeypatch.setattr(study_report, "PLATEAU_TOLERANCE", 0.15)
    study_report.write_results(SPEC, md, csv, figures=False)
    looser = md.read_text()
    assert "Other methods whose" not in looser and "Budget, the other methods" not in looser
    assert "| no (threshold 0.658) | 0.500 at 5, 0.625 at 10 | +0.125 over the last 5 steps | yes |" in looser
    assert "in 1 of 2 cells (minilm/sst2 at 10 steps: its accuracy moved by more than 0.15" in looser
    monkeypatch.setattr(study_report, "PLATEAU_TOLERANCE", 0.02)
    study_report.write_results(SPEC, md, csv, readme=readme)
    # r8 gets a pilot run: the report reads it
    with_r8 = {**SPEC, "pilot": {**SPEC["pilot"], "cells": ["minilm/sst2", "minilm/r8"]}}
    _finish(next(j for j in study.pilot_jobs(with_r8) if j.dataset == "r8"), root, 0.6, preds=preds(24))
    study_report.write_results(with_r8, md, csv, figures=False)
    assert ("leave them out; in minilm/r8's pilot no method learns either (best of 1 run: prefix accuracy 0.600 vs chance 0.500 on 40 "
            "held-out train texts at 10 steps, default learning rates)") in md.read_text()
    assert "| base LMs | cola BERT |" in text and "| LT-prefix | 0.812 | 0.803 | 0.840 |" in text  # the paper's
    assert "| minilm | sst2 | accuracy | +0.275 [" in text and "] * (n=2) |" in text
    assert "| minilm | r8 | accuracy | +0.000 [" in text
    assert "| minilm | sst2 | accuracy | LT-prefix vs prefix | 0.613 | 10 | 5 |" in text
    assert "| minilm | r8 | LT-prefix | label texts \"label zero\", \"label one\", ... | 0.300 (n=1) | 0.625 ± 0.025 (n=3) | -0.300 [" in text
    assert ("L-Tuning ahead with an interval excluding 0 in 1, behind in 0, not distinguishable from its baseline in 0 "
            "of 1 model x dataset x pair comparisons") in text
    assert "| minilm | r8 | accuracy | LT-prefix vs prefix | 0.625 | 10 | 10 |" in text
    assert ("To the level both reach (the lower of the two final scores), L-Tuning gets earlier in 1, later in 0, "
            "at the same step in 1 of 2 pairs; to its baseline's final score, earlier in 1, later (or never) in 0, "
            "at the same step in 1.") in text
    assert "| minilm | sst2 | accuracy | LT-prefix vs prefix | 0.613 | 10 | 5 | 0.613 | 10 | 5 |" in text
    # the label-text ablations name what they resolve and bound what they do not: meaningless labels
    # cost 0.3 on r8; rotated ones nothing, and their interval's lower end bounds the gain not ruled out
    assert ("- Label semantics (label texts \"label zero\", \"label one\", ...): lower than with the real label texts "
            "with an interval excluding 0 in 1 (minilm/r8 LT-prefix -0.300 [") in text
    assert ("] *), higher in 0, not distinguishable in 0 of 1 method x cell comparisons; where lower, the real label's "
            "meaning is what helps.\n") in text
    # one ablation seed against r8's 3 final seeds: the difference says it pairs 1
    swapped = re.search(r"\| label texts rotated between classes \| .* \| -0\.050 \[-(0\.\d+), \+0\.\d+\] \(n=1 paired\) \|",
                        text)
    assert "`n=k paired`: the ablation and the final stage ran different seeds" in text
    assert ("- Label semantics (label texts rotated between classes): lower than with the real label texts with an "
            "interval excluding 0 in 0, higher in 0, not distinguishable in 1 of 1 method x cell comparisons; where not "
            f"distinguishable, no gain from the label's meaning shows, though gains up to {swapped[1]} are not ruled "
            "out by the intervals.\n") in text
    assert ("- The framing alone (a baseline scoring (text, label) pairs with random per-label tokens instead of its "
            "K-way head): lower with an interval excluding 0 in 0, higher in 0, not distinguishable in 1 of 1 method x "
            "cell comparisons; the label text within that framing (L-Tuning against its baseline framed the same way, "
            "each at its own tuned values): L-Tuning lower with an interval excluding 0 in 0, higher in 0, not "
            "distinguishable in 1 of 1 method x cell comparisons.\n") in text
    # ... and its table: L-Tuning's final runs against the framed baseline (1 ablation seed of r8's 3)
    assert "### The label text within the pair framing" in text
    assert re.search(r"\| minilm \| r8 \| LT-prefix \| 0\.625 ± 0\.025 \(n=3\) \| prefix \| 0\.\d+ \(n=1\) \| "
                     r"[+-]0\.\d+ \[[+-]0\.\d+, [+-]0\.\d+\] \(n=1 paired\) \|", text)
    point = {"model": "minilm", "dataset": "r8", "method": "lt_prefix", "diff": 0.0, "lo": 0.0, "hi": 0.0,
             "excludes_zero": False}
    assert study_report.label_semantics_note("labels_swapped", [point]).endswith(
        "where not distinguishable, no gain from the label's meaning shows (the intervals rule out any).")
    wide = [{**point, "lo": -0.02, "hi": 0.03}, {**point, "method": "lt_prompt", "lo": -0.07, "hi": 0.01}]
    assert study_report.label_semantics_note("labels_swapped", wide).endswith("gains up to 0.070 are not ruled out by the intervals.")
    # the warm start: named where it resolves, and only then read as what the paper's unspecified start costs
    cold = [{**point, "ablation": "warm_start_off", "dataset": "sst2", "diff": -0.336, "lo": -0.369, "hi": -0.302,
             "excludes_zero": True}, {**point, "ablation": "warm_start_off", "dataset": "sst2", "method": "lt_prompt",
                                      "lo": -0.02, "hi": 0.03}, {**point, "ablation": "labels_swapped", "diff": -0.5,
                                                                 "lo": -0.6, "hi": -0.4, "excludes_zero": True}]
    assert study_report.warm_start_note(cold) == (
        "- The label warm start (method.init_from_label, ltune's default; the paper does not say how its maps start, "
        "docs/methods.md): without it, lower with an interval excluding 0 in 1 (minilm/sst2 LT-prefix -0.336 [-0.369, "
        "-0.302] *), higher in 0, not distinguishable in 1 of 2 method x cell comparisons; where lower, the L-Tuning "
        "scores above owe that much to ltune's start: started as the paper leaves it, L-Tuning scores lower (at the "
        "learning rates tuned with the warm start, not retuned without it).")
    assert study_report.warm_start_note(cold[1:]).endswith("not distinguishable in 1 of 1 method x cell comparisons.")
    assert study_report.warm_start_note(cold[2:]) is None
    assert "![t_curves_minilm.png](results/t_curves_minilm.png)" in text  # beside the CSV, linked relatively
    assert (tmp_path / "results" / "t_curves_minilm.png").stat().st_size > 10_000
    figures = {p.name: p.read_bytes() for p in (tmp_path / "results").glob("t_curves_*")}
    before = block
    # regenerated: the same bytes, figures included (the r8 pilot run, out of SPEC's pilot, is dropped on purpose)
    study_report.write_results(SPEC, md, csv, readme=readme, drop_missing=True)
    assert readme.read_text() == before
    assert md.read_text() == text and {p.name: p.read_bytes() for p in (tmp_path / "results").glob("t_curves_*")} == figures
    # the figure's panels in the plan's dataset order, as the tables (sst2 before r8), not by name
    from ltune_cli.report import plots
    drawn, draw = [], plots.plot_curves
    monkeypatch.setattr(plots, "plot_curves", lambda *a, **k: drawn.append(draw(*a, **k)))
    study_report.write_figures(SPEC, study_report.load_stage_runs(SPEC, study_report._with_columns(study.runs_table(SPEC)), "final"),
                               tmp_path / "results")
    assert [ax.get_title() for ax in drawn[0].axes if ax.get_title()] == ["sst2", "r8"]
    monkeypatch.setattr(plots, "plot_curves", draw)
    # a model whose final runs have all left the study (a changed budget): its old figure goes too
    assert study_report.write_figures(SPEC, {}, tmp_path / "results") == []
    assert not list((tmp_path / "results").glob("t_curves_*"))
    rows = csv.read_text().splitlines()
    assert "not distinguishable in 1 of 1 method x cell comparisons" in text  # pair framing = K-way here
    assert len(rows) == 1 + 1 + 12 + 10 + 3 and "pilot/minilm-sst2/prefix/s0" in rows[1] and "tune/minilm-sst2/prefix/" in rows[2] and str(tmp_path) not in csv.read_text()
    # runs a budget change took out of the study, moved under superseded/: counted in the CPU total only
    old = study.final_jobs(SPEC, study.choose(SPEC, root))[0]
    moved = root / "superseded" / "budget-10" / old.folder(root).relative_to(root)  # superseded/<change>/<run_dir>
    moved.parent.mkdir(parents=True)
    old.folder(root).rename(moved)  # (a run folder gone from the outputs otherwise: see the test below)
    assert "10 of 10 final runs completed so far, 0.0 CPU hours in all stages." in readme.read_text()
    study_report.write_results(SPEC, md, csv, figures=False, readme=readme)
    assert "| final | 9 / 10 |" in md.read_text() and "| superseded | 1 | 0.0 |" in md.read_text()
    # the README's total counts them too (2 s each here)
    assert "9 of 10 final runs completed so far, 0.0 CPU hours in all (0.0 of them on 1 run a plan change superseded)." in readme.read_text()
    assert study_report.superseded(SPEC) == (1, pytest.approx(2.0 / 3600))
    # the pilot's table names methods as every other table does (the paper's names)
    _finish(study.pilot_jobs(SPEC)[1], root, 0.7, preds=preds(28), curve=[(5, 0.6)])
    study_report.write_results(SPEC, md, csv, figures=False)
    assert "\n| LT-prefix | 0.600 | 0.700 |\n" in md.read_text()


def test_a_readme_without_its_markers_stops_results_before_anything_is_written(tmp_path, monkeypatch):
    from ltune_cli import study_report

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "out"))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{study_report.README_END}\n{study_report.README_BEGIN}\n")  # in the wrong order
    for path in (readme, tmp_path / "missing.md"):
        with pytest.raises(LtuneError, match=f"{path}: .*needs one line .*drop results.readme from the plan"):
            study_report.write_results(SPEC, tmp_path / "RESULTS.md", tmp_path / "runs.csv", readme=path)
    assert not (tmp_path / "RESULTS.md").exists() and not (tmp_path / "runs.csv").exists()


def test_curves_and_steps_to_target_score_one_set_of_texts():
    """Curve points score the first curve_eval_limit dev texts, the last step all of them: curves,
    the plateau check and steps to target read the last step on those same texts (its curve_*
    scores, or for older runs the accuracy from predictions.json), target included."""
    from pathlib import Path

    from ltune_cli import study_report
    from ltune_cli.report.load import Run

    def run(method, subset_acc, full_acc, pred, curve=None):
        last = {"step": 10, "accuracy": full_acc, "val_loss": 0.5}
        if curve is not None:
            last.update({"curve_accuracy": curve, "curve_val_loss": 0.25, "curve_eval_examples": 4})
        return Run(path=Path(method), name=method, method=method, variant="", model="minilm", dataset="sst2", seed=0,
                   status="completed", error=None, primary_metric="accuracy", final={"accuracy": full_acc},
                   eval_examples=6, trainable_params=1, total_params=2, created="",
                   evals=[{"step": 5, "accuracy": subset_acc, "val_loss": 0.75, "eval_examples": 4}, last],
                   predictions={"gold": [0, 1, 0, 1, 0, 1], "pred": pred})

    base = run("prefix", 0.5, 4 / 6, [0, 1, 1, 1, 0, 0])  # older run: 3 of its first 4 right, from predictions
    lt = run("lt_prefix", 0.75, 5 / 6, [0, 1, 0, 1, 1, 1], curve=1.0)  # records its curve_* scores
    assert [e.get("accuracy") for e in base.curve()] == [0.5, 0.75] and base.curve()[-1].get("val_loss") is None
    assert lt.curve()[-1] == {"kind": "eval", "step": 10, "accuracy": 1.0, "val_loss": 0.25, "eval_examples": 4}
    assert base.final["accuracy"] == 4 / 6 and base.evals[-1]["accuracy"] == 4 / 6  # the run itself is unchanged
    final = {("minilm", "sst2", "prefix"): [base], ("minilm", "sst2", "lt_prefix"): [lt]}
    (row,) = study_report.steps_to_target(SPEC, final)
    # the target: the baseline's 0.75 on the curve's 4 texts, not its full-dev 0.667
    assert (row["target"], row["lt_steps"], row["baseline_steps"]) == (0.75, 5, 10)
    # L-Tuning ending lower (0.72 vs 0.75) but above that level from step 5: never at the baseline's
    # final accuracy, first at the level both reach
    slow_end = run("lt_prefix", 0.74, 4 / 6, [0, 1, 0, 1, 1, 1], curve=0.72)
    (row,) = study_report.steps_to_target(SPEC, {**final, ("minilm", "sst2", "lt_prefix"): [slow_end]})
    assert (row["target"], row["lt_steps"], row["baseline_steps"]) == (0.75, None, 10)
    assert (row["common_target"], row["lt_steps_common"], row["baseline_steps_common"]) == (0.72, 5, 10)
    assert row["trivial"] is False
    # ending at 0.5 on texts half of one label: no better than the majority class, nothing to race to
    chance = run("lt_prefix", 0.25, 3 / 6, [0, 0, 0, 0, 0, 0], curve=0.5)
    (row,) = study_report.steps_to_target(SPEC, {**final, ("minilm", "sst2", "lt_prefix"): [chance]})
    assert (row["common_target"], row["trivial"]) == (0.5, True)
    assert "not testable here (1 pair left out: neither method ends above chance)." \
        in "\n".join(study_report.verdict(SPEC, [{"model": "minilm", "dataset": "sst2", "diff": 0.0, "excludes_zero": False,
                                                   "better": None}], [row], [], {}))
    curves = {c["method"]: (c["accuracy"], c["val_loss"]) for c in study_report.curve_records(SPEC, final)}
    assert curves == {"prefix": ([0.5, 0.75], [0.75]), "lt_prefix": ([0.75, 1.0], [0.75, 0.25])}
    base.evals[0].pop("eval_examples")  # every point scored all texts: the run as logged
    assert base.curve() is base.evals and base.curve_final("accuracy") == 4 / 6


def test_learning_and_the_race_are_judged_on_the_primary_metric(monkeypatch):
    """CoLA (primary metric MCC, 69% one label): MCC 0.23 on its 1043 dev texts is learning (chance 0,
    margin 2/sqrt(1043) = 0.062) though its accuracy is only 0.005 above always answering the
    majority class; the steps to target race on MCC, and a pair ending at MCC 0 has nothing to race to."""
    from pathlib import Path

    from ltune_cli import study_report
    from ltune_cli.report.load import Run

    gold = [1] * 721 + [0] * 322  # CoLA dev's shares

    def run(method, final, curve=()):
        return Run(path=Path(method), name=method, method=method, variant="", model="minilm", dataset="cola", seed=0,
                   status="completed", error=None, primary_metric="mcc", final=final, eval_examples=len(gold),
                   trainable_params=1, total_params=2, created="",
                   evals=[*({"step": st, "mcc": v, "accuracy": 0.69} for st, v in curve), {"step": 30, **final}],
                   predictions={"gold": gold, "pred": gold})

    learnt = run("prefix", {"mcc": 0.23, "accuracy": 0.696}, curve=[(10, 0.0), (20, 0.2)])
    mcc, acc = study_report.chance_check([learnt], "mcc"), study_report.chance_check([learnt], "accuracy")
    assert mcc == {"metric": "mcc", "score": 0.23, "chance": 0.0, "margin": pytest.approx(2 / math.sqrt(1043)),
                   "learnt": True}
    assert acc["chance"] == pytest.approx(721 / 1043) and acc["learnt"] is False  # accuracy would call it chance
    assert study_report.chance_check([run("prefix", {"mcc": 0.05, "accuracy": 0.69})], "mcc")["learnt"] is False
    cola = {**SPEC, "cells": {"minilm": ["cola"]}}
    lt = run("lt_prefix", {"mcc": 0.18, "accuracy": 0.70}, curve=[(10, 0.0), (20, 0.19)])
    final = {("minilm", "cola", "prefix"): [learnt], ("minilm", "cola", "lt_prefix"): [lt]}
    (row,) = study_report.steps_to_target(cola, final)
    assert (row["metric"], row["common_target"], row["lt_steps_common"], row["baseline_steps_common"]) == (
        "mcc", 0.18, 20, 20) and row["trivial"] is False
    (plateau,) = study_report.plateau_rows(cola, final)
    assert (plateau["method"], plateau["metric"], plateau["learnt"]) == ("prefix", "mcc", True)
    # the convergence figure's lower panel: CoLA's MCC curve (accuracy stays in the record)
    curves = {c["method"]: c for c in study_report.curve_records(cola, final)}
    assert curves["prefix"]["score_key"] == "mcc" and curves["prefix"]["score"] == [0.0, 0.2, 0.23]
    assert curves["lt_prefix"]["score_steps"] == [10, 20, 30] and curves["prefix"]["accuracy"][-1] == 0.696
    flat = run("lt_prefix", {"mcc": 0.0, "accuracy": 0.691}, curve=[(10, 0.0), (20, 0.0)])
    (row,) = study_report.steps_to_target(cola, {**final, ("minilm", "cola", "lt_prefix"): [flat]})
    assert (row["common_target"], row["trivial"]) == (0.0, True)
    # a comparison where neither method of the pair beats chance tests nothing: left out of the scores
    both_flat = {("minilm", "cola", "prefix"): [run("prefix", {"mcc": 0.05, "accuracy": 0.69})],
                 ("minilm", "cola", "lt_prefix"): [flat]}
    assert [d["at_chance"] for d in study_report.differences(cola, final)] == [False]
    one_learns = {**final, ("minilm", "cola", "lt_prefix"): [flat]}  # the baseline learns: that is evidence
    assert [d["at_chance"] for d in study_report.differences(cola, one_learns)] == [False]
    (d,) = study_report.differences(cola, both_flat)
    assert d["at_chance"] is True
    plateau_rows = [{**plateau, "learnt": True}]  # the cell learns (another method, say)
    said = "\n".join(study_report.verdict(cola, [{**d, "at_chance": False, "diff": 0.1, "excludes_zero": True,
                                                   "better": True}, d], [], [], {}, plateau_rows))
    assert ("**supported**. L-Tuning ahead with an interval excluding 0 in 1, behind in 0, not distinguishable from its "
            "baseline in 0 of 1 model x dataset x pair comparisons (MCC on cola; 1 more, where "
            "neither method of the pair beats chance, left out: see Learning)") in said
    assert "MCC on cola; 1 more, where neither method of the pair beats chance, left out: see " \
        "Learning); mean difference, per metric: MCC +0.100 over 1." in said
    sst2 = [{**d, "dataset": "sst2", "diff": -0.02, "excludes_zero": False, "better": None, "at_chance": False}]
    two = "\n".join(study_report.verdict(cola, [{**d, "at_chance": False, "diff": 0.1, "excludes_zero": True,
                                                 "better": True}, *sst2], [], [], {}, plateau_rows))
    assert "mean difference, per metric: accuracy -0.020 over 1; MCC +0.100 over 1." in two  # never one mean of both
    assert "1 of 2 model x dataset x pair comparisons (MCC on cola, accuracy elsewhere); mean" in two
    assert ("- Learning, per pair: in 1 comparison in cells where a method learns, neither method of the pair beats "
            "chance (minilm/cola LT-prefix vs prefix); the score judgements leave it out too.") in said
    # the pilot's judgement too (its held-out texts, here the same shares)
    monkeypatch.setattr(study_report, "load_stage_runs", lambda spec, table, stage: {
        ("minilm", "cola", "prefix"): [learnt], ("minilm", "cola", "lt_prefix"): [flat]})
    assert study_report.pilot_learning(cola, None)[("minilm", "cola")] == {
        "steps": 30, "texts": 1043, "metric": "mcc", "chance": 0.0, "best": "prefix", "score": 0.23,
        "learnt": ["prefix"], "methods": 2}


@pytest.mark.parametrize("paper_warm, paper_cold, reading, at_chance", [
    (24, 24, "**capacity**: below per-token without either warm start (minilm/sst2 -0.250 [-0.375, -0.125] *, 2 "
     "seeds); its warm start does not lower it (the intervals rule that out).", "with its warm start 2 of 2 (minilm/sst2 seed 0: accuracy 0.600; minilm/sst2 "
     "seed 1: accuracy 0.600), without it 2 of 2 (minilm/sst2 seed 0: accuracy 0.600; minilm/sst2 seed 1: "
     "accuracy 0.600)."),
    # one seed of the warm-started A.5 collapses to chance, the other does better than without: not resolved
    ((20, 32), 28, "**capacity**: below per-token without either warm start (minilm/sst2 -0.150 [-0.275, -0.050] *, "
     "2 seeds); whether its warm start lowers it further is not resolved (minilm/sst2 -0.050 [-0.275, +0.150]).",
     "with its warm start 1 of 2 (minilm/sst2 seed 0: accuracy 0.500), without it 0 of 2."),
    (20, 34, "**its warm start**: without one it is not below per-token (minilm/sst2 +0.000 [+0.000, +0.000], 2 "
     "seeds), and the warm start lowers it (minilm/sst2 -0.350 [-0.500, -0.200] *, 2 seeds).", None),
    (20, 28, "**both**: below per-token without either warm start (minilm/sst2 -0.150 [-0.275, -0.050] *, 2 seeds), "
     "and its warm start lowers it further (minilm/sst2 -0.200 [-0.325, -0.075] *, 2 seeds).", None),
    (34, 34, "**not resolved** by these runs (no difference resolved, or the cells disagree: minilm/sst2: capacity "
     "+0.000 [+0.000, +0.000], warm start +0.000 [+0.000, +0.000]).", ""),
    # without a warm start A.5 is *above* per-token: said as such, not folded into "not below"
    (38, 38, "neither warm-started in 0, above it in 1 of 1; its own warm start raises it in 0, lowers it in 0 of 1: "
     "**not resolved** by these runs (no difference resolved, or the cells disagree: minilm/sst2: capacity +0.100 "
     "[+0.025, +0.200] *, warm start +0.000 [+0.000, +0.000]).", "")])
def test_the_a5_contrasts_tell_capacity_from_warm_start(tmp_path, monkeypatch, paper_warm, paper_cold, reading,
                                                        at_chance):
    """RESULTS.md's A.5 section and verdict: A.5 without its warm start against per_token without one
    (capacity), A.5 with its warm start against without (the start); the reading follows the runs, and
    names the seeds that end at chance on their own (a mean over seeds hides a collapse). Right of 40
    (chance: 20, learnt above 26.3): per_token with its warm start 36, without 34; A.5 with `paper_warm`
    (per seed, if a pair), without `paper_cold`. at_chance: the bullet's text on those seeds; "": none
    said; None: not checked."""
    from ltune_cli import study_report

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "out"))
    spec = {**SPEC, "cells": {"minilm": ["sst2"]},
            "ablate": {"cells": ["minilm/sst2"], "seeds": 2,
                       "variants": {"variant_paper": ["lt_prefix"], "warm_start_off": ["lt_prefix"],
                                    "variant_paper_warm_start_off": ["lt_prefix"]}}}
    root = study.root_of(spec)
    for j in study.tune_jobs(spec):
        _finish(j, root, 0.6)
    right = {None: 36, "warm_start_off": 34, "variant_paper": paper_warm, "variant_paper_warm_start_off": paper_cold}
    chosen = study.choose(spec, root)
    for j in [*study.final_jobs(spec, chosen), *study.ablate_jobs(spec, chosen)]:
        seed = int(j.tag.rsplit("s", 1)[1])
        n = right[j.values.get("ablation")] if j.method == "lt_prefix" else 30
        n = n[seed] if isinstance(n, tuple) else n
        _finish(j, root, n / 40, seed=seed, preds=[g if i < n else 1 - g for i, g in enumerate(GOLD)])
    cold = study.ablate_jobs(spec, chosen)[-1]
    assert cold.values["ablation"] == "variant_paper_warm_start_off"
    assert {"method.variant=paper", "method.init_from_label=false"} <= set(cold.overrides)
    md = tmp_path / "RESULTS.md"
    study_report.write_results(spec, md, tmp_path / "runs.csv", figures=False)
    text = md.read_text()
    assert "### The A.5 variant: capacity or warm start?" in text
    gap = f"{(paper_cold - 34) / 40:+.3f}"
    assert (f"| minilm | sst2 | capacity | A.5 pooling variant, warm start off: {paper_cold / 40:.3f} ± 0.000 (n=2) | "
            f"warm start off (init_from_label=false) | 0.850 ± 0.000 (n=2) | {gap} [") in text
    assert "Provisional" not in text  # every planned final and ablation run has completed
    bullet = next(line for line in text.splitlines() if line.startswith("- The A.5 pooling variant"))
    assert bullet.startswith("- The A.5 pooling variant, weak by capacity or by its warm start? below per-token, "
                             "both warm-started, with an interval excluding 0 in ")
    assert reading in bullet
    said = "Runs of the A.5 variant ending at chance on their own (no better than ignoring the text): "
    if at_chance == "":
        assert said not in bullet
    elif at_chance is not None:
        assert bullet.endswith(said + at_chance)


def test_a_verdict_with_runs_still_to_come_says_so_and_names_them(tmp_path, monkeypatch):
    """While final or ablation runs are missing, the verdict opens by naming the cells still to come
    (RESULTS.md and the README quote it), so no judgement reads as the study's last word."""
    from ltune_cli import study_report

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "out"))
    root = study.root_of(SPEC)
    for j in study.tune_jobs(SPEC):
        _finish(j, root, 0.6)
    chosen = study.choose(SPEC, root)
    finals = study.final_jobs(SPEC, chosen)  # sst2: 2 seeds x 2 methods; r8: 3 x 2
    for j in finals:
        if j.dataset == "sst2" or j.tag.endswith("s0"):
            _finish(j, root, 0.8 if j.method == "prefix" else 0.7, seed=int(j.tag.rsplit("s", 1)[1]),
                    preds=[g if i < (32 if j.method == "prefix" else 28) else 1 - g for i, g in enumerate(GOLD)])
    ablations = study.ablate_jobs(SPEC, chosen)  # minilm/r8: 3 variants, 1 seed
    _finish(ablations[0], root, 0.7, preds=GOLD)
    md = tmp_path / "RESULTS.md"
    study_report.write_results(SPEC, md, tmp_path / "runs.csv", figures=False)
    lines = md.read_text().splitlines()
    first = lines[lines.index("## Verdict") + 2]
    assert first == ("- Provisional: the study is still running (completed so far: final runs minilm/r8 2 of 6; "
                     "ablation runs minilm/r8 1 of 3); each judgement below covers the runs completed so far, and "
                     "the cells still to come can change it.")
    for j in finals:  # the finals complete: only the ablations are named
        if not (j.dataset == "sst2" or j.tag.endswith("s0")):
            _finish(j, root, 0.8, seed=int(j.tag.rsplit("s", 1)[1]), preds=GOLD)
    study_report.write_results(SPEC, md, tmp_path / "runs.csv", figures=False)
    assert "(completed so far: ablation runs minilm/r8 1 of 3);" in md.read_text()


def test_ties_on_the_held_out_score_go_to_the_lower_validation_loss(tmp_path):
    """CoLA on MiniLM: every tune run at MCC 0 (the majority class); the lower held-out loss decides."""
    root = tmp_path / "study"
    for n, j in enumerate(study.tune_jobs(SPEC)):
        _finish(j, root, 0.0, val_loss=0.62 - (0.01 if j.values["lr_scale"] == 2.0 else 0) + n * 1e-4)
    chosen = study.choose(SPEC, root)
    assert all(v["lr_scale"] == 2.0 for v in chosen.values())
    assert chosen[("minilm", "sst2", "prefix")]["num_virtual_tokens"] == 5  # the lower loss of the two P
    assert chosen[("minilm", "sst2", "prefix")]["held_out_val_loss"] == pytest.approx(0.6102)


def test_results_before_any_run_completes(tmp_path, monkeypatch):
    from ltune_cli import study_report

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "out"))
    study_report.write_results(SPEC, tmp_path / "RESULTS.md", tmp_path / "runs.csv")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| tune | 0 / 12 | 0.0 |" in text and "| minilm | sst2 | prefix |  |  |  |  | 0 / 4 |" in text
    assert "| final | 0 / 10 | 0.0 |" in text and "No final run has completed yet" in text
    assert "Not yet: no final runs" in text



def test_a_completed_run_made_with_other_settings_is_an_error_not_a_result(tmp_path, monkeypatch):
    """The plan changed after a run completed: counting the run would mix two configurations."""
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path))
    root = study.root_of(SPEC)
    jobs = study.tune_jobs(SPEC)
    for j in jobs:
        _finish(j, root, 0.6)
    cfg = jobs[0].folder(root) / "config.yaml"
    text = cfg.read_text()
    # what a run records along the way (bookkeeping) and how YAML writes a number do not matter
    cfg.write_text(text.replace("lr: 0.005", "lr: 5.0e-03").replace("eval_every: 5", "eval_every: 7"))
    assert "eval_every: 7" in cfg.read_text() and "5.0e-03" in cfg.read_text()
    assert len(study.choose(SPEC, root)) == 4 and len(study.runs_table(SPEC)) == 12
    cfg.write_text(text.replace("max_steps: 10", "max_steps: 20"))
    for call in (lambda: study.choose(SPEC, root), lambda: study.runs_table(SPEC),
                 lambda: study.run_stage(SPEC, "tune", dry=True)):
        with pytest.raises(LtuneError, match=r"other settings.*train.max_steps: run has 20, plan says 10"):
            call()


def test_status_lists_a_stale_tune_run_instead_of_stopping(tmp_path, monkeypatch, capsys):
    """A stale tune run stops `run` / `results` (tested above) but `status` reports every stage,
    naming the folder to delete."""
    import yaml

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(SPEC))
    root = study.root_of(SPEC)
    jobs = study.tune_jobs(SPEC)
    for j in jobs:
        _finish(j, root, 0.6)
    cfg = jobs[0].folder(root) / "config.yaml"
    cfg.write_text(cfg.read_text().replace("max_steps: 10", "max_steps: 20"))
    assert study.main(["status", "--plan", str(plan)]) == 0
    out = capsys.readouterr().out
    assert f"tune: 11/12 runs completed; 1 more made with other settings than the plan's, to delete and rerun: " \
           f"{jobs[0].folder(root)}" in out
    assert "final: 0/" in out and "ablate: 0/" in out


def test_results_refuse_to_drop_runs_the_report_lists_or_to_report_part_of_the_plan(tmp_path, monkeypatch, capsys):
    """`study results` from an outputs folder missing runs the committed report lists (LTUNE_OUTPUTS
    elsewhere, a fresh clone's empty outputs) or with --models etc. would silently replace the whole
    report with part of it: one line, exit 2, nothing written. Was: RESULTS.md, its CSV, figures and
    README's block rewritten from nothing."""
    import yaml

    from ltune_cli import study_report

    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "out"))
    root = study.root_of(SPEC)
    runs = [j for j in study.tune_jobs(SPEC)]
    for j in runs:
        _finish(j, root, 0.6)
    md, csv = tmp_path / "RESULTS.md", tmp_path / "runs.csv"
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**SPEC, "results": {"md": str(md), "csv": str(csv)}}))
    assert study.main(["results", "--plan", str(plan)]) == 0
    written = md.read_text(), csv.read_text()
    import shutil

    shutil.rmtree(runs[0].folder(root))  # a run the report lists is gone from the outputs
    assert study.main(["results", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {csv} lists 1 runs that are not completed runs of the plan under {root} now "
                          f"(first: tune: {runs[0].folder(root).relative_to(root)}), and the report would drop them")
    assert "--drop-missing" in err and len(err.strip().splitlines()) == 1
    assert (md.read_text(), csv.read_text()) == written  # nothing written
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "elsewhere"))  # an empty outputs folder: all would go
    assert study.main(["results", "--plan", str(plan)]) == 2
    assert f"lists {len(runs)} runs" in capsys.readouterr().err and (md.read_text(), csv.read_text()) == written
    assert study.main(["results", "--plan", str(plan), "--models", "minilm"]) == 2
    assert capsys.readouterr().err.startswith("error: results reports the whole plan: --models choose what")
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "out"))
    assert study.main(["results", "--plan", str(plan), "--drop-missing"]) == 0  # moved out on purpose
    assert len(csv.read_text().splitlines()) == len(written[1].splitlines()) - 1
    study_report.write_results(SPEC, md, csv, figures=False)  # now the CSV and the outputs agree


@pytest.mark.parametrize("args, said", [
    (["run", "final", "--jobs", "0"], "error: --jobs 0: runs at a time must be 1 or more."),
    (["status", "--datasets", "r8", "--models", "minilm", "--methods", "prefix"], None),
    (["status", "--models", "smollm2_135m", "--datasets", "cola"], "no cell has model smollm2_135m and dataset cola"),
])
def test_study_options_that_select_nothing_are_refused(args, said, capsys):
    rc = study.main([*args, "--plan", "reproduce_cpu"])
    err = capsys.readouterr().err
    if said is None:
        assert rc == 0, err
    else:
        assert rc == 2 and said in err and len(err.strip().splitlines()) == 1, err


def test_a_model_and_dataset_that_make_no_cell_of_the_plan_are_refused():
    spec = {**SPEC, "cells": {"minilm": ["sst2"], "smollm2_135m": ["r8"]}}
    with pytest.raises(LtuneError, match=r"no cell has model smollm2_135m and dataset sst2 \(its cells: minilm: "
                                         r"sst2; smollm2_135m: r8\)"):
        study.only(spec, models="smollm2_135m", datasets="sst2")
    assert study.only(spec, models="smollm2_135m")["cells"] == {"smollm2_135m": ["r8"]}


def test_status_estimates_the_hours_left_from_the_completed_runs_most_alike(tmp_path):
    root = tmp_path / "study"
    spec = {**SPEC, "pilot": {"cells": []}}
    for j in study.tune_jobs(spec):
        _finish(j, root, 0.6)  # 2 s each
    assert study.hours_left(spec, root) == (pytest.approx((2 * 2 + 2 * 3 + 3) * 2.0 / 3600), {}, {})  # final + ablate
    final = study.final_jobs(spec, study.choose(spec, root))
    first = next(j for j in final if (j.dataset, j.method) == ("sst2", "prefix"))
    _finish(first, root, 0.6)
    res = json.loads((first.folder(root) / "results.json").read_text())
    (first.folder(root) / "results.json").write_text(json.dumps({**res, "wall_time_s": 3600.0}))
    # the other sst2 prefix final run: like the completed one, not like the tune runs
    assert study.hours_left(spec, root)[0] == pytest.approx(1.0 + (2 + 2 * 3 + 3) * 2.0 / 3600)
    lent = {**spec, "tune": {**spec["tune"], "borrow": {"minilm/r8": "minilm/sst2"}}}
    assert study.hours_left(lent, root)[1:] == ({"minilm/r8": 2 * 3 + 3}, {})  # no run of r8 at all
    # one r8 run going, half way (5 of 10 steps in 50 s): 10 s a step for the 9 r8 runs, its own half done
    base = study.hours_left(lent, root)[0]
    going = next(j for j in study.final_jobs(lent, study.choose(lent, root)) if j.dataset == "r8")
    going.folder(root).mkdir(parents=True)
    (going.folder(root) / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 5, "time_s": 50.0}) + "\n")
    hours, unknown, from_going = study.hours_left(lent, root)
    assert (unknown, from_going) == ({}, {"minilm/r8": 9})
    assert hours == pytest.approx(base + (0.5 * 100 + 8 * 100) / 3600)
    # the other sst2 prefix final run (1 h like the completed one) half way: half an hour left of it
    other = next(j for j in study.final_jobs(lent, study.choose(lent, root))
                 if (j.dataset, j.method) == ("sst2", "prefix") and j.folder(root) != first.folder(root))
    other.folder(root).mkdir(parents=True)
    (other.folder(root) / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 5, "time_s": 9.0}) + "\n")
    assert study.hours_left(lent, root)[0] == pytest.approx(hours - 0.5)
    assert study.left_text(hours, unknown, from_going).endswith(
        "less its share of steps done; minilm/r8: 9 with none completed yet: the seconds per step of the runs going)")
    assert study.left_text(1.25, {}).startswith("left: about 1.2 CPU hours (each run")
    assert study.left_text(1.25, {"minilm/r8": 9}).endswith("; not counted, 9 runs with none like them yet (minilm/r8: 9)")
    assert study.left_text(0.0, {"minilm/r8": 9}) == ("left: no estimate yet; 9 runs to complete, with none like them "
                                                      "completed (minilm/r8: 9)")  # not "about 0.0 hours"
    assert study.left_text(0.0, {}) == "left: nothing; every planned run has completed"


def test_borrowed_cells_take_the_source_cells_choice_and_run_no_grid(tmp_path):
    spec = {**SPEC, "tune": {**SPEC["tune"], "borrow": {"minilm/r8": "minilm/sst2"}}}
    assert {j.dataset for j in study.tune_jobs(spec)} == {"sst2"}
    root = tmp_path / "study"
    for j in study.tune_jobs(spec):
        _finish(j, root, 0.9 if j.values["lr_scale"] == 2.0 else 0.6)
    chosen = study.choose(spec, root)
    assert chosen[("minilm", "r8", "lt_prefix")] == {**chosen[("minilm", "sst2", "lt_prefix")], "tuned_on": "minilm/sst2"}
    assert "tuned_on" not in chosen[("minilm", "sst2", "prefix")]
    part = study.only(spec, datasets="r8")  # the borrowed cell alone still finds its source's runs
    assert {j.dataset for j in study.jobs_for(part, "final", root)} == {"r8"}
    with pytest.raises(LtuneError, match="tune.borrow minilm/r8: minilm/cola"):
        study.tune_jobs({**spec, "tune": {**spec["tune"], "borrow": {"minilm/r8": "minilm/cola"}}})


def test_cell_overrides_and_decoder_rates_reach_only_their_runs():
    spec = {**SPEC, "cells": {"minilm": ["sst2"], "smollm2_135m": ["sst2"]}, "methods": ["lt_prefix"],
            "models": {"smollm2_135m": ["hardware.dtype=bf16"]},
            "cell_overrides": {"smollm2_135m/sst2": ["model.max_length=32"]}}
    jobs = {j.model: j for j in study.tune_jobs(spec) if j.values["lr_scale"] == 2.0}
    dec, enc = jobs["smollm2_135m"].overrides, jobs["minilm"].overrides
    assert "hardware.dtype=bf16" in dec and "model.max_length=32" in dec and "method.decoder_lr=2e-05" in dec
    assert not any(o.startswith(("hardware.dtype", "model.max_length", "method.decoder_lr")) for o in enc)


def test_the_gpu_plan_expands_to_valid_runs():
    """conf/study/reproduce_gpu.yaml (the verdict's GPU command): every stage expands, and one job
    per model composes into a checked config (no weights needed)."""
    from ltune_cli.config import compose

    spec = study.load_spec("reproduce_gpu")
    assert len(study.tune_jobs(spec)) == 5 * 3 * (6 + 6 + 3 + 3)
    assert len(study.planned_jobs(spec, "final")) == 5 * 4 * (3 + 3 + 5)
    assert len(study.planned_jobs(spec, "ablate")) == 3 * 10 * 3
    for model in spec["cells"]:
        job = next(j for j in study.tune_jobs(spec) if j.model == model and j.method == "lt_prefix")
        cfg = compose(job.overrides)
        assert cfg.model.name == model and cfg.train.max_steps == 1000
        decoder = any(o.startswith("method.decoder_lr=") for o in job.overrides)
        assert decoder == (model in ("falcon_7b", "bloom_7b1", "llama2_7b"))


def test_the_committed_results_are_what_make_results_writes_from_the_committed_runs(tmp_path, monkeypatch):
    """docs/RESULTS.md, the per-run CSV and README.md's results block, as committed, are exactly what
    `study results` writes from the committed run folders (no number typed or left stale by hand)."""
    import io
    import tarfile
    from pathlib import Path

    from ltune_cli import study_report

    root = Path(__file__).resolve().parents[1]
    plan = study.load_spec("reproduce_cpu")
    paths = [*map(str, study_report.outputs_of(plan)), plan["results"]["readme"]]
    try:
        tar = subprocess.run(["git", "-C", str(root), "archive", "HEAD", "outputs/study", *paths],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout with committed study runs")
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(tmp_path, filter="data")
    committed = {p: (tmp_path / p).read_text() for p in paths}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LTUNE_OUTPUTS", raising=False)
    assert study.main(["results"]) == 0
    for p in paths:
        assert (tmp_path / p).read_text() == committed[p], f"{p} is not what `make results` writes: run it and commit"


def test_the_label_text_within_the_pair_framing_is_l_tuning_against_the_framed_baseline():
    """label_in_framing: L-Tuning's final runs minus its own baseline's pair-framing ablation (same cell,
    paired by seed), never the K-way baseline's final runs and never the other pair's ablation."""
    from types import SimpleNamespace

    from ltune_cli import study_report

    def runs(*scores):
        return [SimpleNamespace(seed=s, final={"accuracy": x}, predictions=None) for s, x in enumerate(scores)]

    final = {("minilm", "r8", "lt_prefix"): runs(0.90, 0.92), ("minilm", "r8", "prefix"): runs(0.50, 0.50),
             ("minilm", "r8", "lt_prompt"): runs(0.70, 0.70), ("minilm", "r8", "prompt"): runs(0.10, 0.10)}
    abl = {("minilm", "r8", "prefix", "pair_framing"): runs(0.80, 0.80),
           ("minilm", "r8", "prompt", "pair_framing"): runs(0.60, 0.62, 0.64),
           ("minilm", "r8", "lt_prefix", "labels_swapped"): runs(0.0, 0.0)}
    rows = {r["method"]: r for r in study_report.label_in_framing(final, abl)}
    assert set(rows) == {"lt_prefix", "lt_prompt"}
    assert rows["lt_prefix"]["baseline"] == "prefix" and rows["lt_prefix"]["diff"] == pytest.approx(0.11)
    assert rows["lt_prompt"]["diff"] == pytest.approx(0.09) and rows["lt_prompt"]["unpaired_seeds"] == [2]
    table = "\n".join(study_report.framing_table(list(rows.values())))
    assert "| minilm | r8 | LT-prefix | 0.910 ± 0.014 (n=2) | prefix | 0.800 ± 0.000 (n=2) | +0.110 [" in table
    assert "(n=2 paired) |" in table and "`n=k paired`" in table
    assert study_report.label_in_framing({}, abl) == []  # no L-Tuning runs yet: nothing to pair
