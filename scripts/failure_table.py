"""Write docs/failure-modes.md from tests/failure_cases.py: each case run for real through the CLI."""

from __future__ import annotations

import contextlib
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
    ("run", "`--resume` by another spelling of the folder (default out_dir, relative, symlink, `x/../run`)",
     "the stored out_dir is the resolved folder and is not compared; any path to it resumes",
     "test_runfolder::test_any_path_to_the_folder_resumes_it"),
    ("run", "Ctrl-C a run with the default out_dir", "the printed `ltune train --resume ...` command, run as printed, "
     "finishes the run", "test_runfolder::test_ctrl_c_then_the_printed_command_finishes_the_run"),
    ("run", "README's `ltune train hardware=ddp hardware.nproc=2` without out_dir",
     "the launcher makes and locks one folder under outputs/ and hands it to both workers",
     "test_runfolder::test_readme_ddp_command_without_out_dir"),
    ("run", "two ltune processes on one run folder", "the second exits 2 naming the first's pid and host; the lock "
     "(flock) dies with its process, so a SIGKILLed run resumes", "test_runfolder::test_one_writer_per_run_folder"),
    ("run", "SIGHUP / SIGTERM in the training loop; a second Ctrl-C", "checkpoint and the resume command; a second "
     "signal stops at once and still prints it", "test_runfolder::test_sighup_checkpoints_and_second_signal_still_says_how"),
    ("run", "stale `*.tmp` files from a kill", "removed when the run is resumed",
     "test_runfolder::test_stale_temporaries_are_removed_on_resume"),
    ("run", "files of run folders and reports", "0666/0777 less the umask (0644 under umask 022), not mkstemp's 0600",
     "test_runfolder::test_files_respect_the_umask"),
    ("model", "prefix method on DeBERTa-v2", "refuses: no key/value cache; suggests method=prompt/lt_prompt",
     "test_failures::test_prefix_methods_refuse_deberta_clearly"),
    ("data", "row longer than model.max_length", "truncated, with a count in the log",
     "test_failures::test_overlong_rows_are_truncated_and_counted"),
    ("data", "arbitrary bytes / CSV / TSV / JSONL shapes", "only LtuneError, never another exception (hypothesis)",
     "test_data_fuzz"),
    # --- issue 10: inputs and config
    ("run", "same seed and config on machines with different core counts (default hardware=cpu)",
     "bit-identical weights, metrics and scores: the preset fixes hardware.num_threads=1",
     "test_engine::test_default_cpu_preset_is_bit_identical_whatever_the_machine_thread_count"),
    ("run", "a logging window whose every batch `train.on_nonfinite=skip` skipped", "train_loss null, not 0.0",
     "test_engine::test_nonfinite_loss_skip_mode_completes"),
    ("run", "a NaN or infinite score", "written as null: results.json and metrics.jsonl are strict JSON",
     "test_engine::test_json_files_are_strict_json"),
    ("data", "L-Tuning label texts with near-identical frozen states", "a warning naming both and their cosine",
     "test_methods::test_labels_with_near_identical_frozen_states_warn_with_the_cosine"),
    ("data", "a stray id among label texts in either file", "labels read for train and eval together; the value "
     "that fits neither reading is an error at its file and line", "test_data::test_files_labels_are_read_for_train_and_eval_together"),
    # --- issue 13: export
    ("export", "a model whose cache PEFT would lay out otherwise", "the adapter is loaded back with PEFT before it "
     "is kept; other logits than ltune's: refused, exit 2, nothing written", "test_export::test_a_refused_export_leaves_nothing"),
]


def main() -> None:
    rows = ["| area | bad input | exit | what ltune prints |", "|---|---|---|---|"]
    for case in CASES:
        if case.applies is not None and not case.applies():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["LTUNE_OUTPUTS"] = f"{tmp}/outputs"  # as the test sets it; a case's `around` may change it
            with case.around(Path(tmp)) if case.around else contextlib.nullcontext():
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
