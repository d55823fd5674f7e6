"""Data parallel for real on CPU: torchrun workers over gloo against one process.

`ltune train hardware=ddp hardware.nproc=2` (a subprocess: the CLI starts two workers through
torch.distributed.run) must compute what one process computes with the same global batch cut
into the same micro-batches (batch_size=4 x grad_accum=2), write one run folder, and resume
checkpoints across process counts. FSDP (the frozen base sharded with FSDP2) runs over gloo
on CPU too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_model, tiny_overrides, train_killed, write_sentiment_csv
from ltune_cli import checkpoint, distributed, engine, runfolder
from ltune_cli.config import compose
from ltune_cli.errors import LtuneError

TIMING = {"time_s", "examples_per_s"}
# One thread per process on both sides (torchrun's default for its workers): then the sums inside
# each matmul are ordered alike and 2 processes reproduce 1 bit for bit. (With more threads in
# the single process, metrics agree to ~1e-7, and Adam turns near-zero gradients' last-bit
# differences into weight differences of ~1e-4.)
TWO = {"hardware": "ddp", "hardware.nproc": 2, "hardware.device": "cpu", "hardware.dtype": "fp32",
       "hardware.batch_size": 4, "hardware.eval_batch_size": 16, "hardware.num_threads": 1}
ONE = {"hardware": "cpu", "hardware.batch_size": 4, "hardware.grad_accum": 2, "hardware.eval_batch_size": 16,
       "hardware.num_threads": 1}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist-data")
    return write_sentiment_csv(d / "train.csv", 96, seed=1), write_sentiment_csv(d / "dev.csv", 32, seed=2)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("dist-bert"), "bert")


def ov(files, out, model_dir, layout: dict, method="lt_prefix", steps=6, **extra) -> list[str]:
    """tiny_overrides with the keys of `layout`/`extra` replaced (Hydra refuses a key twice)."""
    train, dev = files
    repl = {"model.path": model_dir, "method.dropout": 0.1, **layout, **extra}
    base = [o for o in tiny_overrides(train, dev, out, method=method, steps=steps)
            if o.split("=", 1)[0] not in repl]
    return base + [f"{k}={v}" for k, v in repl.items()]


def cli(args, cwd, timeout=300, **popen):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LTUNE_OUTPUTS": str(cwd / "outputs")}
    return subprocess.Popen([sys.executable, "-m", "ltune_cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, found = [pid], []
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    for q in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(q, signal.SIGKILL)


def run_cli(args, cwd, timeout=300):
    p = cli(args, cwd)
    out = p.communicate(timeout=timeout)[0]
    return p.returncode, out


def records(run):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runfolder.read_metrics(run)]


def assert_same_run(a, b, tol=0.0):
    """Same records, final scores, predictions and trainable weights (exactly, by default)."""
    ra, rb = records(a), records(b)
    assert [(r["kind"], r["step"]) for r in ra] == [(r["kind"], r["step"]) for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], str):
                assert x[k] == y[k]
            else:
                assert x[k] == pytest.approx(y[k], rel=tol, abs=tol), (x["step"], k)
    fa, fb = runfolder.read_results(a)["final"], runfolder.read_results(b)["final"]
    assert fa.keys() == fb.keys()
    assert all(fa[k] == pytest.approx(fb[k], rel=tol, abs=tol) for k in fa)
    pa, pb = (json.loads((r / "predictions.json").read_text()) for r in (a, b))
    assert pa["pred"] == pb["pred"]
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "trainable.safetensors")), load_file(str(b / "trainable.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(np.allclose(wa[k].numpy(), wb[k].numpy(), rtol=tol, atol=tol) for k in wa)


@pytest.fixture(scope="module")
def one_proc(files, bert_dir, tmp_path_factory):
    """The reference: one process, global batch 8 = 4 x 2 accumulated micro-batches."""
    out = tmp_path_factory.mktemp("one") / "run"
    return engine.train(compose(ov(files, out, bert_dir, ONE)))


def test_two_processes_equal_one_and_write_one_folder(files, bert_dir, one_proc, tmp_path):
    out = tmp_path / "two"
    code, log = run_cli(["train", *ov(files, out, bert_dir, TWO)], tmp_path)
    assert code == 0, log
    assert log.strip().splitlines()[-1] == f"run folder: {out}"
    assert log.count("run folder: ") == 1  # the launching process reports, the workers do not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # one folder, nothing under outputs/
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.yaml", "metrics.jsonl", "metrics.csv", "results.json", "predictions.json", "trainable.safetensors"])
    # (.ltune.lock, the one-writer lock of runfolder.RunLock, is removed when its holder releases it)
    res = runfolder.read_results(out)
    assert res["status"] == "completed"
    assert res["distributed"] == {"strategy": "ddp", "world_size": 2, "backend": "gloo", "global_batch": 8}
    assert res["memory"]["estimate_bytes"] > res["memory"]["frozen_bytes"] > 0
    assert_same_run(out, one_proc)


@pytest.mark.parametrize("method,tol", [("prefix", 0.0), ("lt_prompt", 1e-5)])
def test_fsdp_two_processes_equal_one(files, tmp_path_factory, tmp_path, method, tol):
    """The frozen base sharded over 2 gloo processes (FSDP2, one group per block) computes the same.
    lt_prompt on a decoder: one process reads the K label prompts once and hands their keys/values
    to the texts; on a sharded base each text reads its label prompt in one concatenated forward
    (Backbone.shares_prompt), the same function summed in another order: equal to float rounding."""
    llama = save_tiny_model(tmp_path_factory.mktemp("dist-llama"), "llama")
    ref = engine.train(compose(ov(files, tmp_path / "one", llama, ONE, method=method)))
    out = tmp_path / "fsdp"
    code, log = run_cli(["train", *ov(files, out, llama, {**TWO, "hardware": "fsdp"}, method=method)], tmp_path)
    assert code == 0, log
    assert "fsdp: 2 blocks sharded over 2 processes" in log
    assert runfolder.read_results(out)["distributed"]["strategy"] == "fsdp"
    assert_same_run(out, ref, tol=tol)


def test_one_process_checkpoint_resumes_on_two(files, bert_dir, one_proc, tmp_path, monkeypatch):
    """A checkpoint of 1 process (2 micro-batches per step) continues on 2 (1 each): same run."""
    cfg = compose(ov(files, tmp_path / "cut", bert_dir, ONE, **{"train.checkpoint_every": 2}))
    train_killed(cfg, 4, monkeypatch)
    monkeypatch.undo()
    assert [p.name for p in checkpoint.list_checkpoints(cfg.out_dir)] == ["step-00000002.pt"]
    code, log = run_cli(["train", "--resume", cfg.out_dir, "hardware.strategy=ddp", "hardware.nproc=2"], tmp_path)
    assert code == 0, log
    assert runfolder.read_results(cfg.out_dir)["distributed"]["world_size"] == 2
    assert_same_run(tmp_path / "cut", one_proc)


def test_two_process_checkpoint_resumes_on_one_after_sigint(files, bert_dir, tmp_path):
    """Ctrl-C to `ltune train hardware=ddp`: both workers stop at the same step, rank 0 checkpoints;
    one process then finishes the run exactly as one process would have run it throughout."""
    steps, extra = 150, {"train.checkpoint_every": 1, "train.eval_every": 50, "train.log_every": 10}
    ref = engine.train(compose(ov(files, tmp_path / "ref", bert_dir, ONE, steps=steps, **extra)))
    run = tmp_path / "int"
    p = cli(["train", *ov(files, run, bert_dir, TWO, steps=steps, **extra)], tmp_path)
    t = time.time()
    while not checkpoint.list_checkpoints(run) and p.poll() is None and time.time() - t < 120:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 130, out
    assert f"ltune train --resume {run}" in out
    assert checkpoint.list_checkpoints(run) and not (run / "results.json").exists()
    cfg = compose(ov(files, run, bert_dir, TWO, steps=steps, **extra))
    cfg.hardware.strategy, cfg.hardware.nproc, cfg.resume = "single", 1, True
    engine.train(cfg)
    assert_same_run(run, ref)


def test_worker_failure_is_one_clear_error(files, tmp_path):
    out = tmp_path / "bad"
    code, log = run_cli(["train", *ov(files, out, tmp_path / "no-such-model", TWO)], tmp_path)
    assert code == 2, log
    assert "error: the 2 workers failed (exit code 2): " in log
    assert "no such folder" in log  # the workers' own one-line error
    assert runfolder.read_results(out)["status"] == "failed"


# --------------------------------------------------------------------------- no processes needed
def test_micro_batches_are_the_one_process_cut():
    idx = np.arange(10)
    one = distributed.micro_batches(idx, 4, 1)
    two = distributed.micro_batches(idx, 2, 2)
    assert [m.tolist() for m in one] == [m.tolist() for m in two]
    d1 = distributed.Dist(rank=1, world=2)
    assert list(distributed.my_micro_batches(d1, 2)) == [2, 3]
    assert distributed.shard(list(range(7)), d1) == [1, 3, 5]


def test_resume_on_another_process_count_keeps_micro_batches():
    assert distributed.resume_grad_accum(2, 1, 1) == 2  # 2 processes x 1 -> 1 process x 2
    assert distributed.resume_grad_accum(4, 2, 1) == 2
    assert distributed.resume_grad_accum(2, 2, 1) == 1
    with pytest.raises(LtuneError, match="cannot split evenly"):
        distributed.resume_grad_accum(3, 2, 1)


@pytest.mark.parametrize("overrides,match", [
    (["hardware.nproc=2"], "use hardware=ddp"),
    (["hardware=ddp", "hardware.device_map=auto"], "cannot be combined with hardware.strategy=ddp"),
    (["hardware=fsdp", "hardware.load_in=8bit"], "cannot be sharded with FSDP"),
    (["hardware=ddp", "hardware.nodes=2"], "srun torchrun --nnodes 2"),
    (["hardware=ddp", "hardware.device=cpu"], "hardware.nproc=0 means one process per GPU"),
])
def test_impossible_layouts_are_refused_before_anything_starts(overrides, match, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    if "hardware.nproc=0" in match:
        monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(LtuneError, match=match):
        distributed.needs_launch(compose(overrides).hardware)


def test_under_torchrun_nothing_is_launched(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not distributed.needs_launch(compose(["hardware=ddp", "hardware.nproc=2"]).hardware)
    assert distributed.is_quiet_worker()


def test_resume_takes_only_layout_overrides(tmp_path, files, bert_dir):
    from typer.testing import CliRunner

    from ltune_cli.cli import app

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    res = CliRunner().invoke(app, ["train", "--resume", str(run), "train.lr=0.1"])
    assert res.exit_code == 2
    assert "only the process layout can" in res.output


# --------------------------------------------------------------------------- SLURM (compose only)
SLURM_FROM_HARDWARE = ["hydra.launcher.gpus_per_node=${hardware.gpus_per_node}",
                       "hydra.launcher.timeout_min=${hardware.time_min}",
                       "hydra.launcher.partition=${hardware.partition}",
                       "hydra.launcher.cpus_per_task=${hardware.cpus_per_task}",
                       "hydra.launcher.tasks_per_node=1", "hydra.launcher.nodes=1"]


def test_slurm_sweep_takes_gpus_time_and_partition_from_hardware(tmp_path):
    """`ltune sweep +sweep=bloom_sizes hydra/launcher=submitit_slurm hardware=ddp ...` (docs/gpu.md):
    one SLURM job per run, sized by the hardware preset; nothing is submitted here."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from ltune_cli.config import _register, check
    from ltune_cli.paths import conf_dir

    _register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True, overrides=[
            "+sweep=bloom_sizes", "hydra/launcher=submitit_slurm", "hardware=ddp", "hardware.gpus_per_node=4",
            "hardware.partition=a100", "hardware.time_min=600", *SLURM_FROM_HARDWARE,
            f"hydra.sweep.dir={tmp_path / 'sw'}"])
    GlobalHydra.instance().clear()
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["gpus_per_node"], launcher["timeout_min"], launcher["partition"]) == (4, 600, "a100")
    assert launcher["tasks_per_node"] == 1 and launcher["cpus_per_task"] == 16
    assert list(cfg.hydra.sweeper.params.model.split(",")) == ["bloom_560m", "bloom_1b1", "bloom_1b7", "bloom_3b",
                                                               "bloom_7b1"]
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    check(job)
    # inside each job, engine.train starts one DDP worker per GPU SLURM gave it (nproc 0)
    assert job.hardware.strategy == "ddp" and job.hardware.nproc == 0


