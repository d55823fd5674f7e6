"""Run folders under real use: resume by any path to the folder (default out_dir included),
the README's ddp command without out_dir, one writer per folder, signals, stale temporaries
and file permissions (issue 10, items 1-5, 16, 17)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import tiny_overrides
from ltune_cli import checkpoint, engine, runfolder
from ltune_cli.config import compose, load_stored
from ltune_cli.errors import LtuneError

TIMING = {"time_s", "examples_per_s"}
RESUME = re.compile(r"`(ltune train --resume [^`]+)`")


def records(run):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runfolder.read_metrics(run)]


def cli(args, cwd, env=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "ltune_cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def without_out_dir(ov):
    return [o for o in ov if not o.startswith("out_dir=")]


def wait_for(pred, proc, timeout=180):
    t = time.time()
    while time.time() - t < timeout and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


STEPS = 40  # short: SIGSTOP (below) keeps a run from finishing before the test acts, however fast


def hit_mid_run(proc, sig):
    """Deliver `sig` while the run is certainly still training: stop it first (SIGSTOP), queue the
    signal, then let it continue (SIGCONT); it handles the signal at its next step."""
    proc.send_signal(signal.SIGSTOP)
    assert proc.poll() is None, "the run finished before the test could signal it"
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)


def test_any_path_to_the_folder_resumes_it(tmp_path, monkeypatch):
    """Default out_dir (stored as the resolved folder), relative, absolute, symlink, x/../run."""
    monkeypatch.setenv("LTUNE_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.chdir(tmp_path)
    run, resuming = runfolder.prepare_run_dir(compose([]))  # out_dir=null: a folder under LTUNE_OUTPUTS
    runfolder.release(run)
    assert not resuming and run.is_absolute() and run.parent == (tmp_path / "outputs").resolve()
    assert load_stored(run / "config.yaml").out_dir == str(run)
    (tmp_path / "link").symlink_to(run)
    (tmp_path / "x").mkdir()
    spellings = [str(run), os.path.relpath(run), str(tmp_path / "link"), "link",
                 f"x/../outputs/{run.name}", f"./outputs/{run.name}/"]
    for given in spellings:
        cfg = load_stored(run / "config.yaml")
        cfg.resume, cfg.out_dir = True, given
        got, resuming = runfolder.prepare_run_dir(cfg)
        runfolder.release(got)
        assert (got, resuming) == (run, True), given
    cfg = compose(["resume=true", f"out_dir={tmp_path}/link"])  # composed anew: out_dir given, stored resolved
    assert runfolder.prepare_run_dir(cfg) == (run, True)
    runfolder.release(run)
    cfg = compose(["resume=true", f"out_dir={tmp_path}/link", "seed=3"])  # but any real change is refused
    with pytest.raises(LtuneError, match=r"differs at seed;"):
        runfolder.prepare_run_dir(cfg)


def test_ctrl_c_then_the_printed_command_finishes_the_run(sentiment_files, tmp_path, tiny_bert_dir):
    """Ctrl-C a run with the default out_dir, run the command it printed, exactly, from elsewhere."""
    train, dev = sentiment_files
    outputs = tmp_path / "outputs"
    ov = without_out_dir(tiny_overrides(train, dev, None, steps=STEPS, **{"model.path": tiny_bert_dir,
                                                                           "train.checkpoint_every": 1}))
    proc = cli(["train", *ov], tmp_path, env={"LTUNE_OUTPUTS": "outputs"})  # relative, as users set it
    assert wait_for(lambda: any(checkpoint.list_checkpoints(r) for r in outputs.glob("*")), proc), "no checkpoint"
    hit_mid_run(proc, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    printed = RESUME.search(out)
    assert printed, out
    (run,) = outputs.iterdir()
    assert checkpoint.list_checkpoints(run) and not (run / "results.json").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = shlex.split(printed.group(1))
    assert argv[:3] == ["ltune", "train", "--resume"]
    resumed = cli(argv[1:], elsewhere, env={"LTUNE_OUTPUTS": "outputs"})
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert runfolder.read_results(run)["status"] == "completed"
    steps = [r["step"] for r in runfolder.read_metrics(run) if r["kind"] == "train"]
    assert steps == list(range(1, STEPS + 1)), "records lost or duplicated across the resume"
    assert not (elsewhere / "outputs").exists()  # resumed in place, no second folder


def test_readme_ddp_command_without_out_dir(sentiment_files, tmp_path, tiny_bert_dir):
    """`ltune train hardware=ddp hardware.nproc=2` (README) with the default out_dir: one folder."""
    train, dev = sentiment_files
    ov = without_out_dir(tiny_overrides(train, dev, None, steps=2, **{"model.path": tiny_bert_dir}))
    ov = [o for o in ov if not o.startswith("hardware=")]
    proc = cli(["train", "hardware=ddp", "hardware.nproc=2", "hardware.device=cpu", "hardware.num_threads=1",
                *ov], tmp_path, env={"LTUNE_OUTPUTS": str(tmp_path / "outputs")})
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    (run,) = (tmp_path / "outputs").iterdir()
    assert out.strip().splitlines()[-1] == f"run folder: {run}"
    res = runfolder.read_results(run)
    assert res["status"] == "completed" and res["distributed"]["world_size"] == 2
    assert not (run / runfolder.RunLock.NAME).exists()


def test_one_writer_per_run_folder(sentiment_files, tmp_path, tiny_bert_dir):
    """A second process resuming, or training into, a folder being written exits 2 naming the
    first; once the first is SIGKILLed (no clean-up at all) the folder resumes."""
    train, dev = sentiment_files
    run = tmp_path / "run"
    ov = tiny_overrides(train, dev, run, steps=STEPS, **{"model.path": tiny_bert_dir, "train.checkpoint_every": 1})
    first = cli(["train", *ov], tmp_path)
    try:
        assert wait_for(lambda: bool(checkpoint.list_checkpoints(run)), first), "no checkpoint"
        first.send_signal(signal.SIGSTOP)  # a stopped process keeps its lock; it cannot finish meanwhile
        assert first.poll() is None, "the run finished before the test could stop it"
        for args in (["train", "--resume", str(run)], ["train", *ov]):
            second = cli(args, tmp_path)
            out = second.communicate(timeout=300)[0]
            assert second.returncode == 2, out
            (line,) = [x for x in out.splitlines() if x.startswith("error:")]
            assert f"is being written by another ltune run (pid {first.pid} on " in line, line
            assert first.poll() is None, "the refused process stopped the first one"
        assert not (run / "results.json").exists() and len(runfolder.read_metrics(run)) > 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    resumed = cli(["train", "--resume", str(run)], tmp_path)  # SIGKILL released the lock: no clean-up needed
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert runfolder.read_results(run)["status"] == "completed"
    assert [r["step"] for r in runfolder.read_metrics(run) if r["kind"] == "train"] == list(range(1, STEPS + 1))


def test_lock_is_exclusive_and_released(tmp_path):
    a = runfolder.RunLock(tmp_path)
    a.acquire()
    b = runfolder.RunLock(tmp_path)
    with pytest.raises(LtuneError, match=f"pid {os.getpid()} on "):
        b.acquire()
    a.release()
    assert not (tmp_path / runfolder.RunLock.NAME).exists()
    b.acquire()
    b.release()


def test_held_by_names_the_holder_and_only_looks(tmp_path):
    """`study run` asks who writes a folder before cleaning or resuming it: asking must neither
    take the lock, nor create the lock file, nor remove the holder's."""
    probe = runfolder.RunLock(tmp_path)
    assert probe.held_by() is None and not (tmp_path / runfolder.RunLock.NAME).exists()
    holder = runfolder.RunLock(tmp_path)
    holder.acquire()
    try:
        assert probe.held_by().startswith(f"pid {os.getpid()} on ")
        assert probe.held_by().startswith("pid ")  # asking twice: the holder still holds it
        with pytest.raises(LtuneError, match="being written by another ltune run"):
            runfolder.RunLock(tmp_path).acquire()
    finally:
        holder.release()
    (tmp_path / runfolder.RunLock.NAME).write_text("pid 1 on gone, since 2026-01-01")  # left by a killed run
    assert probe.held_by() is None and (tmp_path / runfolder.RunLock.NAME).exists()
    holder.acquire()  # a stale file does not block the next writer
    holder.release()


