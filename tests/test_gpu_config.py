"""GPU/cluster configuration checked on the CPU (issue 14 items 6-10, 12): loss scaling for fp16,
the fp32 head under autocast, friendly errors (eval OOM, too many processes, gated models, a 7B
base on a CPU), the model's own hardware preset, the memory estimate's 7B terms and the SLURM
launcher parameters. Nothing here needs a GPU: CUDA is monkeypatched where its presence matters."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_backbone, tiny_overrides
from ltune_cli import engine
from ltune_cli.config import MethodConfig, compose
from ltune_cli.errors import LtuneError
from ltune_cli.methods import build_method

LABELS = ["negative", "positive"]


def _batch(bb):
    enc = bb.tokenizer(["the movie was good", "bad film and so dull"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor([1, 0])}


# --------------------------------------------------------------------------- item 12: fp32 head
@pytest.mark.parametrize("method", ["prefix", "lt_prefix"])
def test_head_and_pair_logit_are_fp32_under_bf16_autocast(method):
    """`.float()` inside autocast does not keep a Linear in fp32: the head must run with autocast off."""
    bb = tiny_backbone("llama")
    torch.manual_seed(0)
    m = build_method(MethodConfig(name=method, num_virtual_tokens=3), bb, LABELS).eval()
    batch = _batch(bb)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = m.scores(batch)
        if method == "prefix":
            pooled = m.encode(batch)
        else:
            table, mask, idx = m._conditioning(torch.arange(2).repeat(2))
            pairs = m.pair_batch({k: v.repeat_interleave(2, 0) for k, v in m.text_inputs(batch).items()}, idx)
            pooled = m.encode_with(pairs, table, mask, idx)
    assert scores.dtype == torch.float32
    with torch.no_grad():
        z = m.head(pooled.float())  # the head in fp32 on the same (autocast) encodings
    ref = z if method == "prefix" else (z[:, 1] - z[:, 0]).view(2, 2)
    assert torch.equal(scores, ref)


def _cfg(files, out, method="lt_prefix", **extra):
    train, dev = files
    repl = {k: v for k, v in extra.items()}
    base = [o for o in tiny_overrides(train, dev, out, method=method) if o.split("=", 1)[0] not in repl]
    return compose(base + [f"{k}={v}" for k, v in repl.items()])


# --------------------------------------------------------------------------- item 6: fp16 loss scaling
def test_fp16_overflowing_gradient_skips_the_step_instead_of_poisoning_the_weights(sentiment_files, tmp_path,
                                                                                  tiny_bert_dir, monkeypatch):
    """fp16 needs a GradScaler: a step whose gradients overflow (inf) is skipped and the scale
    lowered. Without one, clipping turns inf into NaN weights and the next loss is NaN."""
    real_step, calls = engine._step, []

    def overflow_once(s, method, idx, gen, hw, *rest):
        loss = real_step(s, method, idx, gen, hw, *rest)
        calls.append(1)
        if len(calls) == 2:  # step 2: one gradient overflows, as fp16 does past 65504
            next(iter(method.trainable_parameters())).grad.view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(engine, "_step", overflow_once)
    cfg = _cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_bert_dir, "hardware.dtype": "fp16",
                                                     "train.max_steps": 4})
    run = engine.train(cfg)
    from safetensors.torch import load_file

    weights = load_file(str(run / "trainable.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    from ltune_cli import runfolder

    assert runfolder.read_results(run)["status"] == "completed"


def test_nonfinite_loss_in_fp16_suggests_bf16_not_fp32(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setattr(engine, "_step", lambda *a, **k: float("nan"))
    cfg = _cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_bert_dir, "hardware.dtype": "fp16"})
    with pytest.raises(LtuneError, match="training loss became nan") as e:
        engine.train(cfg)
    assert "hardware.dtype=bf16" in e.value.message and "dtype=fp32" not in e.value.message


# --------------------------------------------------------------------------- item 12: friendly errors
def test_out_of_memory_in_evaluation_names_eval_batch_size(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    cfg = _cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_bert_dir, "hardware.eval_batch_size": 16})
    s = engine.build(cfg)

    def oom(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(s.method, "scores", oom)
    with pytest.raises(LtuneError, match=r"out of memory while evaluating at hardware.eval_batch_size=16.*"
                                         r"hardware.eval_batch_size=8"):
        engine.evaluate(s)


@pytest.mark.parametrize("nproc,ok", [(2, True), (3, False)])
def test_more_processes_than_visible_gpus_is_a_clear_error(nproc, ok, monkeypatch):
    from ltune_cli import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    hw = compose(["hardware=ddp", f"hardware.nproc={nproc}"]).hardware
    if ok:
        assert distributed.resolve_nproc(hw) == nproc
    else:
        with pytest.raises(LtuneError, match=r"hardware.nproc=3 but only 2 GPU\(s\) are visible"):
            distributed.needs_launch(hw)
    # CPU processes (gloo) are not GPUs
    assert distributed.resolve_nproc(compose(["hardware=ddp", "hardware.nproc=3", "hardware.device=cpu"]).hardware) == 3


def test_gated_hub_model_says_to_log_in(monkeypatch):
    """Both places a hub model is first touched: its config.json (models.folder.describe) and its weights."""
    from transformers import AutoConfig, AutoTokenizer

    from ltune_cli.models import backbone, folder

    def gated(*a, **k):  # what transformers raises for a gated repo without a granted token
        raise OSError("You are trying to access a gated repo.\nMake sure to have access to it at "
                      "https://huggingface.co/meta-llama/Llama-2-7b-hf.\n401 Client Error.")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", gated)
    monkeypatch.setattr(AutoConfig, "from_pretrained", gated)
    model_cfg = compose(["model=llama2_7b", "hardware=cpu"]).model
    with pytest.raises(LtuneError, match=r"gated on the Hugging Face hub.*hf auth login.*HF_TOKEN"):
        folder.describe(model_cfg)
    with pytest.raises(LtuneError, match=r"gated on the Hugging Face hub.*hf auth login.*HF_TOKEN"):
        backbone._from_pretrained(model_cfg.path, model_cfg, torch.bfloat16)


def test_quant_extra_brings_accelerate():
    """transformers' bitsandbytes loading needs accelerate: `pip install -e '.[quant]'` must bring it."""
    import tomllib

    from ltune_cli.paths import REPO_ROOT

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip() for d in extras["quant"]]
    assert {"bitsandbytes", "accelerate"} <= set(names)