def test_each_sweep_job_launches_its_ddp_run(tmp_path, monkeypatch, files, bert_dir):
    """What a SLURM job does: engine.train with hardware=ddp starts torchrun workers that
    continue the run folder it made (workers replaced by a stub here)."""
    calls = []

    def fake_launch(hw, args):
        calls.append(args)
        return 0

    monkeypatch.setattr(distributed, "launch", fake_launch)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = compose(ov(files, tmp_path / "job", bert_dir, {"hardware": "ddp"}))
    assert engine.train(cfg) == tmp_path / "job"
    assert (tmp_path / "job" / "config.yaml").is_file()
    (args,) = calls
    assert args[:3] == ["train", "--resume", str(tmp_path / "job")]
    assert "hardware.strategy=ddp" in args and "hardware.nproc=0" in args


# --------------------------------------------------------------------------- FSDP: every rank, every forward
def test_fsdp_rank_without_a_batch_runs_the_same_forwards(tmp_path_factory, tmp_path):
    """A rank with no eval batch or an empty micro-batch must still join every sharded forward.

    40 eval texts at eval batch 64 are one batch, so rank 1 has none; 9 train texts at a global
    batch of 8 leave a 1-text batch, whose second micro-batch is empty. Under FSDP each forward
    all-gathers the blocks' weights on every rank: a rank that skips one waits in another
    collective and both hang (before the fix: until the subprocess timeout). The run must finish
    and compute what one process computes."""
    d = tmp_path_factory.mktemp("uneven")
    files = write_sentiment_csv(d / "train.csv", 9, seed=3), write_sentiment_csv(d / "dev.csv", 40, seed=4)
    llama = save_tiny_model(tmp_path_factory.mktemp("uneven-llama"), "llama")
    extra = {"hardware.eval_batch_size": 64, "train.eval_every": 1, "train.log_every": 1}
    ref = engine.train(compose(ov(files, tmp_path / "one", llama, ONE, method="prefix", steps=2, **extra)))
    out = tmp_path / "fsdp"
    p = cli(["train", *ov(files, out, llama, {**TWO, "hardware": "fsdp"}, method="prefix", steps=2, **extra)],
            tmp_path)
    try:
        log = p.communicate(timeout=240)[0]
    except subprocess.TimeoutExpired:
        kill_tree(p.pid)  # torchrun's workers sit in sessions of their own
        p.communicate()
        pytest.fail("2 FSDP processes hung: a rank skipped a sharded forward")
    assert p.returncode == 0, log
    assert_same_run(out, ref)


