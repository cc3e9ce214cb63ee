"""The metrics section: a table of every session's metrics, as `autolfads evaluate` computes them
from the written outputs (nothing is saved)."""

from __future__ import annotations

from autolfads.analysis.report.page import Section
from autolfads.analysis.report.run_files import RunFiles
from autolfads.errors import AutoLFADSError

__all__ = ["metrics_section"]

SPLIT_LABELS = {
    "train": "train (fitted)",
    "valid": "valid (selected on)",
    "test": "test (held out)",
}
"""The split column of the table: each split with what its trials were used for."""


def metrics_section(run: RunFiles) -> Section:
    """A metric-by-session table once the outputs exist; a note instead if they cannot be read."""
    section = Section("Metrics")
    if not run.finished:
        section.notes.append("Computed from lfads_output_sess*.h5 once the run has written them.")
        return section
    # imports torch: only when needed
    from autolfads.analysis.evaluate import SPLIT_ROLES, evaluate_run, metric_order

    try:
        results = evaluate_run(run.out)
    except AutoLFADSError as err:
        section.notes.append(f"Could not compute the metrics: {err}")
        return section
    names = metric_order(n for metrics in results.values() for n in metrics)
    section.table = _metrics_table(results, names)
    section.notes.append(
        "As `autolfads evaluate` computes them: nll per element, bits per spike (bps), "
        "co-bps / fp-bps on held-out channels / forward-prediction bins, rate R^2 against truth, "
        "and with truth the true rates' bits/spike (truth_bps) and the fraction of it reached "
        "(bps_ratio)."
    )
    splits = [s for s in SPLIT_ROLES if any(n.startswith(f"{s}/") for n in names)]
    section.notes.append(
        "Each metric is named by the split of trials it scores: "
        + "; ".join(f"{s}: {SPLIT_ROLES[s]}" for s in splits)
        + "."
    )
    return section


def _metrics_table(results: dict[str, dict[str, float]], names: list[str]) -> list[list[str]]:
    """Rows of the table: a header (split, metric, then the sessions), then one row per metric
    name (in `names`' order) with its split (`SPLIT_LABELS`) and its value in each session to 4
    decimals (nan where a session lacks it)."""
    sessions = list(results)
    rows = [["split", "metric", *sessions]]
    for name in names:
        split = name.split("/")[0] if "/" in name else ""
        values = [f"{results[s].get(name, float('nan')):.4f}" for s in sessions]
        rows.append([SPLIT_LABELS.get(split, split), name, *values])
    return rows
