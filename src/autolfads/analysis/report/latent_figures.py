"""Latent figures: factor and generator-state trajectories in their top principal components, and
the inferred inputs (controller outputs) over time.

Shape legend: B trials, T bins, D latent dimensions (F factors or H generator units), C principal
components, U inferred inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from autolfads.analysis.report.canvas import panels

__all__ = ["pca_projection", "latent_trajectories_figure", "inputs_figure"]

PCA_MAX_POINTS = 20_000  # (trial, bin) points used to fit the principal components
MAX_LEGEND_CONDITIONS = 10  # a legend of conditions when there are at most this many


def pca_projection(
    points: np.ndarray, n_components: int = 3, max_points: int = PCA_MAX_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of (B, T, D) trajectories.

    The components are the singular vectors of the (D, D) scatter matrix of the centred points
    (the same as those of the (B*T, D) point matrix, and far cheaper for many points). At most
    `max_points` evenly spaced points are used for the fit.

    Returns:
        (mean (D,), components (C, D), explained variance fraction (C,)), C = min(n_components, D).
    """
    flat = points.reshape(-1, points.shape[-1]).astype(np.float64)
    flat = flat[np.all(np.isfinite(flat), axis=1)]
    step = max(1, len(flat) // max_points)
    flat = flat[::step]
    mean = flat.mean(axis=0)
    centred = flat - mean
    _, variance, vt = np.linalg.svd(centred.T @ centred)  # variance: (D,) descending
    n = min(n_components, vt.shape[0])
    explained = variance[:n] / variance.sum() if variance.sum() > 0 else np.zeros(n)
    return mean, vt[:n], explained


def latent_trajectories_figure(
    latents: Mapping[str, np.ndarray],
    conditions: np.ndarray | None = None,
    *,
    max_trials: int = 40,
) -> Figure:
    """Trajectories in their top principal components, one row per latent (e.g. factors,
    generator states), coloured by condition when known (else by trial).

    Args:
        latents: name -> (B, T, D) trajectories (D = F factors or H generator units); the
            components are fitted on all B trials.
        conditions: (B,) condition label of each trial, or None.
        max_trials: trials drawn, spread evenly over the trials sorted by condition.
    """
    n_trials = next(iter(latents.values())).shape[0]
    drawn = _drawn_trials(n_trials, conditions, max_trials)
    fig, axes = panels(len(latents), 2, 3.6, 3.0, top=0.7, wgap=0.9)
    colours, how = _trial_colours(len(drawn), None if conditions is None else conditions[drawn])
    for row, (name, points) in enumerate(latents.items()):
        mean, components, explained = pca_projection(points)
        projected = (points[drawn] - mean) @ components.T  # (B_drawn, T, C)
        if components.shape[0] >= 2:
            used = _component_pairs(axes[row], name, projected, explained, colours)
        else:  # a single dimension: its time course
            used = _time_course(axes[row, 0], name, projected, colours)
        for ax in axes[row, used:]:
            ax.set_axis_off()
    if conditions is not None and len(np.unique(conditions)) <= MAX_LEGEND_CONDITIONS:
        _condition_legend(axes[0, 0], conditions[drawn], colours)
    fig.suptitle(f"{len(colours)} trials, coloured by {how}; dots mark the first bin", fontsize=9)
    return fig


def _drawn_trials(n_trials: int, conditions: np.ndarray | None, max_trials: int) -> np.ndarray:
    """At most `max_trials` trial indices, spread evenly over the trials sorted by condition."""
    order = np.arange(n_trials) if conditions is None else np.argsort(conditions, kind="stable")
    return order[np.unique(np.linspace(0, n_trials - 1, min(n_trials, max_trials)).astype(int))]


def _component_pairs(
    axes: Sequence[Axes], name: str, projected: np.ndarray, explained: np.ndarray, colours: list
) -> int:
    """PC1 vs PC2 (and PC2 vs PC3 if there is a third) of (B, T, C) projected trajectories, a dot
    at each first bin; returns the number of axes used."""
    pairs = [(0, 1), (1, 2)] if projected.shape[-1] >= 3 else [(0, 1)]
    for ax, (i, j) in zip(axes, pairs, strict=False):
        ax.add_collection(LineCollection(projected[:, :, [i, j]], colors=colours, lw=0.8))
        ax.scatter(projected[:, 0, i], projected[:, 0, j], s=6, c=colours, zorder=3)
        ax.autoscale_view()
        ax.set_xlabel(f"PC{i + 1} ({explained[i]:.0%})")
        ax.set_ylabel(f"PC{j + 1} ({explained[j]:.0%})")
        ax.set_title(f"{name}: PC{i + 1} vs PC{j + 1}", fontsize=9)
    return len(pairs)


def _time_course(ax: Axes, name: str, projected: np.ndarray, colours: list) -> int:
    """The only component of (B, T, 1) projected trajectories over time; returns 1 axis used."""
    t = np.broadcast_to(np.arange(projected.shape[1]), projected.shape[:2])
    traces = np.stack([t, projected[:, :, 0]], axis=-1)  # (B, T, 2)
    ax.add_collection(LineCollection(traces, colors=colours, lw=0.8))
    ax.autoscale_view()
    ax.set_xlabel("time bin")
    ax.set_title(f"{name} over time", fontsize=9)
    return 1


def _condition_legend(ax: Axes, conditions: np.ndarray, colours: list) -> None:
    """A legend entry per condition of the drawn trials, in the colour of its first trial."""
    labels, first = np.unique(conditions, return_index=True)
    handles = [Line2D([], [], color=colours[i]) for i in first]
    ax.legend(handles, [str(c) for c in labels], title="condition", fontsize=7)


def _trial_colours(n_trials: int, conditions: np.ndarray | None) -> tuple[list, str]:
    """A colour per trial (by condition if known: tab10 for up to 10, else hsv; by trial order
    otherwise: viridis) and what the colour encodes."""
    if conditions is None:
        cmap = colormaps["viridis"]
        return [cmap(i / max(n_trials - 1, 1)) for i in range(n_trials)], "trial"
    labels, index = np.unique(np.asarray(conditions), return_inverse=True)
    palette = colormaps["tab10"].colors
    if len(labels) <= len(palette):
        return [palette[i] for i in index], "condition"
    cmap = colormaps["hsv"]
    return [cmap(i / len(labels)) for i in index], "condition"


def inputs_figure(
    co_means: np.ndarray,
    co_stds: np.ndarray | None = None,
    *,
    trial_ids: Sequence[int],
    max_inputs: int = 6,
) -> Figure:
    """Inferred inputs (controller output posterior means, +- one posterior s.d.) of a few trials.

    Args:
        co_means: (B, T, U) posterior means of the inferred inputs.
        co_stds: (B, T, U) posterior standard deviations, or None.
        trial_ids: the B trials' indices in their split.
        max_inputs: draw at most this many of the U inputs.
    """
    n_trials, _, n_inputs = co_means.shape
    fig, grid = panels(n_trials, 1, 8.0, 1.3, hgap=0.45, sharex=True)
    axes = grid[:, 0]
    for ax, b, trial in zip(axes, range(n_trials), trial_ids, strict=True):
        _trial_inputs(ax, co_means[b], None if co_stds is None else co_stds[b], max_inputs)
        ax.set_title(f"trial {trial}", fontsize=9)
    axes[0].legend(fontsize=7, ncols=min(n_inputs, max_inputs))
    axes[-1].set_xlabel("time bin")
    return fig


def _trial_inputs(ax: Axes, means: np.ndarray, stds: np.ndarray | None, max_inputs: int) -> None:
    """One trial's (T, U) input means over time, each in a +- 1 s.d. band if `stds` is given."""
    palette = colormaps["tab10"].colors
    t = np.arange(means.shape[0])
    for u in range(min(means.shape[1], max_inputs)):
        colour = palette[u % len(palette)]
        ax.plot(t, means[:, u], color=colour, lw=1.2, label=f"input {u}")
        if stds is not None:
            low, high = means[:, u] - stds[:, u], means[:, u] + stds[:, u]
            ax.fill_between(t, low, high, color=colour, alpha=0.2, lw=0)