# --------------------------------------------------------------------------- checkpoints: GPUs, host RAM
class FakeCuda:
    """n visible GPUs, this process on `current`, one distinct generator state each."""

    def __init__(self, monkeypatch, n: int, current: int = 0, salt: int = 0):
        import torch

        self.n, self.current = n, current
        self.states = {i: torch.full((8,), 10 * salt + i, dtype=torch.uint8) for i in range(n)}
        self.set: dict[int, object] = {}
        for mod in (torch.cuda, torch.cuda.random):
            for name, fn in [("is_available", lambda: True), ("device_count", lambda: self.n),
                             ("current_device", lambda: self.current), ("get_rng_state", self.get),
                             ("set_rng_state", self.put)]:
                if hasattr(mod, name):
                    monkeypatch.setattr(mod, name, fn)

    def _index(self, device) -> int:
        import torch

        if isinstance(device, int):
            return device
        d = torch.device(device)
        return self.current if d.index is None else d.index

    def get(self, device="cuda"):
        return self.states[self._index(device)].clone()  # KeyError: no such GPU

    def put(self, state, device="cuda"):
        i = self._index(device)
        if i >= self.n:
            raise IndexError(f"CUDA device {i} does not exist")
        self.set[i] = state


def test_resume_with_fewer_gpus_restores_this_process_generator(monkeypatch):
    """`ltune train --resume <run> hardware.nproc=1` after a 2-GPU run: the checkpoint holds rank 0's
    own CUDA generator, which is restored on this process's GPU (it indexed GPU 1 before: IndexError)."""
    FakeCuda(monkeypatch, n=2, current=0, salt=1)
    saved = checkpoint.rng_state()
    now = FakeCuda(monkeypatch, n=1, current=0, salt=2)
    checkpoint.set_rng_state(saved)
    assert list(now.set) == [0]
    assert now.set[0].tolist() == [10] * 8  # GPU 0's state at save time (salt 1, device 0)