# --------------------------------------------------------------------------- item 10: pre-emption
def test_usr2_checkpoints_then_hands_over_to_submitit_for_requeue(sentiment_files, tmp_path, tiny_bert_dir,
                                                                   monkeypatch):
    """SLURM warns a job before pre-emption/time limit with SIGUSR2 (submitit's default): the loop
    finishes its step and checkpoints, then submitit's own handler (here a stand-in that exits like
    it does) requeues the job; the requeued job resumes from that checkpoint."""
    import os
    import signal

    from ltune_cli import checkpoint

    run_dir, seen = tmp_path / "run", []

    def submitit_handler(signum, frame):  # submitit: checkpoint the DelayedSubmission, requeue, sys.exit(-1)
        seen.append([p.name for p in checkpoint.list_checkpoints(run_dir)])
        raise SystemExit(-1)

    real_step, calls = engine._step, []

    def step(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_step(*a, **k)

    monkeypatch.setattr(engine, "_step", step)
    old = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        cfg = _cfg(sentiment_files, run_dir, **{"model.path": tiny_bert_dir, "train.max_steps": 6,
                                                "train.checkpoint_every": 0})
        with pytest.raises(SystemExit):
            engine.train(cfg)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert seen == [["step-00000002.pt"]], seen  # called once, after the step-2 checkpoint
    assert len(calls) == 2  # stopped at the step the signal came in
    monkeypatch.setattr(engine, "_step", real_step)
    cfg = _cfg(sentiment_files, run_dir, **{"model.path": tiny_bert_dir, "train.max_steps": 6,
                                            "train.checkpoint_every": 0, "resume": "true"})
    from ltune_cli import runfolder

    assert runfolder.read_results(engine.train(cfg))["status"] == "completed"


def test_usr2_while_loading_is_handed_to_submitit_too(sentiment_files, tmp_path, tiny_bert_dir, monkeypatch):
    """Before the loop there is nothing to checkpoint: the job is requeued at once (it resumes from
    the last checkpoint, or step 0)."""
    import os
    import signal

    seen = []

    def submitit_handler(signum, frame):
        seen.append(signum)
        raise SystemExit(-1)

    real_build = engine.build

    def build(*a, **k):
        os.kill(os.getpid(), signal.SIGUSR2)
        return real_build(*a, **k)

    monkeypatch.setattr(engine, "build", build)
    old = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(SystemExit):
            engine.train(_cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_bert_dir}))
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert seen == [signal.SIGUSR2]


