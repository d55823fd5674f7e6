"""Data-parallel mechanics on PyTorch's own distributed stack (torchrun / torch.distributed).

The engine keeps one loop; this module supplies the few collective steps it needs when
several processes run it (`hardware.strategy=ddp|fsdp`):

- `session(hw)`: join the process group torchrun describes in the environment (RANK,
  WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); nccl on CUDA, gloo on CPU. One process and
  no torchrun environment: a no-op, so single-process runs never touch torch.distributed.
- Data: every rank builds the same seeded `BatchOrder` over the *global* batch
  (batch_size x grad_accum x world) and takes its own micro-batches of it
  (`my_micro_batches`), so data order and global batch are those of one process running
  grad_accum x world micro-batches.
- Gradients: after backward, the trainable parameters' gradients (the frozen base has
  none) are summed across ranks (`all_reduce_grads`); each micro-batch's loss is already
  weighted by its share of the global batch, so the sum is the global mean's gradient.
- Evaluation: ranks score every world-th eval batch; the (N, K) score matrix is summed
  across ranks (each row is non-zero on exactly one rank, so the sum is exact).
- Writing: only rank 0 (`is_main`) writes the run folder; `on_main(fn)` runs fn there and
  hands its result (or its LtuneError) to every rank.
- `launch(...)`: `ltune train hardware=ddp hardware.nproc=N` re-runs the same command
  under torchrun (`torch.distributed.run`, in-library) with N workers.
- `shard_frozen(model)`: FSDP2 (`fully_shard`) over the frozen base's transformer blocks.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from ltune_cli.errors import LtuneError

log = logging.getLogger("ltune")

# Keys that only say how a run is laid out on machines: a run may resume with other values.
LAYOUT_KEYS = ("hardware.strategy", "hardware.nproc", "hardware.nodes", "hardware.gpus_per_node",
               "hardware.backend", "hardware.partition", "hardware.time_min", "hardware.rdzv_endpoint",
               "hardware.cpus_per_task", "hardware.mem_gb", "hardware.gpu_mem_gb")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    strategy: str = "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


_SINGLE = Dist()
_state: Dist = _SINGLE


def state() -> Dist:
    """The process's place in the current run (rank 0 of 1 outside a distributed run)."""
    return _state


