"""What `ltune bench` measures and how long it takes: the default and the --quick preset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class BenchSettings:
    models: list[str] = field(default_factory=lambda: ["minilm", "smollm2_135m"])
    overrides: list[str] = field(default_factory=list)  # Hydra overrides applied to every config
    steps: int = 3  # timed training steps per variant per repeat (the same batches every repeat)
    warmup: int = 1  # untimed steps per variant before the first repeat
    repeats: int = 3  # interleaved repeats (median and spread are over these)
    label_lens: list[int] = field(default_factory=lambda: [4, 16])  # descriptive label texts
    eval_ks: list[int] = field(default_factory=lambda: [2, 5, 20])
    eval_texts: int | None = None  # texts per eval pass (x K pairs); None: hardware.eval_batch_size
    eval_repeats: int = 3
    peft: bool = True
    memory: bool = True  # peak memory, measured in a child process after the timings
    memory_steps: int = 2
    profile: bool = True
    compile: bool = False  # also time prefix / lt_prefix on a torch.compile'd base (slow to compile)
    probe_n: int | None = None  # matmul probe size (None: 2048 on CPU, 8192 on CUDA)
    quick: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def quick(models: list[str] | None = None, overrides: list[str] | None = None) -> BenchSettings:
    """A few steps on a small text sample: checks the whole command end to end in seconds."""
    return BenchSettings(models=models or ["minilm"],
                         overrides=["dataset.train_limit=512", "hardware.num_threads=1", *(overrides or [])],
                         steps=2, warmup=1, repeats=2, label_lens=[4], eval_ks=[2, 5], eval_texts=8,
                         eval_repeats=1, memory_steps=1, probe_n=256, quick=True)