# --------------------------------------------------------------------------- item 8: the model's preset
def test_every_model_runs_with_its_own_preset_unless_hardware_is_given():
    from ltune_cli.paths import conf_dir

    for p in sorted((conf_dir() / "model").glob("*.yaml")):
        path = ["model.path=/any/folder"] if p.stem == "custom" else []  # model=custom needs a path
        cfg = compose([f"model={p.stem}", *path])
        assert cfg.hardware.name == (cfg.model.hardware_preset or "cpu"), p.stem
        assert compose([f"model={p.stem}", *path, "hardware=cpu"]).hardware.name == "cpu"
    cfg = compose(["model=llama2_7b", "hardware.batch_size=2"])  # a key override keeps the preset
    assert (cfg.hardware.name, cfg.hardware.batch_size, cfg.hardware.gradient_checkpointing) == ("gpu_large", 2, True)


@pytest.mark.parametrize("sweep", ["paper_table1", "bloom_sizes", "falcon_sizes"])
def test_sweeps_give_each_model_its_preset(sweep):
    """The 7B models of a sweep run with gpu_large (micro-batch 8 x 4, checkpointing), not gpu's 32."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ltune_cli.config import _register
    from ltune_cli.paths import conf_dir

    _register()
    GlobalHydra.instance().clear()
    seen = {}
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        base = hydra_compose(config_name="config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
        for model in str(base.hydra.sweeper.params.model).split(","):
            cfg = hydra_compose(config_name="config", overrides=[f"+sweep={sweep}", f"model={model}"])
            seen[model] = (cfg.hardware.name, cfg.model.hardware_preset)
        forced = hydra_compose(config_name="config", overrides=[f"+sweep={sweep}", "model=bloom_7b1", "hardware=ddp"])
    GlobalHydra.instance().clear()
    assert all(name == preset for name, preset in seen.values()), seen
    assert any(name == "gpu_large" for name, _ in seen.values())
    assert forced.hardware.name == "ddp"


def test_gpu_preset_on_a_cpu_only_machine_is_refused_naming_hardware_cpu(sentiment_files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train, dev = sentiment_files
    cfg = compose(["model=llama2_7b", "dataset=files", f"dataset.train_path={train}", f"dataset.eval_path={dev}",
                   "dataset.text_column=text", "dataset.label_column=label"])
    with pytest.raises(LtuneError, match=r"hardware=gpu_large \(model=llama2_7b's hardware_preset.*add hardware=cpu"):
        engine.build(cfg)


# --------------------------------------------------------------------------- item 10: SLURM
def _sweep_argv(monkeypatch, tmp_path, args):
    """The Hydra command line `ltune sweep` hands to Hydra (nothing is submitted)."""
    import sys

    from ltune_cli import sweep as sweep_mod

    got = {}

    def fake_main():
        got["argv"] = list(sys.argv)

    monkeypatch.setattr(sweep_mod, "hydra_main", fake_main)
    monkeypatch.setattr(sweep_mod, "_finish_if_started", lambda d, s: {"jobs": []})
    sweep_mod.run_sweep(args, out=tmp_path / "sw")
    return got["argv"]


def test_slurm_request_comes_from_the_hardware_presets(monkeypatch, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    argv = _sweep_argv(monkeypatch, tmp_path, ["+sweep=paper_table1", "hydra/launcher=submitit_slurm",
                                               "hardware.partition=a100"])
    # the largest request of the grid: gpu_large's 480 min and 64 GB host RAM for the 7B models
    for want in ("hydra.launcher.mem_gb=64", "hydra.launcher.timeout_min=480", "hydra.launcher.gpus_per_node=1",
                 "hydra.launcher.partition='a100'", "hydra.launcher.tasks_per_node=1", "hydra.launcher.nodes=1",
                 "hydra.launcher.cpus_per_task=8"):
        assert want in argv, (want, argv)
    # what the command line says itself wins
    argv = _sweep_argv(monkeypatch, tmp_path, ["+sweep=bloom_sizes", "hydra/launcher=submitit_slurm", "hardware=ddp",
                                               "hydra.launcher.timeout_min=30"])
    assert "hydra.launcher.timeout_min=30" in argv and "hydra.launcher.timeout_min=240" not in argv
    assert "hydra.launcher.gpus_per_node=4" in argv and "hydra.launcher.mem_gb=96" in argv
    assert not any(a.startswith("hydra.launcher.") for a in _sweep_argv(monkeypatch, tmp_path, ["+sweep=cpu_smoke"]))


@pytest.mark.parametrize("key", ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4"])
def test_slurm_several_tasks_or_nodes_per_run_are_refused(monkeypatch, tmp_path, key):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with pytest.raises(LtuneError, match=r"Leave hydra.launcher.(nodes|tasks_per_node) at 1"):
        _sweep_argv(monkeypatch, tmp_path, ["+sweep=bloom_sizes", "hydra/launcher=submitit_slurm", key])


def test_a_slurm_step_with_several_tasks_is_refused(monkeypatch):
    """srun -n 4 ltune train ...: four standalone runs into one folder; refused before anything starts."""
    from ltune_cli import distributed

    for k in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    with pytest.raises(LtuneError, match="this SLURM job step runs 4 tasks"):
        distributed.needs_launch(compose(["hardware=ddp", "hardware.nproc=2", "hardware.device=cpu"]).hardware)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert distributed.needs_launch(compose(["hardware=ddp", "hardware.nproc=2", "hardware.device=cpu"]).hardware)


# --------------------------------------------------------------------------- item 7: the estimate's 7B terms
def _cpu_peak(fn) -> int:
    """Peak of live CPU tensor bytes allocated while fn runs (torch.profiler, profile_memory)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak


