"""`compare`: read runs, compute the report once, write every view of it into one folder."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ltune_cli.paths import outputs_dir
from ltune_cli.report.analysis import analyse
from ltune_cli.report.html import to_html
from ltune_cli.report.load import load_runs
from ltune_cli.report.plots import plot_curves
from ltune_cli.report.tables import to_csv, to_latex, to_markdown
from ltune_cli.runfolder import atomic_write_text, find_run_dirs, is_run_dir, make_dir, write_json

FILENAMES = {
    "markdown": "report.md",
    "csv": "results.csv",
    "latex": "tables.tex",
    "html": "report.html",
    "curves_png": "curves.png",
    "curves_svg": "curves.svg",
    "curves_pdf": "curves.pdf",
    "json": "report.json",
}


def is_sweep_folder(path: str | Path) -> bool:
    """A folder that holds run folders but is neither a run itself nor the outputs/ root.

    Its report belongs next to its runs (`<sweep>/compare`); a report over a single run
    or over all of outputs/ gets its own timestamped folder instead.
    """
    p = Path(path)
    if not p.is_dir() or is_run_dir(p):
        return False
    if p.resolve() == outputs_dir().resolve():
        return False
    return bool(find_run_dirs(p))


def default_out_dir(paths: list[str | Path]) -> Path:
    """`<first path>/compare` for a sweep folder, else `outputs/compare-<YYYYmmdd-HHMMSS>`."""
    first = Path(paths[0])
    if is_sweep_folder(first):
        return first / "compare"
    return outputs_dir() / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def compare(
    paths: list[str],
    out_dir: str | None = None,
    *,
    metric: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Path]:
    """Read run folders (or sweep folders / outputs/ trees containing them), write the report.

    Returns {"markdown", "csv", "latex", "html", "curves_png", "curves_svg", "curves_pdf", "json"} -> path.
    Raises LtuneError for unreadable or incomparable inputs before writing anything.
    """
    paths = [str(p) for p in paths]
    runs, notes = load_runs(paths)
    rep = analyse(runs, paths, metric=metric, n_boot=n_boot, seed=seed, notes=notes)
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths)
    make_dir(out, f"--out {out}" if out_dir is not None else f"the report folder {out}",
             "choose a writable folder with --out")
    files = {k: out / name for k, name in FILENAMES.items()}
    plot_curves(rep.curves, files["curves_png"], files["curves_svg"], files["curves_pdf"])
    curves = {k.removeprefix("curves_"): files[k] for k in ("curves_png", "curves_svg", "curves_pdf")}
    atomic_write_text(files["markdown"], to_markdown(rep, {k: p.name for k, p in curves.items()}))
    atomic_write_text(files["csv"], to_csv(rep))
    atomic_write_text(files["latex"], to_latex(rep))
    atomic_write_text(files["html"], to_html(rep, curves))
    write_json(files["json"], rep.to_json())
    return files
