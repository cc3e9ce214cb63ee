"""Training-curve figures from `fitlog.csv`: reconstruction costs of every worker over epochs, the
best worker's smoothed validation cost, and the validation metrics (rate R^2, bits per spike).

Shape legend: K workers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from autolfads.analysis.report.canvas import finite_or_nan, panels, wants_log_axis, worker_colours

__all__ = ["training_curves_figure", "validation_metrics_figure"]

MAX_LEGEND_WORKERS = 8
VALIDATION_METRICS = ("valid/r2", "valid/bps")
SMOOTHED_COST = "valid/recon_smth"


def training_curves_figure(fitlog: pd.DataFrame) -> Figure:
    """train/recon and valid/recon of every worker over epochs, and the best worker's
    valid/recon_smth (best at each epoch and best so far).

    Args:
        fitlog: the rows of `fitlog.csv` (one per worker per epoch).
    """
    fig, grid = panels(1, 3, 3.6, 2.8)
    axes = grid[0]
    colours = _colours_by_worker(fitlog)
    for ax, column in zip(axes[:2], ("train/recon", "valid/recon"), strict=True):
        _per_worker_curves(ax, fitlog, column, colours)
    _best_so_far_panel(axes[2], fitlog)
    if 1 < len(colours) <= MAX_LEGEND_WORKERS:
        axes[0].legend(fontsize=7, ncols=2)
    for ax in axes:
        _mark_generations(ax, fitlog)
    return fig


def validation_metrics_figure(fitlog: pd.DataFrame) -> Figure | None:
    """valid/r2 (rates vs truth) and valid/bps of every worker over epochs, or None if the fit
    log has neither."""
    columns = [
        c
        for c in VALIDATION_METRICS
        if c in fitlog and np.isfinite(fitlog[c].to_numpy(float)).any()
    ]
    if not columns:
        return None
    fig, grid = panels(1, len(columns), 3.6, 2.6)
    axes = grid[0]
    colours = _colours_by_worker(fitlog)
    for ax, column in zip(axes, columns, strict=True):
        _per_worker_curves(ax, fitlog, column, colours, log_allowed=False)
        _mark_generations(ax, fitlog)
    return fig


def _colours_by_worker(fitlog: pd.DataFrame) -> dict:
    """Worker id -> its line colour, for the K workers of the fit log in id order."""
    workers = sorted(fitlog["worker_id"].unique())
    return dict(zip(workers, worker_colours(len(workers)), strict=True))


def _per_worker_curves(
    ax: Axes, fitlog: pd.DataFrame, column: str, colours: Mapping, log_allowed: bool = True
) -> None:
    """One line per worker of `column` over epochs (log axis if allowed and over a decade)."""
    ax.set_title(column)
    ax.set_xlabel("epoch")
    if column not in fitlog:
        ax.text(0.5, 0.5, f"no {column} in fitlog.csv", ha="center", transform=ax.transAxes)
        return
    for worker, rows in fitlog.sort_values("epoch").groupby("worker_id"):
        ax.plot(
            rows["epoch"],
            finite_or_nan(rows[column]),
            color=colours[worker],
            lw=1,
            alpha=0.85,
            label=f"worker {worker}",
        )
    if log_allowed and wants_log_axis(fitlog[column].to_numpy(float)):
        ax.set_yscale("log")


def _best_so_far_panel(ax: Axes, fitlog: pd.DataFrame) -> None:
    """The lowest valid/recon_smth of any worker at each epoch, its running minimum and a star
    at the best worker's best epoch."""
    ax.set_title(f"{SMOOTHED_COST}: best worker")
    ax.set_xlabel("epoch")
    values = _finite_column(fitlog, SMOOTHED_COST)
    if values.isna().all():
        ax.text(0.5, 0.5, f"no finite {SMOOTHED_COST} yet", ha="center", transform=ax.transAxes)
        return
    per_epoch = values.groupby(fitlog["epoch"]).min()
    ax.plot(per_epoch.index, per_epoch.to_numpy(), color="0.6", lw=1, label="best at each epoch")
    ax.step(per_epoch.index, per_epoch.cummin().to_numpy(), where="post", lw=2, label="best so far")
    _star_the_best(ax, fitlog, values)
    ax.legend(fontsize=8)
    if wants_log_axis(per_epoch.to_numpy()):
        ax.set_yscale("log")


def _finite_column(fitlog: pd.DataFrame, column: str) -> pd.Series:
    """`column` as floats with NaN where it is not finite (all NaN if the log lacks it)."""
    raw = fitlog[column].astype(float) if column in fitlog else pd.Series(np.nan, fitlog.index)
    return raw.where(np.isfinite(raw))


def _star_the_best(ax: Axes, fitlog: pd.DataFrame, values: pd.Series) -> None:
    """A star at the lowest of `values`, labelled with its worker, epoch and value."""
    best = fitlog.loc[values.idxmin()]
    ax.plot(best["epoch"], values.min(), "*", color="crimson", ms=11)
    ax.annotate(
        f"worker {int(best['worker_id'])}, epoch {int(best['epoch'])}: {values.min():.4g}",
        (best["epoch"], values.min()),
        textcoords="offset points",
        xytext=(-4, 8),
        ha="right",
        fontsize=8,
    )


def _mark_generations(ax: Axes, fitlog: pd.DataFrame) -> None:
    """Faint vertical lines where a PBT generation starts."""
    if "generation" not in fitlog or fitlog["generation"].nunique() < 2:
        return
    starts = fitlog.groupby("generation")["epoch"].min().to_numpy()[1:]
    for epoch in starts:
        ax.axvline(epoch - 0.5, color="0.85", lw=0.8, zorder=0)