def env_world() -> int:
    """WORLD_SIZE as torchrun (or SLURM via torchrun) sets it; 1 when not launched by it."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def under_launcher() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def resolve_nproc(hw) -> int:
    """Processes per node: hardware.nproc, where 0 means one per visible GPU."""
    n = int(hw.nproc)
    if n == 0:
        n = torch.cuda.device_count()
        if n == 0:
            raise LtuneError("hardware.nproc=0 means one process per GPU, but no CUDA device is visible; "
                             "set hardware.nproc=N (CPU processes over gloo) or use hardware=cpu.")
    elif _wants_cuda(hw) and torch.cuda.is_available() and n > torch.cuda.device_count():
        # Each process drives one GPU (LOCAL_RANK); more processes than GPUs fail in set_device.
        raise LtuneError(f"hardware.nproc={n} but only {torch.cuda.device_count()} GPU(s) are visible "
                         f"(CUDA_VISIBLE_DEVICES); use hardware.nproc={torch.cuda.device_count()} or "
                         f"hardware.nproc=0 (one process per visible GPU).")
    return n


def _wants_cuda(hw) -> bool:
    return hw.device in ("auto", "cuda") or str(hw.device).startswith("cuda")


def check_layout(hw) -> None:
    """Combinations that cannot work, refused before anything is loaded or launched."""
    strategy = hw.strategy
    if strategy == "single" and (int(hw.nproc) > 1 or int(hw.nodes) > 1):
        raise LtuneError(f"hardware.nproc={hw.nproc} / hardware.nodes={hw.nodes} need several processes: "
                         f"use hardware=ddp (or hardware.strategy=ddp|fsdp).")
    if strategy in ("ddp", "fsdp") and hw.device_map != "none":
        raise LtuneError(f"hardware.device_map={hw.device_map} splits one model over this process's devices; "
                         f"it cannot be combined with hardware.strategy={strategy}. Use hardware.strategy=fsdp "
                         f"alone to shard the frozen base, or hardware.device_map with one process.")
    if strategy == "fsdp" and hw.load_in != "none":
        raise LtuneError(f"hardware.load_in={hw.load_in} (bitsandbytes) cannot be sharded with FSDP here; use "
                         f"hardware.strategy=ddp with hardware.load_in, or fsdp in bf16.")


def needs_launch(hw) -> bool:
    """True when `ltune train` must start workers itself (several processes, no torchrun around it)."""
    check_layout(hw)
    if under_launcher():
        return False
    tasks = _slurm_step_tasks()
    if tasks > 1:
        raise LtuneError(f"this SLURM job step runs {tasks} tasks (srun --ntasks, or hydra.launcher.tasks_per_node / "
                         f"nodes > 1): each would start its own run into the same folder. Run one task per node: "
                         f"`ltune train hardware=ddp` starts one worker per GPU itself; several nodes: torchrun on "
                         f"each node (docs/gpu.md).")
    if hw.strategy == "single":
        return False
    if int(hw.nodes) > 1:
        raise LtuneError(f"hardware.nodes={hw.nodes}: start torchrun on every node yourself, one SLURM task per node "
                         f"(--ntasks-per-node 1), e.g. `srun torchrun --nnodes {hw.nodes} --nproc_per_node <gpus> "
                         f"--rdzv-backend c10d --rdzv-endpoint {hw.rdzv_endpoint or '<first node>:29500'} -m ltune_cli "
                         f"train hardware=ddp out_dir=<shared folder> ...` (docs/gpu.md).")
    return resolve_nproc(hw) > 1


def _slurm_step_tasks() -> int:
    """Tasks of the SLURM job step this process belongs to (srun sets it; 1 outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    except ValueError:
        return 1


LAUNCHED_ENV = "LTUNE_LAUNCHED"  # set for workers that `ltune train` started (they print no summary)


def launch(hw, cli_args: list[str]) -> int:
    """Run `python -m ltune_cli <cli_args>` in resolve_nproc(hw) processes on this node via torchrun.

    Uses torch.distributed.run in this process (torchrun's own entry point): it starts the
    workers, sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*, watches them and stops all of them when
    one fails. Returns the exit code to leave with (a failed worker's own; 130 on Ctrl-C/SIGTERM).
    """
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    nproc = resolve_nproc(hw)
    args = ["--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc), "-m", "ltune_cli", *cli_args]
    log.info("starting %d worker processes with torchrun (strategy %s)", nproc, hw.strategy)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    # SLURM's pre-emption warning (SIGUSR2, asked for by submitit) reaches every process of the job:
    # the workers checkpoint and stop; this process waits for them, then hands the signal to the
    # handler that was there before (submitit's: it requeues the job, which resumes the run).
    usr2 = getattr(signal, "SIGUSR2", None)
    got_usr2: list[int] = []
    if usr2 is not None:
        handlers[usr2] = signal.signal(usr2, lambda signum, frame: got_usr2.append(signum))
    old_env = os.environ.get(LAUNCHED_ENV)
    os.environ[LAUNCHED_ENV] = "1"
    code = 0
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values() if f.exitcode and f.exitcode > 0]
        code = codes[0] if codes else 1
    except SignalException:
        code = 130
    finally:
        for s, h in handlers.items():
            if h is not None:
                signal.signal(s, h)
        if old_env is None:
            os.environ.pop(LAUNCHED_ENV, None)
        else:
            os.environ[LAUNCHED_ENV] = old_env
    if got_usr2 and callable(handlers.get(usr2)):
        handlers[usr2](usr2, None)
    return code


def is_quiet_worker() -> bool:
    """A worker that should print no end-of-run summary: not rank 0, or started by `ltune train`."""
    return os.environ.get("RANK", "0") != "0" or os.environ.get(LAUNCHED_ENV) == "1"


def _backend(hw, device_type: str) -> str:
    if hw.backend != "auto":
        return hw.backend
    return "nccl" if device_type == "cuda" else "gloo"


@contextlib.contextmanager
def session(hw):
    """Join torchrun's process group for the duration of a run (no-op in a single process)."""
    global _state
    if env_world() <= 1:
        yield _SINGLE
        return
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), env_world()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device_type = "cuda" if _wants_cuda(hw) and torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise LtuneError(f"this worker has LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are "
                             f"visible: start at most that many processes per node (torchrun --nproc_per_node).")
        torch.cuda.set_device(local)
    backend = _backend(hw, device_type)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=backend)
    strategy = "ddp" if hw.strategy == "single" else hw.strategy
    _state = Dist(rank, world, local, backend, strategy)
    if rank != 0:
        log.setLevel(logging.WARNING)  # rank 0 speaks for the run
    try:
        yield _state
    finally:
        _state = _SINGLE
        if created:
            dist.destroy_process_group()


# --------------------------------------------------------------------------- collectives
def _device_for_comm(d: Dist, like: torch.device | None = None) -> torch.device:
    if d.backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def on_main(fn):
    """Run fn on rank 0 only; every rank returns its result, or raises its LtuneError."""
    d = state()
    if not d.enabled:
        return fn()
    import torch.distributed as dist

    box = [None]
    if d.is_main:
        try:
            box[0] = ("ok", fn())
        except LtuneError as e:
            box[0] = ("error", e.message)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise LtuneError(value)
    return value


