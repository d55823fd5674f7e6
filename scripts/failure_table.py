"""Write docs/failure-modes.md from tests/failure_cases.py: each case run for real through the CLI."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from typer.testing import CliRunner  # noqa: E402

from failure_cases import CASES  # noqa: E402
from ltune_cli.cli import app  # noqa: E402

EXTRA = [
    ("run", "SIGKILL at a random step", "`ltune train --resume <run>` continues from the newest complete "
     "checkpoint; final metrics bit-identical to an uninterrupted run", "test_engine::test_sigkill_then_resume_is_bit_identical"),
    ("run", "Ctrl-C / SIGTERM", "finishes the step, saves a checkpoint, prints how to resume, exit 130",
     "test_engine::test_sigint_saves_a_checkpoint_and_says_how_to_resume"),
    ("run", "kill during a checkpoint write", "temporary file + rename: the previous checkpoint stays the newest "
     "complete one; an unreadable newest file is skipped", "test_engine::test_kill_during_checkpoint_write_keeps_previous"),
    ("run", "non-finite loss", "stops naming the step and the last good checkpoint (or `train.on_nonfinite=skip`)",
     "test_engine::test_nonfinite_loss_stops_and_keeps_checkpoint"),
    ("run", "GPU out of memory", "names hardware.batch_size and the halved batch with doubled grad_accum",
     "test_engine::test_out_of_memory_names_batch_size_and_accumulation"),
    ("run", "disk full while checkpointing", "clear error; previous checkpoint intact",
     "test_engine::test_disk_full_while_checkpointing_is_a_clear_error"),
    ("run", "out_dir already holds a run", "refuses to overwrite; suggests --resume",
     "test_engine::test_existing_run_folder_is_never_overwritten"),
    ("model", "prefix method on DeBERTa-v2", "refuses: no key/value cache; suggests method=prompt/lt_prompt",
     "test_failures::test_prefix_methods_refuse_deberta_clearly"),
    ("data", "row longer than model.max_length", "truncated, with a count in the log",
     "test_failures::test_overlong_rows_are_truncated_and_counted"),
    ("data", "arbitrary bytes / CSV / TSV / JSONL shapes", "only LtuneError, never another exception (hypothesis)",
     "test_data_fuzz"),
]


def main() -> None:
    rows = ["| area | bad input | exit | what ltune prints |", "|---|---|---|---|"]
    for case in CASES:
        if case.applies is not None and not case.applies():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            r = CliRunner().invoke(app, case.args(Path(tmp)))
        msg = next((line for line in r.output.splitlines() if line.startswith("error:")), r.output.strip())
        msg = msg.replace(tempfile.gettempdir(), "/tmp").replace("|", "\\|")
        rows.append(f"| {case.area} | {case.what} | {r.exit_code} | `{msg}` |")
    rows += ["", "| area | failure | what ltune does | test |", "|---|---|---|---|"]
    rows += [f"| {a} | {w} | {d} | `{t}` |" for a, w, d, t in EXTRA]
    text = ("# Failure modes\n\nProduced by `python scripts/failure_table.py` from the cases that "
            "tests/test_failures.py and tests/test_engine.py run. Every bad input gives one line, exit code 2, "
            "and no traceback unless `--debug`.\n\n" + "\n".join(rows) + "\n")
    (ROOT / "docs" / "failure-modes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
