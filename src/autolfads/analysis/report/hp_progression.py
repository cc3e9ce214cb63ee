"""Hyperparameter progressions: each worker's HP values over generations (from `pbt_history.csv`)
or epochs (from `fitlog.csv`), the exploit events, and their figure.

Shape legend: K workers, G generations, X points on a progression's x axis (epochs or generations).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from autolfads.analysis.report.canvas import grid_shape, panels, worker_colours

__all__ = ["HPProgression", "hp_progression_figure"]


@dataclass
class HPProgression:
    """Hyperparameter values of every worker along a progression (epochs or generations).

    Attributes:
        x: (X,) epochs or generations.
        workers: the K worker ids, in the column order of `values`.
        values: HP name -> (X, K) value of each worker at each point (NaN where unknown).
        exploits: (i, worker, source) triples: at x[i] `worker` had just copied `source` (by id).
        xlabel: "epoch" or "generation".
    """

    x: np.ndarray
    workers: list[int]
    values: dict[str, np.ndarray]
    exploits: list[tuple[int, int, int]] = field(default_factory=list)
    xlabel: str = "generation"

    @classmethod
    def from_history(cls, history: pd.DataFrame) -> HPProgression:
        """From `pbt_history.csv`: the HPs each worker trained with in every generation, then the
        values after the last exploit/explore; exploits where `copied_from` is another worker."""
        generations = np.sort(history["generation"].unique())
        workers = sorted(int(w) for w in history["worker_id"].unique())
        values = _values_per_generation(history, generations, workers)
        x = np.append(generations, generations[-1] + 1) if len(generations) else generations
        copied = _worker_table(history, "generation", generations, workers, "copied_from")
        return cls(x, workers, values, _exploits_per_generation(copied, workers), "generation")

    @classmethod
    def from_fitlog(cls, fitlog: pd.DataFrame) -> HPProgression:
        """From `fitlog.csv`: each worker's `hp/<name>` columns per epoch; an exploit at the first
        epoch of a generation whose `copied_from` is another worker."""
        epochs = np.sort(fitlog["epoch"].unique())
        workers = sorted(int(w) for w in fitlog["worker_id"].unique())
        values = {
            c[len("hp/") :]: _worker_table(fitlog, "epoch", epochs, workers, c)
            for c in fitlog.columns
            if c.startswith("hp/")
        }
        return cls(epochs, workers, values, _exploits_per_epoch(fitlog, epochs), "epoch")

    def varying(self) -> list[str]:
        """Names of the HPs whose value differs between workers or over the progression."""
        return [
            name
            for name, v in self.values.items()
            if np.isfinite(v).any() and np.nanmax(v) > np.nanmin(v)
        ]

    def only(self, names: Sequence[str]) -> HPProgression:
        """The same progression restricted to `names` (those it has, in that order)."""
        values = {n: self.values[n] for n in names if n in self.values}
        return HPProgression(self.x, self.workers, values, self.exploits, self.xlabel)


def _worker_table(
    log: pd.DataFrame, by: str, index: np.ndarray, workers: list[int], column: str
) -> np.ndarray:
    """(len(index), K) table of `column`: the last logged value per (`by` value, worker), NaN
    where a worker has none."""
    by_cell = log.groupby([by, "worker_id"])[column].last()
    return by_cell.unstack("worker_id").reindex(index=index, columns=workers).to_numpy(float)


def _values_per_generation(
    history: pd.DataFrame, generations: np.ndarray, workers: list[int]
) -> dict[str, np.ndarray]:
    """HP name -> (G + 1, K): the values trained with in each generation, then those after the
    last exploit/explore (NaN if the history has no `hp_after/<name>` column)."""
    names = [c.split("/", 1)[1] for c in history.columns if c.startswith("hp_before/")]
    values = {}
    for name in names:
        before = _worker_table(history, "generation", generations, workers, f"hp_before/{name}")
        after = f"hp_after/{name}"
        if after in history:
            final = _worker_table(history, "generation", generations, workers, after)[-1:]
        else:
            final = np.full((1, len(workers)), np.nan)
        values[name] = np.vstack([before, final])
    return values


def _exploits_per_generation(copied: np.ndarray, workers: list[int]) -> list[tuple[int, int, int]]:
    """(g + 1, worker, source) for every worker that copied another at the end of generation g.

    Args:
        copied: (G, K) `copied_from` of each worker in each generation.
    """
    return [
        (g + 1, w, int(copied[g, k]))
        for g in range(copied.shape[0])
        for k, w in enumerate(workers)
        if np.isfinite(copied[g, k]) and int(copied[g, k]) != w
    ]


def _exploits_per_epoch(fitlog: pd.DataFrame, epochs: np.ndarray) -> list[tuple[int, int, int]]:
    """(i, worker, source) with epochs[i] the first epoch of a generation (after the first) that
    `worker` began by copying `source`."""
    if "copied_from" not in fitlog or "generation" not in fitlog:
        return []
    exploits = []
    firsts = fitlog.sort_values("epoch").groupby(["worker_id", "generation"]).first()
    for (worker, generation), row in firsts.iterrows():
        source = row["copied_from"]
        if generation > 0 and np.isfinite(source) and int(source) != worker:
            exploits.append((int(np.searchsorted(epochs, row["epoch"])), int(worker), int(source)))
    return exploits


def hp_progression_figure(progression: HPProgression, log_names: Collection[str] = ()) -> Figure:
    """One panel per hyperparameter: each worker's value along the progression (a step line),
    with exploit events marked where a worker copied another one (then perturbed its HPs).

    Args:
        progression: the values, see `HPProgression`.
        log_names: HPs drawn on a log axis (e.g. those sampled log-uniformly).
    """
    names = list(progression.values)
    if not names:
        raise ValueError("hp_progression_figure: the progression has no hyperparameter to draw")
    rows, cols = grid_shape(len(names))
    fig, grid = panels(rows, cols, 3.6, 2.3)
    axes = grid.ravel()
    colours = worker_colours(len(progression.workers))
    for ax, name in zip(axes, names, strict=False):
        _hp_panel(ax, progression, name, colours, log_axis=name in log_names)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    if progression.exploits:
        marker = Line2D([], [], ls=":", marker="o", mfc="none", mec="crimson", color="0.4")
        axes[0].legend([marker], ["copied another worker"], fontsize=7)
    return fig


def _hp_panel(
    ax: Axes, progression: HPProgression, name: str, colours: list, log_axis: bool
) -> None:
    """One HP: a step line per worker and the exploit events (log axis if asked and positive)."""
    x = np.asarray(progression.x, dtype=float)
    values = progression.values[name]  # (X, K)
    for k in range(values.shape[1]):
        ax.step(x, values[:, k], where="post", color=colours[k], lw=1, alpha=0.85)
    _draw_exploits(ax, progression, values, colours)
    ax.set_title(name)
    ax.set_xlabel(progression.xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_axis and np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale("log")


def _draw_exploits(ax: Axes, progression: HPProgression, values: np.ndarray, colours: list) -> None:
    """An open circle at each copied worker's new value, a dotted line from its source's value."""
    x = np.asarray(progression.x, dtype=float)
    column = {w: i for i, w in enumerate(progression.workers)}
    segments, segment_colours, points = [], [], []
    for i, worker, source in progression.exploits:
        if source not in column or worker not in column or i < 1:
            continue
        new, old = values[i, column[worker]], values[i - 1, column[source]]
        segments.append([(x[i - 1], old), (x[i], new)])
        segment_colours.append(colours[column[source]])
        points.append((x[i], new))
    if not points:
        return
    ax.add_collection(LineCollection(segments, colors=segment_colours, linestyles=":", lw=0.8))
    xy = np.asarray(points)
    ax.scatter(xy[:, 0], xy[:, 1], s=22, facecolors="none", edgecolors="crimson", zorder=3)