def all_reduce_sum(x: float) -> float:
    d = state()
    if not d.enabled:
        return x
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=_device_for_comm(d))
    dist.all_reduce(t)
    return float(t.item())


def any_true(flag: bool) -> bool:
    d = state()
    if not d.enabled:
        return flag
    return all_reduce_sum(1.0 if flag else 0.0) > 0


def all_reduce_grads(params) -> None:
    """Sum the trainable parameters' gradients over ranks (one call each: they are few)."""
    d = state()
    if not d.enabled:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if d.backend == "nccl" or p.grad.device.type == "cpu":
            dist.all_reduce(p.grad)
        else:
            g = p.grad.cpu()
            dist.all_reduce(g)
            p.grad.copy_(g)


def broadcast_params(params) -> None:
    """Start every rank from rank 0's trainable weights (they are seeded alike; this makes it sure)."""
    d = state()
    if not d.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            t = p.data if d.backend == "nccl" or p.device.type == "cpu" else p.data.cpu()
            dist.broadcast(t, src=0)
            if t is not p.data:
                p.data.copy_(t)


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Sum an (N, K) array whose rows each rank filled for its own examples (zeros elsewhere)."""
    d = state()
    if not d.enabled:
        return rows
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(rows)).to(_device_for_comm(d))
    dist.all_reduce(t)
    return t.cpu().numpy()


def barrier() -> None:
    if state().enabled:
        import torch.distributed as dist

        dist.barrier()


# --------------------------------------------------------------------------- data
def micro_batches(idx: np.ndarray, grad_accum: int, world: int) -> list[np.ndarray]:
    """The global batch cut into grad_accum x world micro-batches, in order (the same cut
    one process makes with grad_accum x world accumulation steps)."""
    return np.array_split(idx, grad_accum * world)


def my_micro_batches(d: Dist, grad_accum: int) -> range:
    """Indices (into micro_batches) of the micro-batches this rank runs."""
    return range(d.rank * grad_accum, (d.rank + 1) * grad_accum)


def shard(items: list, d: Dist | None = None) -> list:
    d = d or state()
    return items[d.rank::d.world]


def shard_even(items: list, d: Dist | None = None) -> list[tuple[object, bool]]:
    """This rank's items (every world-th) as (item, keep) pairs, all ranks the same count under FSDP.

    Every FSDP forward all-gathers the blocks' weights on every rank, so a rank with fewer
    items than another must still join its forwards: it runs items[0] again with keep=False,
    and the caller drops that result. ddp forwards involve no collective: no padding.
    """
    d = d or state()
    mine = [(x, True) for x in shard(items, d)]
    if d.strategy == "fsdp" and items:
        mine += [(items[0], False)] * (-(-len(items) // d.world) - len(mine))
    return mine


def resume_grad_accum(micro: int, world: int, grad_accum: int) -> int:
    """grad_accum that keeps a checkpoint's `micro` micro-batches per step on `world` processes."""
    if micro == grad_accum * world:
        return grad_accum
    if micro % world:
        raise LtuneError(f"the checkpoint's steps were {micro} micro-batch(es) of the global batch, which "
                         f"{world} process(es) cannot split evenly; resume with a process count that divides "
                         f"{micro} (hardware.nproc).")
    return micro // world


# --------------------------------------------------------------------------- FSDP
def shard_frozen(model: torch.nn.Module, device: torch.device) -> int:
    """FSDP2 over the frozen base, moved onto `device` one block at a time; returns the block count.

    Each transformer block (the model's `_no_split_modules` classes, what HF itself never
    splits) is one shard group that frees its gathered weights after its forward
    (reshard_after_forward=True), and the model itself is the root group over what is left
    (final norm, position tables): a rank holds 1/N of the blocks plus the one block being
    run. Without a root, every block is its own root, and a root keeps its weights gathered
    after forward (FSDP2's default), so each rank ended up holding the whole base.
    The input embeddings stay whole on every rank (prompt methods call them directly,
    outside the model's forward). The base arrives on the CPU; fully_shard moves each block
    to `device` and keeps its shard, so the whole base is never on one device.
    """
    from torch.distributed.fsdp import fully_shard

    names = set(getattr(model, "_no_split_modules", None) or [])
    emb = model.get_input_embeddings()
    blocks = [m for m in model.modules()
              if type(m).__name__ in names and not any(x is emb for x in m.modules())]
    if not blocks:
        raise LtuneError(f"hardware.strategy=fsdp: {type(model).__name__} names no transformer blocks "
                         f"(_no_split_modules) to shard; use hardware.strategy=ddp.")
    emb.to(device)
    for b in blocks:
        fully_shard(b, reshard_after_forward=True)
    fully_shard(model, ignored_params=set(emb.parameters()))
    log.info("fsdp: %d blocks sharded over %d processes", len(blocks), state().world)
    return len(blocks)