def test_warm_start_transient_is_what_fit_linear_allocates():
    """The formula memory.py counts for the label maps' least-squares warm start, against the
    bytes fit_linear really allocates (Llama-2-7B's map: d=4096 -> 262144 outputs)."""
    from ltune_cli.memory import fit_linear_transient_bytes
    from ltune_cli.methods.base import fit_linear

    torch.manual_seed(0)
    for i, o, rows in ((256, 20000, 6), (96, 50000, 3)):
        lin = torch.nn.Linear(i, o)
        x, y = torch.randn(rows, i), torch.randn(rows, o)
        measured = _cpu_peak(lambda lin=lin, x=x, y=y: fit_linear(lin, x, y))
        assert measured == pytest.approx(fit_linear_transient_bytes(i, o, rows), rel=0.05), (i, o, measured)


def test_estimate_counts_autocast_copy_gradient_temporaries_and_warm_start(sentiment_files, tmp_path,
                                                                          tiny_llama_dir):
    """bf16, grad_accum 2: autocast's cached bf16 copy of the map (2 bytes a weight), its gradient
    temporaries at the end of backward (bf16 gradient + its fp32 cast = 6 bytes a weight) and the
    warm start's solve are in the estimate."""
    from ltune_cli import memory
    from ltune_cli.memory import fit_linear_transient_bytes

    cfg = _cfg(sentiment_files, tmp_path / "run", **{"model.path": tiny_llama_dir, "hardware.dtype": "bf16",
                                                     "hardware.grad_accum": 2})
    s = engine.build(cfg)
    Z = s.method.Z
    n = Z.weight.numel() + Z.bias.numel()
    est = memory.estimate(s, cfg)
    assert est["autocast_copy_bytes"] == 2 * n
    assert est["grad_temporary_bytes"] == 6 * n
    rows = int(s.method.labels_frozen.mask.sum())
    assert est["warm_start_bytes"] >= fit_linear_transient_bytes(Z.in_features, Z.out_features, rows)
    parts = ("frozen_bytes", "trainable_bytes", "grad_bytes", "optimizer_bytes", "other_bytes", "activation_bytes",
             "transient_bytes")
    assert est["estimate_bytes"] == pytest.approx(sum(est[k] for k in parts), abs=len(parts))
    persistent = sum(est[k] for k in parts[:5])
    assert est["estimate_bytes"] >= est["frozen_bytes"] + max(
        persistent - est["frozen_bytes"] + est["train_activation_bytes"] + est["autocast_copy_bytes"],
        persistent - est["frozen_bytes"] + est["grad_temporary_bytes"], est["warm_start_bytes"])
    # fp32, one micro-batch: no copy, and the first gradient becomes .grad itself
    cfg32 = _cfg(sentiment_files, tmp_path / "run32", **{"model.path": tiny_llama_dir})
    est32 = memory.estimate(engine.build(cfg32), cfg32)
    assert (est32["autocast_copy_bytes"], est32["grad_temporary_bytes"]) == (0, 0)


