"""`ltune predict <run> --input file`: a label and one score per label for each new text.

The run is loaded as `ltune eval` loads it (evaluate.load_run_config, engine.build_model,
runfolder.load_trainable) and texts are scored as evaluation scores them (tokenised once,
length-sorted batches, `method.scores`, argmax). The texts are read like a dataset=files split
(data.tables, data.examples): CSV/TSV/JSON lines, by extension; `-` reads standard input (JSON
lines when its first character is `{`, else CSV, TSV when the header has a tab). The columns are
the run's dataset.text_column (and text_pair_column for pair datasets such as RTE), or
--text-column / --pair-column.

Output, in input order: the text column(s), `label` (a label text) and `score_<label>` for every
label (the method's scores: K-way logits for prefix/prompt, pair logits for L-Tuning; the
label is their argmax). CSV/TSV/JSON lines by the output's extension; `-` (the default) writes
the input's format to standard output.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ltune_cli import loggers, runfolder
from ltune_cli.data.tables import FORMATS
from ltune_cli.errors import LtuneError


def read_input(source: str, text_column: str, pair_column: str | None) -> tuple[list[tuple[str, ...]], str]:
    """(texts per row, format) of `source`, a file or `-` (standard input)."""
    from ltune_cli.data.examples import read_texts
    from ltune_cli.data.tables import read_table

    keyed = [("--text-column", text_column)] + ([("--pair-column", pair_column)] if pair_column else [])
    if source == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        head = data.lstrip()[:1]
        first_line = data.split(b"\n", 1)[0]
        suffix = ".jsonl" if head == b"{" else ".tsv" if b"\t" in first_line else ".csv"
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"stdin{suffix}"
            path.write_bytes(data)
            return read_texts(read_table(path, source="<stdin>"), keyed), FORMATS[suffix]
    path = Path(source).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise LtuneError(f"--input {path}: unknown file type '{path.suffix or '(none)'}'; use one of "
                         f"{', '.join(FORMATS)}, or - for standard input.")
    if not path.is_file():
        raise LtuneError(f"--input {path}: no such file (relative paths start at {Path.cwd()}).")
    return read_texts(read_table(path), keyed), FORMATS[path.suffix.lower()]


def output_format(output: str | None, input_fmt: str) -> str:
    if output in (None, "-"):
        return input_fmt
    suffix = Path(output).suffix.lower()
    if suffix not in FORMATS:
        raise LtuneError(f"--output {output}: unknown file type '{suffix or '(none)'}'; use one of "
                         f"{', '.join(FORMATS)}, or - for standard output.")
    return FORMATS[suffix]


def predict(run, source: str, output: str | None = None, overrides=(), *, batch_size: int | None = None,
            text_column: str | None = None, pair_column: str | None = None, backbone=None,
            console=None) -> tuple[list[dict], str]:
    """Score every text of `source` with `run`; returns (rows, output format). Writes `output`
    (a file; None or `-`: standard output). `overrides`: where the base runs (RUNTIME_KEYS)."""
    import torch

    from ltune_cli import engine
    from ltune_cli.batching import collate, encode_examples, eval_batches
    from ltune_cli.data import Example
    from ltune_cli.evaluate import RUNTIME_KEYS, load_run_config

    cfg, _ = load_run_config(run, list(overrides or ()), RUNTIME_KEYS, "predict")
    if batch_size is not None and batch_size < 1:
        raise LtuneError(f"--batch-size {batch_size}: give a positive number of texts per batch.")
    ds = cfg.dataset
    text_column = text_column or str(ds.text_column)
    pair_column = pair_column or (str(ds.text_pair_column) if ds.text_pair_column else None)
    rows, in_fmt = read_input(source, text_column, pair_column)
    fmt = output_format(output, in_fmt)
    hw = cfg.hardware
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)
    label_texts = [str(t) for t in ds.label_texts]
    backbone, method = engine.build_model(cfg, label_texts, backbone=backbone)
    runfolder.load_trainable(method, Path(run))
    method.eval()
    examples = [Example(r[0], 0, r[1] if len(r) > 1 else None) for r in rows]
    enc = encode_examples(examples, backbone.tokenizer, cfg.model.max_length, what=f"--input {source}")
    scores = np.zeros((len(enc), len(label_texts)), dtype=np.float32)
    autocast = engine.autocaster(backbone.device, hw.dtype)
    batches = eval_batches(enc.lengths, batch_size or hw.eval_batch_size)
    # eval's progress (standard error: standard output may carry the predictions): a bar in a
    # terminal, a plain line every ~10% of the batches elsewhere.
    with loggers.eval_progress(console, "predict") as on_batch, torch.inference_mode():
        for done, idx in enumerate(batches, 1):
            batch = collate(enc, idx, backbone.pad_id, backbone.padding_side, backbone.device)
            with autocast():
                scores[idx] = method.scores(batch).float().cpu().numpy()
            on_batch(done, len(batches))
    columns = [text_column] + ([pair_column] if pair_column else [])
    out = []
    for texts, s in zip(rows, scores):
        rec = dict(zip(columns, texts))
        rec["label"] = label_texts[int(s.argmax())]
        rec.update({f"score_{t}": float(v) for t, v in zip(label_texts, s)})
        out.append(rec)
    write(out, output, fmt)
    return out, fmt


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",",
                       lineterminator="\n", **({"quoting": csv.QUOTE_NONE, "escapechar": "\\"} if fmt == "tsv" else {}))
    w.writeheader()
    w.writerows([{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
    return buf.getvalue()


def write(rows: list[dict], output: str | None, fmt: str) -> None:
    text = render(rows, fmt)
    if output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        runfolder.atomic_write_text(Path(output), text)
    except OSError as e:
        raise LtuneError(f"--output {output}: cannot write ({runfolder.os_reason(e)}).") from None