def test_sighup_checkpoints_and_second_signal_still_says_how(sentiment_files, tmp_path, tiny_bert_dir,
                                                              monkeypatch):
    real_step = engine._step
    # what the run must put back: Python's default_int_handler, or SIG_IGN when pytest itself was
    # started in the background by a non-interactive shell
    sigint_before = signal.getsignal(signal.SIGINT)

    def step_then(sigs):
        calls = {"n": 0}

        def step(*a, **k):
            calls["n"] += 1
            for at, sig, pause in sigs:
                if calls["n"] == at:
                    os.kill(os.getpid(), sig)
                    time.sleep(pause)
            return real_step(*a, **k)

        return step

    train, dev = sentiment_files
    cfg = compose(tiny_overrides(train, dev, tmp_path / "hup", steps=8, **{"model.path": tiny_bert_dir}))
    monkeypatch.setattr(engine, "_step", step_then([(3, signal.SIGHUP, 0.2)]))
    with pytest.raises(engine.RunInterrupted, match=r"SIGHUP at step 3: checkpoint saved; continue with "
                                                    r"`ltune train --resume .*hup`"):
        engine.train(cfg)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "hup")] == ["step-00000003.pt"]
    # Ctrl-C, then another 1.5 s later (the step is slow): stops at once, still names the command
    cfg = compose(tiny_overrides(train, dev, tmp_path / "twice", steps=8, **{"model.path": tiny_bert_dir,
                                                                              "train.checkpoint_every": 2}))
    monkeypatch.setattr(engine, "_step", step_then([(5, signal.SIGINT, 1.5), (5, signal.SIGINT, 0.5)]))
    with pytest.raises(engine.RunInterrupted, match=r"SIGINT at step 5 \(a second signal\): stopped without "
                                                    r"saving; continue from its last checkpoint \(step-00000004.pt\)"
                                                    r" with `ltune train --resume .*twice`"):
        engine.train(cfg)
    assert not (tmp_path / "twice" / "results.json").exists()  # interrupted, not failed
    assert signal.getsignal(signal.SIGINT) is sigint_before  # handlers put back


