"""Making the report: `make_report` (figures and page into OUT/report/), the `autolfads report OUT`
command and `report_at_end`, the report that `run`, `train` and `demo` make when they finish."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from autolfads._atomic import atomic_path
from autolfads.analysis.report.log_sections import (
    hyperparameters_section,
    overview_section,
    training_section,
)
from autolfads.analysis.report.metrics_table import metrics_section
from autolfads.analysis.report.page import Section, render_html
from autolfads.analysis.report.run_files import RunFiles, read_run
from autolfads.analysis.report.session_sections import session_sections

__all__ = ["REPORT_DIR", "make_report", "report_command", "report_at_end"]

REPORT_DIR = "report"
INDEX_NAME = "index.html"


def make_report(out_dir: str | Path) -> Path:
    """Write OUT/report/*.png and OUT/report/index.html for the run in `out_dir`.

    Works on a finished run and on one still training (only the logs exist yet).

    Returns:
        The path of index.html.

    Raises:
        UsageError: `out_dir` is not a run folder with a fit log (nothing to report).
    """
    run = read_run(out_dir)
    sections = _sections(run)
    folder = run.out / REPORT_DIR
    _write_figures(folder, sections)
    index = folder / INDEX_NAME
    with atomic_path(index) as tmp:
        tmp.write_text(render_html(run.out, sections), encoding="utf-8")
    return index


def _sections(run: RunFiles) -> list[Section]:
    """The page's sections in order: overview, training, hyperparameters, sessions, metrics."""
    sections = [overview_section(run), training_section(run), hyperparameters_section(run)]
    sections.extend(session_sections(run))
    sections.append(metrics_section(run))
    return sections


def _write_figures(folder: Path, sections: Sequence[Section]) -> None:
    """Write every section's PNG into `folder` and remove the PNGs of an earlier report that this
    one lacks."""
    written = set()
    for section in sections:
        for name, _, png in section.figures:
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(png)
            written.add(name)
    for stale in folder.glob("*.png"):
        if stale.name not in written:
            stale.unlink()


def report_command(args: argparse.Namespace) -> int:
    """`autolfads report OUT`: make the report and say where it is. Returns the exit status."""
    index = make_report(args.out)
    print(f"wrote {index}")
    return 0


def report_at_end(out: str | Path, quiet: bool = False) -> Path | None:
    """Make the report at the end of `run`, `train` or `demo`, after the outputs are written.

    A failure must not lose the run: it prints one warning line on stderr and returns None.
    """
    try:
        index = make_report(out)
    except Exception as err:  # the run's outputs are complete; the report is only a view of them
        message = " ".join(str(err).split())
        print(
            f"warning: no report ({type(err).__name__}: {message}); "
            f"the outputs are complete, retry with `autolfads report {out}`",
            file=sys.stderr,
        )
        return None
    if not quiet:
        print(f"report: {index}")
    return index
