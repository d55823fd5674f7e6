"""The Markdown table written next to bench.json (same numbers, rounded)."""

from __future__ import annotations


def _f(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def _ms(s, nd=1, scale=1.0):
    """median (min-max) of a measure.summary dict."""
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median'] * scale:,.{nd}f} ({s['min'] * scale:,.{nd}f}-{s['max'] * scale:,.{nd}f})"


def render(res: dict) -> str:
    st = res["settings"]
    m = res["machine"]
    v = res["versions"]
    lines = [
        "# ltune bench",
        "",
        f"Command: `{res['command']}`  ",
        f"Created: {res['created']}, wall time {res['wall_s']:.0f} s  ",
        f"Machine: {m.get('processor')}, {m.get('cpu_count')} CPUs, torch threads {m.get('torch_threads')}, "
        f"device {m.get('device')}" + (f" ({m['gpu']})" if m.get("gpu") else "")
        + f", load average (1/5/15 min) at start {m.get('load_average_at_start')}, at end "
          f"{m.get('load_average_at_end')}  ",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "  ",
        f"Settings: {st['repeats']} repeats x {st['steps']} timed steps (after {st['warmup']} warm-up) per "
        f"variant, interleaved step by step (each round: every variant one step on the round's batch, the "
        f"random-batching row on its own); "
        f"eval {st['eval_texts'] or 'hardware.eval_batch_size'} texts x K labels, {st['eval_repeats']} repeats; "
        f"overrides {st['overrides'] or 'none'}  ",
        "Numbers: median (min-max) over repeats; ratios are per-repeat ratios (same repeat, "
        "same batches), then median (min-max).  ",
        f"FLOPs: {res['conventions']['flops']}",
        "",
    ]
    for mr in res["models"]:
        lines += _model(mr)
    return "\n".join(lines) + "\n"


def _model(mr: dict) -> list[str]:
    i = mr["info"]
    out = [f"## {i['model']} ({i['path']}: {i['family']}, {i['layers']} layers, d={i['hidden']}, "
           f"{i['params_total'] / 1e6:.1f}M parameters, N_matmul={i['params_matmul'] / 1e6:.1f}M)", "",
           f"{i['dataset']}, batch {i['batch_size']}, {i['dtype']} on {i['device']}; timed batches "
           f"(size, longest) {i['timed_batches']} (mean {i['timed_mean_tokens']:.1f} tokens; all train texts "
           f"{i['train_mean_tokens']:.1f}). "
           f"Dense matmul peak ({mr['matmul_peak_flops']['n']} probes, one before each round of steps): "
           f"{_ms(mr['matmul_peak_flops'], 1, 1e-9)} GFLOP/s; utilisation divides by its repeat's probes.",
           ""]
    mem = mr.get("memory") or {}
    out += ["### Training step (engine step: collate, loss, backward, clip, AdamW, schedule)", "",
            "| variant | label tokens | trainable | examples/s | ms/step | GFLOP/s | utilisation | "
            "peak RSS MiB | step MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in mr["train"]:
        if r["group"] != "main":
            continue
        if r.get("skipped"):
            out.append(f"| {r['key']} | | | skipped: {r['skipped']} | | | | | |")
            continue
        mm = r.get("memory") or {}
        peak = mm.get("cuda_max_allocated_mib", mm.get("peak_rss_mib"))
        out.append(f"| {r['key']} | {r['label_tokens'] or '-'} | {r['trainable_params']:,} | "
                   f"{_ms(r['examples_per_s'])} | {_ms(r['ms_per_step'], 0)} | "
                   f"{_ms(r['flops_per_s'], 1, 1e-9)} | {_ms(r['utilisation'], 2)} | {_f(peak, 0)} | "
                   f"{_f(mm.get('step_peak_mib'), 0)} |")
    whatif = [r for r in mr["train"] if r["group"] == "whatif" and not r.get("skipped") and r.get("examples_per_s")]
    if whatif:
        out += ["", "What-ifs (not what `ltune train` runs today):", "",
                "| variant | examples/s | ms/step | utilisation | first step(s) incl. compile, s |",
                "|---|---:|---:|---:|---:|"]
        for r in whatif:
            out.append(f"| {r['key']} | {_ms(r['examples_per_s'])} | {_ms(r['ms_per_step'], 0)} | "
                       f"{_ms(r['utilisation'], 2)} | {_f(r.get('warmup_s'), 1)} |")
    if mem.get("error"):
        out.append(f"\nMemory: {mem['error']}")
    elif mem:
        out.append(f"\nPeak RSS = a fresh process's runtime + data ({mem['rss_runtime_mib']:.0f} MiB) + frozen "
                   f"base ({mem['rss_backbone_mib']:.0f} MiB; PEFT rows load their own copy) + the variant's "
                   f"build and the peak over its {mem['steps']} longest timed steps (step MiB = that peak over the built state).")
    out += ["", "### Ratios (per repeat, same batches)", "", "| comparison | median (min-max) |", "|---|---:|"]
    for k, s in mr["ratios"].items():
        out.append(f"| {k} | {_ms(s, 2)} |")
    if mr["label_length"]:
        out += ["", "### Cached label states vs per-step re-encoding, by label-text length", "",
                "| method | label texts | label tokens | cached ex/s | re-encode ex/s | speed-up |",
                "|---|---|---:|---:|---:|---:|"]
        for p in mr["label_length"]:
            out.append(f"| {p['method']} | {p['label_texts']} | {p['label_tokens']} | "
                       f"{_f(p['cached_examples_per_s'])} | {_f(p['reencode_examples_per_s'])} | "
                       f"{_ms(p['speedup'], 2)} |")
    b = mr["batching"]
    out += ["", "### Batching (one full training epoch of batch orders; throughput on the timed batches)", "",
            "| batching | padded / real tokens | lt_prefix examples/s |", "|---|---:|---:|"]
    rows = {r["key"]: r for r in mr["train"]}
    for name, key in (("length-grouped (default)", "ltune lt_prefix"),
                      ("random", "ltune lt_prefix, random batches")):
        r = rows.get(key, {})
        out.append(f"| {name} | {b['grouped' if 'grouped' in name else 'random']['pad_ratio']:.3f} | "
                   f"{_ms(r.get('examples_per_s'))} |")
    out.append(f"\nThroughput gain of length grouping on the timed batches: {_ms(b['throughput_gain'], 2)}x "
               f"(the timed random batches are a small sample; the epoch padding ratio is exact).")
    if mr["eval"]:
        band = mr["info"]["eval_length_band"]
        out += ["", f"### Evaluation (engine.evaluate, inference mode: {mr['info']['eval_texts']} training texts of "
                f"{band[0]}-{band[1]} tokens, the band of the median timed training batch, x K labels, all "
                f"pairs in one batch)", "",
                "| method | K | label tokens | pairs/s | us/pair | utilisation (2*N*tokens) | train ex/s, same "
                "texts' lengths | pairs/s / train ex/s (per repeat) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for e in mr["eval"]:
            out.append(f"| {e['method']} | {e['K']} | {e.get('label_tokens') or '-'} | {_ms(e['pairs_per_s'])} | "
                       f"{_f(e['us_per_pair'], 0)} | "
                       f"{_ms(e.get('utilisation'), 2)} | {_f(e.get('train_examples_per_s_same_lengths'))} | "
                       f"{_ms(e['vs_train_examples_per_s'], 2)} |")
        out.append("\nprefix / prompt score all K labels with one K-way head (one forward per text whatever K): "
                   "timed at the smallest K only.")
    if mr.get("profile"):
        for key, p in mr["profile"].items():
            out += ["", f"### Profile of one step: {key} (batch {p['batch_shape'][0]} x {p['batch_shape'][1]} "
                    f"tokens; {p['wall_ms_per_step']:.0f} ms wall, {p['ops_ms_per_step']:.0f} ms in ops, "
                    f"GEMMs {100 * p['gemm_share']:.0f}% of op time)", "",
                    "| op | ms/step | share | calls/step |", "|---|---:|---:|---:|"]
            for t in p["top"][:10]:
                out.append(f"| {t['op']} | {t['ms_per_step']:.1f} | {100 * t['share']:.1f}% | "
                           f"{t['calls_per_step']:.0f} |")
    out += ["", "### Targets", "", "| target | goal | measured | pass |", "|---|---|---:|---|"]
    for t in mr["targets"]:
        p = {True: "yes", False: "**no**", None: "-"}[t["pass"]]
        out.append(f"| {t['target']} | {t['goal']} | {_f(t['measured'], 3)} | {p} |")
    out.append("")
    return out
