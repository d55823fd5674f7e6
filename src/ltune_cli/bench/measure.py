"""Measuring primitives: clocks, summaries, the dense matmul peak, RSS, machine facts, profiles."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall time of a block, synchronising the device on both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        sync(self.device)
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self._t
        return False


def summary(values: list[float]) -> dict:
    """Median and spread of repeated measurements (spread = (max - min) / median)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "spread": None, "n": 0, "values": []}
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals),
            "spread": (max(vals) - min(vals)) / med if med else None, "n": len(vals), "values": vals}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 3) -> float:
    """Dense matmul FLOP/s: the best of `reps` (n x n) @ (n x n) products (2 n^3 FLOPs each)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (library init, page faults)
    best = float("inf")
    for _ in range(reps):
        with Clock(device) as c:
            torch.mm(a, b, out=out)
        best = min(best, c.seconds)
    return 2 * n**3 / best


# --------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if platform.system() == "Darwin" else peak * 1024


class PeakRSS:
    """Samples RSS in a thread (every `interval` s) while the block runs; `.peak` in bytes."""

    def __init__(self, interval: float = 0.0005):
        self.interval = interval
        self.peak = 0

    def __enter__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return False


# --------------------------------------------------------------------------- machine
def machine(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "processor": _cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16_supported=torch.cuda.is_bf16_supported())
    else:
        flags = _cpu_flags()
        info["cpu_bf16"] = bool({"avx512_bf16", "amx_bf16"} & flags)
        info["cpu_amx"] = "amx_tile" in flags
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def versions() -> dict:
    import numpy as np
    import transformers

    from ltune_cli import __version__

    out = {"ltune": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "numpy": np.__version__}
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:
        out["peft"] = None
    return out


# --------------------------------------------------------------------------- profile
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def profile_steps(step, device: torch.device, n: int = 2, top: int = 14) -> dict:
    """torch.profiler over `n` calls of step(): the ops taking the most self time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()  # warm
    with profile(activities=acts) as prof:
        t = time.perf_counter()
        for _ in range(n):
            step()
        sync(device)
        wall = time.perf_counter() - t
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = [(e.key, getattr(e, attr), e.count) for e in prof.key_averages()]
    total = sum(r[1] for r in rows) or 1
    rows.sort(key=lambda r: -r[1])
    gemm = sum(r[1] for r in rows if r[0] in GEMM_OPS)
    return {"steps": n, "clock": attr, "wall_ms_per_step": wall * 1e3 / n, "ops_ms_per_step": total / 1e3 / n,
            "gemm_share": gemm / total,
            "top": [{"op": k, "ms_per_step": t / 1e3 / n, "share": t / total, "calls_per_step": c / n}
                    for k, t, c in rows[:top]]}