@pytest.mark.parametrize("method", ["prompt", "lt_prompt"])
def test_an_evaluation_batch_is_estimated_at_most_as_large_as_the_evaluation_set(sentiment_files, tmp_path,
                                                                                tiny_bert_dir, method):
    """32 dev texts at eval_batch_size 256 are one batch of 32: on an H200 the 64-text dev set of
    test_cuda at the gpu preset's 256 was estimated at 1.3x its peak."""
    from ltune_cli import memory
    from ltune_cli.data import load_splits

    est = {}
    for e in (32, 256):
        cfg = _cfg(sentiment_files, tmp_path / f"run{e}", method=method,
                   **{"model.path": tiny_bert_dir, "hardware.eval_batch_size": e})
        est[e] = (memory.estimate(engine.build(cfg), cfg)["eval_activation_bytes"],
                  memory.plan(_with_arch(cfg), load_splits(cfg.dataset))["eval_activation_bytes"])
    # the plan counts; the probes measure (storages told apart by address: a few KB vary between builds)
    assert est[256][1] == est[32][1] and est[256][0] == pytest.approx(est[32][0], rel=0.01)
    cfg16 = _cfg(sentiment_files, tmp_path / "run16", method=method,
                 **{"model.path": tiny_bert_dir, "hardware.eval_batch_size": 16})
    assert memory.estimate(engine.build(cfg16), cfg16)["eval_activation_bytes"] < est[32][0]


def _with_arch(cfg):
    """cfg with conf/model/bert_base.yaml's published architecture, for memory.plan."""
    from omegaconf import OmegaConf

    from ltune_cli.config import compose

    arch = compose(["model=bert_base"]).model.arch
    OmegaConf.set_struct(cfg, False)
    cfg.model.arch = arch
    return cfg


def test_cuda_workspaces_are_counted_per_thread_from_torch_or_its_environment(monkeypatch):
    """cuBLAS's workspace per (thread, stream), the training loop's and backward's: from torch where
    it says (>= 2.12), else CUBLAS_WORKSPACE_CONFIG, else torch's default (32 MiB on Hopper). On an
    H200 one of them, 32 MiB, was alive at every run's peak."""
    from ltune_cli.memory import cuda_workspace_bytes

    cuda = torch.device("cuda", 0)
    assert cuda_workspace_bytes(torch.device("cpu")) == 0
    monkeypatch.setattr(torch._C, "_cuda_getCublasWorkspaceSize", lambda: 5 << 20, raising=False)
    assert cuda_workspace_bytes(cuda) == 10 << 20
    monkeypatch.delattr(torch._C, "_cuda_getCublasWorkspaceSize")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:2:16:8")
    assert cuda_workspace_bytes(cuda) == 2 * (4096 * 2 + 16 * 8) * 1024
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert cuda_workspace_bytes(cuda) == 2 * 32 * 2**20
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert cuda_workspace_bytes(cuda) == 2 * (4096 * 2 + 16 * 8) * 1024


def _tensors_alive() -> list[torch.Tensor]:
    import gc

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]