def test_checkpoint_streams_to_disk_and_loads_memory_mapped(tmp_path):
    """A checkpoint is written by torch.save into the file (no in-memory copy of it: peak Python
    allocations during save stay far below its size) and read back memory-mapped."""
    import tracemalloc

    import torch

    w = torch.randn(1_000_000)  # 4 MB
    tracemalloc.start()
    path = checkpoint.save(tmp_path, {"step": 1, "w": w}, keep=2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < w.nbytes / 10, peak
    got = checkpoint.load_latest(tmp_path)
    assert torch.equal(got["w"], w)
    assert str(path) in Path("/proc/self/maps").read_text()  # the file is mapped, not copied


# --------------------------------------------------------------------------- device_map over several devices
def test_label_key_values_gather_layers_from_several_devices(monkeypatch):
    """device_map over >= 2 GPUs leaves each layer's keys/values on its own layer's device; the
    lt_prefix warm start (Backbone.reading_kv) must bring them to the backbone's device before
    stacking them (torch.stack over devices crashed). Two devices on a CPU machine: the meta
    device holds layer 1's cache and is the backbone's device; layer 0's stays on the CPU."""
    import torch

    from conftest import tiny_backbone
    from ltune_cli.models.backbone import Backbone

    bb = tiny_backbone("llama")
    ids, mask = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    expected = bb.reading_kv(ids, mask).shape  # (N, l, L, 2, kv_heads, head_dim)
    real = bb.model.forward

    def on_two_devices(*args, **kwargs):
        out = real(*args, **kwargs)
        layer = kwargs["past_key_values"].layers[1]
        layer.keys, layer.values = layer.keys.to("meta"), layer.values.to("meta")
        return out

    monkeypatch.setattr(bb.model, "forward", on_two_devices)
    monkeypatch.setattr(Backbone, "device", property(lambda self: torch.device("meta")))
    got = bb.reading_kv(ids, mask)
    assert got.device.type == "meta" and got.shape == expected == (2, 3, 2, 2, 2, 8)


# --------------------------------------------------------------------------- FSDP memory
FSDP_PROBE = '''
import json, sys, torch
from ltune_cli import distributed
from ltune_cli.config import compose
from ltune_cli.models.backbone import load_backbone

def local_bytes(params):
    return sum((p.to_local() if hasattr(p, "to_local") else p).nbytes for p in params)

moves, real_to = [], torch.nn.Module.to
def spy(self, *args, **kwargs):  # bytes of whole (not yet sharded) weights each device move carries
    if "device" in kwargs or any(isinstance(a, (str, torch.device)) for a in args):
        moves.append(sum(p.nbytes for p in self.parameters() if not hasattr(p, "to_local")))
    return real_to(self, *args, **kwargs)

cfg = compose(["hardware=fsdp", "hardware.nproc=2", "hardware.device=cpu", "hardware.dtype=fp32",
               "hardware.num_threads=1", f"model.path={sys.argv[1]}"])
with distributed.session(cfg.hardware) as d:
    torch.nn.Module.to = spy
    bb = load_backbone(cfg.model, cfg.hardware)
    torch.nn.Module.to = real_to
    blocks = bb.model.layers
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 0]])
    with torch.no_grad():
        bb.encode(ids, (ids > 0).long())
    json.dump({"blocks_after_forward": local_bytes(blocks.parameters()), "largest_move": max(moves, default=0)},
              open(f"{sys.argv[2]}/rank{d.rank}.json", "w"))
'''


def test_fsdp_rank_holds_its_share_of_the_base(tmp_path_factory, tmp_path):
    """After a forward each of 2 ranks holds half the blocks' weights (a block's gathered weights are
    freed after its forward; before, every block was its own FSDP root and kept them: the whole
    base per rank), and loading moves no more than the embeddings or one block to the device at
    a time (before: the whole base, then sharded)."""
    from transformers import AutoModel

    llama = save_tiny_model(tmp_path_factory.mktemp("probe-llama"), "llama")
    base = AutoModel.from_pretrained(llama)
    whole_blocks = sum(p.nbytes for p in base.layers.parameters())
    one_block = max(sum(p.nbytes for p in b.parameters()) for b in base.layers)
    embeddings = sum(p.nbytes for p in base.get_input_embeddings().parameters())
    (tmp_path / "probe.py").write_text(FSDP_PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(tmp_path / "probe.py"), str(llama), str(tmp_path)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["blocks_after_forward"] == whole_blocks / 2, (got, whole_blocks)
        assert 0 < got["largest_move"] <= max(embeddings, one_block), (got, embeddings, one_block)


def test_plain_gpu_base_loads_straight_onto_its_device(monkeypatch):
    """One GPU per process (hardware=gpu / ddp): from_pretrained places each tensor on this process's
    GPU as it reads it (device_map {"": cuda:N}) instead of building the whole base in host RAM and
    copying it over, on every rank. No GPU here: the load is stopped where it would start."""
    import torch

    from ltune_cli.models import backbone

    seen = {}

    class Stop(Exception):
        pass

    def from_pretrained(*args, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(backbone, "resolve_device", lambda device: torch.device("cuda", 1))
    monkeypatch.setattr(backbone, "_from_pretrained", from_pretrained)
    cfg = compose(["hardware=ddp", "model=smollm2_135m"])
    with pytest.raises(Stop):
        backbone.load_backbone(cfg.model, cfg.hardware)
    assert seen == {"device_map": {"": torch.device("cuda", 1)}}