def test_a_signal_in_the_last_step_lets_the_run_complete(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    """A stop signal during the last step (or its final evaluation, the slowest part of many runs):
    everything but writing the results is done, so the run completes rather than checkpointing
    and leaving the final evaluation for a resume to redo."""
    real_step, calls = engine._step, {"n": 0}

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
        return real_step(*a, **k)

    train, dev = sentiment_files
    cfg = compose(tiny_overrides(train, dev, tmp_path / "last", steps=6, **{"model.path": tiny_bert_dir,
                                                                             "train.checkpoint_every": 2}))
    monkeypatch.setattr(engine, "_step", step)
    run = engine.train(cfg)
    res = runfolder.read_results(run)
    assert res["status"] == "completed" and res["steps"] == 6 and res["final"]["accuracy"] is not None


def test_stale_temporaries_are_removed_on_resume(tmp_path):
    cfg = compose([f"out_dir={tmp_path}/run"])
    run, _ = runfolder.prepare_run_dir(cfg)
    runfolder.release(run)
    checkpoint.save(run, {"step": 2}, keep=2)
    stale = [run / "checkpoints" / ".step-00000004.pt.k2j3h.tmp", run / ".results.json.x8a.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    cfg.resume = True
    runfolder.prepare_run_dir(cfg)
    runfolder.release(run)
    assert not any(p.exists() for p in stale)
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["step-00000002.pt"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_respect_the_umask(sentiment_files, tmp_path, tiny_bert_dir, umask):
    old = os.umask(umask)
    try:
        runfolder.write_json(tmp_path / "r.json", {"a": 1})
        assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o666 & ~umask
        if umask == 0o022:  # a whole run folder, checkpoints included
            train, dev = sentiment_files
            cfg = compose(tiny_overrides(train, dev, tmp_path / "run", steps=2,
                                         **{"model.path": tiny_bert_dir, "train.checkpoint_every": 1}))
            run = engine.train(cfg)
            for f in run.iterdir():
                want = (0o777 if f.is_dir() else 0o666) & ~umask
                assert stat.S_IMODE(f.stat().st_mode) == want, f.name
            checkpoint.save(run, {"step": 1}, keep=1)
            (ck,) = checkpoint.list_checkpoints(run)
            assert stat.S_IMODE(ck.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_disk_full_at_the_final_weights_then_resume_completes(sentiment_files, tmp_path, tiny_bert_dir,
                                                              monkeypatch):
    import errno

    train, dev = sentiment_files
    cfg = compose(tiny_overrides(train, dev, tmp_path / "full", steps=4, **{"model.path": tiny_bert_dir,
                                                                             "train.checkpoint_every": 2}))
    real = runfolder.save_trainable

    def full(method, run_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "trainable.safetensors"))

    monkeypatch.setattr(runfolder, "save_trainable", full)
    with pytest.raises(LtuneError, match=r"disk full \(No space left on device: .*trainable.safetensors\); the run "
                                         r"is marked failed and its last checkpoint \(step-00000002.pt\) is kept"):
        engine.train(cfg)
    assert runfolder.read_results(cfg.out_dir)["status"] == "failed"
    monkeypatch.setattr(runfolder, "save_trainable", real)
    cfg.resume = True
    run = engine.train(cfg)
    assert runfolder.read_results(run)["status"] == "completed" and not (run / "error.txt").exists()
    assert [r["step"] for r in runfolder.read_metrics(run) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_new_run_goes_into_an_empty_folder_or_a_sweep_jobs_folder(tmp_path):
    """Item 5's other side: an empty folder, or Hydra's job folder of a sweep (.hydra/, *.log), takes a run."""
    (tmp_path / "empty").mkdir()
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / "ltune.log").write_text("log\n")
    for d in (tmp_path / "empty", job):
        run, resuming = runfolder.prepare_run_dir(compose([f"out_dir={d}"]))
        runfolder.release(run)
        assert (run, resuming) == (d.resolve(), False) and (run / "config.yaml").is_file()
    assert (job / "ltune.log").read_text() == "log\n"