@pytest.mark.parametrize("method", ["prefix", "prompt", "lt_prefix", "lt_prompt"])
@pytest.mark.parametrize("family,settings", [("bert", {}), ("llama", {"hardware.dtype": "bf16",
                                                                      "hardware.gradient_checkpointing": True})])
def test_a_finished_run_leaves_no_tensor_of_its_own_alive(sentiment_files, tmp_path, tiny_bert_dir, tiny_llama_dir,
                                                          method, family, settings):
    """The estimate's probes build autograd graphs that never run backward: a pack hook that kept
    the tensor itself made cycles through C++ that gc cannot free, and every run left its graphs
    and the frozen weights they saved alive in the process (a sweep's runs, one after another, kept
    every model; on CUDA each run's peak carried the probes). Two runs in one process: nothing of
    either is left."""
    before = {id(t) for t in _tensors_alive()}
    for i in range(2):
        cfg = _cfg(sentiment_files, tmp_path / f"run{i}", method=method,
                   **{"model.path": tiny_bert_dir if family == "bert" else tiny_llama_dir, **settings})
        engine.train(cfg)
    left = [t for t in _tensors_alive() if id(t) not in before and t.numel() > 16]
    assert not left, f"{len(left)} tensors outlive the runs, e.g. {[tuple(t.shape) for t in left[:5]]}"


# --------------------------------------------------------------------------- item 8: validate's estimate
def _validate(args):
    from typer.testing import CliRunner

    from ltune_cli.cli import app

    return CliRunner().invoke(app, ["validate", *args])


def test_validate_prints_the_estimate_and_refuses_a_preset_that_cannot_fit(monkeypatch):
    """The issue's cases: Llama-2-7B lt_prefix on RTE with gpu's batch 32 does not fit its 40 GB;
    with its own preset (gpu_large: micro-batch 8, checkpointing) it does; BLOOM-7b1 ddp batch 32
    (the old README SLURM example) does not fit a 40 GB A100. (The checks that need the hub's
    config.json and a GPU, preflight.check, are stubbed: this machine has neither.)"""
    from types import SimpleNamespace

    from ltune_cli import preflight

    monkeypatch.setattr(preflight, "check", lambda cfg: SimpleNamespace(summary=lambda: "stub"))
    r = _validate(["model=llama2_7b", "dataset=rte", "method=lt_prefix"])
    assert r.exit_code == 0, r.output
    assert "memory estimate per process" in r.output and "hardware=gpu_large" in r.output
    r = _validate(["model=llama2_7b", "dataset=rte", "method=lt_prefix", "hardware=gpu"])
    assert r.exit_code == 2 and "hardware.gpu_mem_gb=40 but this run needs about" in r.output, r.output
    r = _validate(["model=bloom_7b1", "dataset=sst2", "method=lt_prefix", "hardware=ddp"])
    assert r.exit_code == 2 and "gpu_mem_gb=40" in r.output, r.output
    r = _validate(["model=bloom_7b1", "dataset=sst2", "method=lt_prefix", "hardware=ddp", "hardware.gpu_mem_gb=80"])
    assert r.exit_code == 0, r.output


def test_plan_counts_the_published_parameters_and_the_7b_terms():
    from ltune_cli import memory
    from ltune_cli.data import load_splits

    cfg = compose(["model=llama2_7b", "dataset=rte", "method=lt_prefix"])  # gpu_large: bf16, grad_accum 4
    est = memory.plan(cfg, load_splits(cfg.dataset))
    n_map = (4096 + 1) * 32 * 2 * 4096  # Z: d -> layers x 2 x kv_dim, with bias
    assert est["trainable_params"] == n_map + 2 * 4096 + 2
    assert est["frozen_params"] == pytest.approx(6607e6, rel=0.01)
    assert est["autocast_copy_bytes"] == 2 * n_map and est["grad_temporary_bytes"] == 6 * n_map
    # the warm start: the map's own fp32 weights + one 16384-row chunk of the ridge solve (no
    # float64 copy of the whole map: that was 12 bytes a weight, ~12 GiB here)
    assert 4 * n_map < est["warm_start_bytes"] < 4 * n_map + 4 * 4097 * 16384 * 1.1
