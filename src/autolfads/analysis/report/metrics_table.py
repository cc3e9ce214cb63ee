"""The metrics section: a table of every session's metrics, as `autolfads evaluate` computes them
from the written outputs (nothing is saved)."""

from __future__ import annotations

from autolfads.analysis.report.page import Section
from autolfads.analysis.report.run_files import RunFiles
from autolfads.errors import AutoLFADSError

__all__ = ["metrics_section"]


def metrics_section(run: RunFiles) -> Section:
    """A metric-by-session table once the outputs exist; a note instead if they cannot be read."""
    section = Section("Metrics")
    if not run.finished:
        section.notes.append("Computed from lfads_output_sess*.h5 once the run has written them.")
        return section
    from autolfads.analysis.evaluate import evaluate_run  # imports torch: only when needed

    try:
        results = evaluate_run(run.out)
    except AutoLFADSError as err:
        section.notes.append(f"Could not compute the metrics: {err}")
        return section
    section.table = _metrics_table(results)
    section.notes.append(
        "As `autolfads evaluate` computes them: nll per element, bits per spike (bps), "
        "co-bps / fp-bps on held-out channels / forward-prediction bins, rate R^2 against truth."
    )
    return section


def _metrics_table(results: dict[str, dict[str, float]]) -> list[list[str]]:
    """Rows of the table: a header (metric, then the sessions), then one row per metric name
    (sorted) with its value in each session to 4 decimals (nan where a session lacks it)."""
    sessions = list(results)
    names = sorted({n for metrics in results.values() for n in metrics})
    return [["metric", *sessions]] + [
        [n, *(f"{results[s].get(n, float('nan')):.4f}" for s in sessions)] for n in names
    ]
