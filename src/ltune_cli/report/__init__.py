"""`ltune compare`: paper-style tables, L-Tuning-minus-baseline intervals and convergence plots.

Reads run folders only (see `ltune_cli.runfolder`) and never imports torch or
transformers, so a report can be built on any machine that has the outputs/ folder.

    compare(paths, out_dir=None, *, metric=None, n_boot=2000, seed=0) -> {view: Path}
    render_console(report_paths, console)
"""

from __future__ import annotations

from ltune_cli.report.build import FILENAMES, compare, default_out_dir, is_sweep_folder
from ltune_cli.report.console import render_console

__all__ = ["FILENAMES", "compare", "default_out_dir", "is_sweep_folder", "render_console"]
