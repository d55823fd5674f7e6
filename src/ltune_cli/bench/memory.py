"""Child process of `ltune bench`: peak memory of each training variant from one clean state.

    python -m ltune_cli.bench.memory SPEC.json OUT.json

Started with MALLOC_MMAP_THRESHOLD_ set, so large blocks are unmapped when freed and RSS
follows live memory. For each variant: RSS before building it, after building it, and the
peak (sampled every 0.5 ms) during `len(batches)` training steps. The reported peak is what
a fresh `ltune train` process would reach: the runtime and data (measured before any model
is loaded), plus the frozen base (ltune variants; PEFT loads its own copy, counted in its
build), plus the variant's own build and step peak. On CUDA: max_memory_allocated likewise.
"""

from __future__ import annotations

import gc
import json
import sys


def main(spec_path: str, out_path: str) -> None:
    import numpy as np
    import torch

    from ltune_cli.batching import encode_examples
    from ltune_cli.bench import measure
    from ltune_cli.bench.variants import LtuneTrain, PeftTrain
    from ltune_cli.config import compose
    from ltune_cli.data import load_splits
    from ltune_cli.engine import autocaster
    from ltune_cli.models.backbone import DTYPES, load_backbone

    spec = json.loads(open(spec_path).read())
    if spec.get("num_threads"):
        torch.set_num_threads(spec["num_threads"])
    base = spec["overrides"]
    cfg0 = compose(base)
    data = load_splits(cfg0.dataset)
    # Only the texts the steps use are tokenised (renumbered 0..n-1).
    used = sorted({i for b in spec["batches"] for i in b})
    remap = {i: j for j, i in enumerate(used)}
    batches = [np.asarray([remap[i] for i in b]) for b in spec["batches"]]
    gc.collect()
    rss_runtime = measure.rss_bytes()
    backbone = load_backbone(cfg0.model, cfg0.hardware)
    _touch(backbone.model)
    device = backbone.device
    cuda = device.type == "cuda"
    enc = encode_examples([data.train[i] for i in used], backbone.tokenizer, cfg0.model.max_length)
    gc.collect()
    rss_backbone = measure.rss_bytes() - rss_runtime
    cuda_backbone = torch.cuda.memory_allocated(device) if cuda else 0
    dtype = DTYPES[cfg0.hardware.dtype]
    autocast = autocaster(device, cfg0.hardware.dtype)
    out = {"rss_runtime_mib": rss_runtime / 2**20, "rss_backbone_mib": rss_backbone / 2**20,
           "steps": len(batches), "variants": {}}
    for v in spec["variants"]:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        r0 = measure.rss_bytes()
        c0 = torch.cuda.memory_allocated(device) if cuda else 0
        cfg = compose(base + v["overrides"])
        if v["kind"] == "peft":
            runner = PeftTrain(v["peft"], cfg, backbone, spec["num_labels"], enc, device, dtype, autocast)
            _touch(runner.model)
            floor = rss_runtime  # PEFT loads its own copy of the weights: counted in its build
            cfloor = 0
        else:
            runner = LtuneTrain(cfg, backbone, v["label_texts"], enc, device, autocast)
            floor = rss_runtime + rss_backbone
            cfloor = cuda_backbone
        r1 = measure.rss_bytes()
        with measure.PeakRSS() as peak:
            for b in batches:
                runner.step(b)
        row = {"build_mib": (r1 - r0) / 2**20, "step_peak_mib": (peak.peak - r1) / 2**20,
               "peak_rss_mib": (floor + peak.peak - r0) / 2**20}
        if cuda:
            row["cuda_max_allocated_mib"] = (cfloor + torch.cuda.max_memory_allocated(device) - c0) / 2**20
        out["variants"][v["key"]] = row
        del runner
    out["ru_maxrss_mib"] = _ru_maxrss() / 2**20
    with open(out_path, "w") as f:
        json.dump(out, f)


def _touch(model) -> None:
    """Read every weight once. safetensors loads are memory-mapped: pages count in RSS only when
    first touched, which would otherwise land in the step of whichever variant runs first."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.sum()


def _ru_maxrss() -> int:
    import platform
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
