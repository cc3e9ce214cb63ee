"""Figures of a fitted run: training curves, hyperparameter progressions, data next to inferred
rates, latent trajectories and inferred inputs.

Every function takes plain arrays or tables and returns a `matplotlib.figure.Figure` made with the
object-oriented API (no pyplot, so no global state and no display backend); `png_bytes` renders one
with the Agg canvas.

Shape legend: K workers, B trials, T bins, N channels, F factors, H generator units, U inferred
inputs, X points on a progression's x axis (epochs or generations).
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

__all__ = [
    "DPI",
    "HPProgression",
    "png_bytes",
    "wants_log_axis",
    "pca_projection",
    "training_curves_figure",
    "validation_metrics_figure",
    "hp_progression_figure",
    "rates_figure",
    "latent_trajectories_figure",
    "inputs_figure",
]

DPI = 90  # small PNGs: the HTML page embeds them all
PCA_MAX_POINTS = 20_000  # (trial, bin) points used to fit the principal components
MAX_LEGEND_WORKERS = 8


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG bytes by the Agg canvas."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def wants_log_axis(values: np.ndarray, min_decades: float = 1.0) -> bool:
    """True if every finite value is positive and together they span at least `min_decades` decades."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or np.any(v <= 0):
        return False
    return bool(np.log10(v.max() / v.min()) >= min_decades)


def _finite_or_nan(values: pd.Series | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v), v, np.nan)


def _worker_colours(n_workers: int) -> list:
    cmap = colormaps["viridis"]
    return [cmap(i / max(n_workers - 1, 1) * 0.9) for i in range(n_workers)]


def _panels(
    rows: int,
    cols: int,
    panel_width: float,
    panel_height: float,
    *,
    left: float = 0.75,
    right: float = 0.25,
    bottom: float = 0.55,
    top: float = 0.4,
    wgap: float = 0.8,
    hgap: float = 0.75,
    sharex: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A figure holding a (rows, cols) grid of axes of the given size, margins and gaps (inches).

    A fixed layout: the constrained layout engine would double the drawing time.
    """
    width = left + right + cols * panel_width + (cols - 1) * wgap
    height = bottom + top + rows * panel_height + (rows - 1) * hgap
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wgap / panel_width,
        hspace=hgap / panel_height,
    )
    return fig, fig.subplots(rows, cols, squeeze=False, sharex=sharex)


def _grid(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n_panels, max_cols)
    return -(-n_panels // cols), cols


# --------------------------------------------------------------------------- training curves


def training_curves_figure(fitlog: pd.DataFrame) -> Figure:
    """train/recon and valid/recon of every worker over epochs, and the best worker's
    valid/recon_smth (best at each epoch and best so far).

    Args:
        fitlog: the rows of `fitlog.csv` (one per worker per epoch).
    """
    fig, grid = _panels(1, 3, 3.6, 2.8)
    axes = grid[0]
    workers = sorted(fitlog["worker_id"].unique())
    colours = dict(zip(workers, _worker_colours(len(workers)), strict=True))
    for ax, column in zip(axes[:2], ("train/recon", "valid/recon"), strict=True):
        _per_worker_curves(ax, fitlog, column, colours)
    _best_so_far_panel(axes[2], fitlog)
    if 1 < len(workers) <= MAX_LEGEND_WORKERS:
        axes[0].legend(fontsize=7, ncols=2)
    for ax in axes:
        _mark_generations(ax, fitlog)
    return fig


def validation_metrics_figure(fitlog: pd.DataFrame) -> Figure | None:
    """valid/r2 (rates vs truth) and valid/bps of every worker over epochs, or None if the fit
    log has neither."""
    columns = [
        c
        for c in ("valid/r2", "valid/bps")
        if c in fitlog and np.isfinite(fitlog[c].to_numpy(float)).any()
    ]
    if not columns:
        return None
    fig, grid = _panels(1, len(columns), 3.6, 2.6)
    axes = grid[0]
    workers = sorted(fitlog["worker_id"].unique())
    colours = dict(zip(workers, _worker_colours(len(workers)), strict=True))
    for ax, column in zip(axes, columns, strict=True):
        _per_worker_curves(ax, fitlog, column, colours, log_allowed=False)
        _mark_generations(ax, fitlog)
    return fig


def _per_worker_curves(
    ax: Axes, fitlog: pd.DataFrame, column: str, colours: Mapping, log_allowed: bool = True
) -> None:
    ax.set_title(column)
    ax.set_xlabel("epoch")
    if column not in fitlog:
        ax.text(0.5, 0.5, f"no {column} in fitlog.csv", ha="center", transform=ax.transAxes)
        return
    for worker, rows in fitlog.sort_values("epoch").groupby("worker_id"):
        ax.plot(
            rows["epoch"],
            _finite_or_nan(rows[column]),
            color=colours[worker],
            lw=1,
            alpha=0.85,
            label=f"worker {worker}",
        )
    if log_allowed and wants_log_axis(fitlog[column].to_numpy(float)):
        ax.set_yscale("log")


def _best_so_far_panel(ax: Axes, fitlog: pd.DataFrame) -> None:
    column = "valid/recon_smth"
    ax.set_title(f"{column}: best worker")
    ax.set_xlabel("epoch")
    raw = fitlog[column].astype(float) if column in fitlog else pd.Series(np.nan, fitlog.index)
    values = raw.where(np.isfinite(raw))
    if values.isna().all():
        ax.text(0.5, 0.5, f"no finite {column} yet", ha="center", transform=ax.transAxes)
        return
    per_epoch = values.groupby(fitlog["epoch"]).min()
    ax.plot(per_epoch.index, per_epoch.to_numpy(), color="0.6", lw=1, label="best at each epoch")
    ax.step(per_epoch.index, per_epoch.cummin().to_numpy(), where="post", lw=2, label="best so far")
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
    ax.legend(fontsize=8)
    if wants_log_axis(per_epoch.to_numpy()):
        ax.set_yscale("log")


def _mark_generations(ax: Axes, fitlog: pd.DataFrame) -> None:
    """Faint vertical lines where a PBT generation starts."""
    if "generation" not in fitlog or fitlog["generation"].nunique() < 2:
        return
    starts = fitlog.groupby("generation")["epoch"].min().to_numpy()[1:]
    for epoch in starts:
        ax.axvline(epoch - 0.5, color="0.85", lw=0.8, zorder=0)


# --------------------------------------------------------------------------- hyperparameters


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

        def table(column: str) -> np.ndarray:  # (G, K)
            by_cell = history.groupby(["generation", "worker_id"])[column].last()
            return (
                by_cell.unstack("worker_id")
                .reindex(index=generations, columns=workers)
                .to_numpy(float)
            )

        names = [c.split("/", 1)[1] for c in history.columns if c.startswith("hp_before/")]
        values = {}
        for name in names:
            before = table(f"hp_before/{name}")
            after = f"hp_after/{name}"
            values[name] = np.vstack([before, table(after)[-1:]]) if after in history else before
        x = np.append(generations, generations[-1] + 1) if len(generations) else generations
        copied = table("copied_from")
        exploits = [
            (g + 1, w, int(copied[g, k]))
            for g in range(len(generations))
            for k, w in enumerate(workers)
            if np.isfinite(copied[g, k]) and int(copied[g, k]) != w
        ]
        return cls(x, workers, values, exploits, "generation")

    @classmethod
    def from_fitlog(cls, fitlog: pd.DataFrame) -> HPProgression:
        """From `fitlog.csv`: each worker's `hp/<name>` columns per epoch; an exploit at the first
        epoch of a generation whose `copied_from` is another worker."""
        epochs = np.sort(fitlog["epoch"].unique())
        workers = sorted(int(w) for w in fitlog["worker_id"].unique())

        def table(column: str) -> np.ndarray:  # (X, K)
            by_cell = fitlog.groupby(["epoch", "worker_id"])[column].last()
            return (
                by_cell.unstack("worker_id").reindex(index=epochs, columns=workers).to_numpy(float)
            )

        values = {c[len("hp/") :]: table(c) for c in fitlog.columns if c.startswith("hp/")}
        exploits = []
        if "copied_from" in fitlog and "generation" in fitlog:
            firsts = fitlog.sort_values("epoch").groupby(["worker_id", "generation"]).first()
            for (worker, generation), row in firsts.iterrows():
                source = row["copied_from"]
                if generation > 0 and np.isfinite(source) and int(source) != worker:
                    exploits.append(
                        (int(np.searchsorted(epochs, row["epoch"])), int(worker), int(source))
                    )
        return cls(epochs, workers, values, exploits, "epoch")

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
    rows, cols = _grid(len(names))
    fig, grid = _panels(rows, cols, 3.6, 2.3)
    axes = grid.ravel()
    colours = _worker_colours(len(progression.workers))
    column = {w: i for i, w in enumerate(progression.workers)}
    x = np.asarray(progression.x, dtype=float)
    for ax, name in zip(axes, names, strict=False):
        values = progression.values[name]  # (X, K)
        for k in range(values.shape[1]):
            ax.step(x, values[:, k], where="post", color=colours[k], lw=1, alpha=0.85)
        _draw_exploits(ax, progression, values, colours, column)
        ax.set_title(name)
        ax.set_xlabel(progression.xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if name in log_names and np.all(values[np.isfinite(values)] > 0):
            ax.set_yscale("log")
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    if progression.exploits:
        marker = Line2D([], [], ls=":", marker="o", mfc="none", mec="crimson", color="0.4")
        axes[0].legend([marker], ["copied another worker"], fontsize=7)
    return fig


def _draw_exploits(
    ax: Axes, progression: HPProgression, values: np.ndarray, colours: list, column: dict
) -> None:
    """An open circle at each copied worker's new value, a dotted line from its source's value."""
    x = np.asarray(progression.x, dtype=float)
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


# --------------------------------------------------------------------------- data and rates


def rates_figure(
    data: np.ndarray,
    rates: np.ndarray,
    truth: np.ndarray | None = None,
    *,
    trial_ids: Sequence[int],
    counts: bool = True,
    held_in: tuple[int, int] | None = None,
    max_channels: int = 100,
    n_traces: int = 4,
) -> Figure:
    """A few trials: the observed data (spike raster, or heatmap for non-count data), the inferred
    rates as a heatmap, and a few channels' inferred rates with the true ones dashed.

    Args:
        data: (B, T, N) observed recon data of the trials shown; NaN where unobserved.
        rates: (B, T, N) inferred means (`output_params`), in the data's units.
        truth: (B, T, N) true means in the data's units, or None.
        trial_ids: the B trials' indices in their split (for the row titles).
        counts: draw `data` as a raster (spike counts) rather than a heatmap.
        held_in: (encod_seq_len, encod_data_dim) when the recon data has forward-prediction bins
            or held-out channels beyond them; lines mark the boundary.
        max_channels: at most this many channels (evenly spaced) in the raster and heatmaps.
        n_traces: channels in the trace panel: those with the highest mean rate.
    """
    n_trials, _, n_channels = rates.shape
    shown = np.unique(np.linspace(0, n_channels - 1, min(n_channels, max_channels)).astype(int))
    reference = truth if truth is not None else rates
    top = np.argsort(-np.nanmean(reference, axis=(0, 1)))[:n_traces]
    # one colour scale for data and rates: from 0 (or the 1st percentile if negative) to the 99th
    low, high = (float(v) for v in np.nanpercentile(rates[:, :, shown], [1, 99]))
    vmin = min(low, 0.0)
    vmax = high if high > vmin else vmin + 1.0  # constant rates still get a scale
    fig, axes = _panels(n_trials, 3, 3.5, 2.0, right=1.1)
    trace_colours = colormaps["tab10"].colors
    image = None
    for row, trial in enumerate(trial_ids):
        ax_data, ax_rates, ax_traces = axes[row]
        if counts:
            _raster(ax_data, data[row][:, shown])
        else:
            _heatmap(ax_data, data[row][:, shown], vmin, vmax)
        image = _heatmap(ax_rates, rates[row][:, shown], vmin, vmax)
        for ax in (ax_data, ax_rates):
            ax.set_ylabel("channel" if len(shown) == n_channels else "channel (subset)")
            if held_in is not None:
                _mark_held_in(ax, held_in, shown)
        for j, channel in enumerate(top):
            colour = trace_colours[j % len(trace_colours)]
            ax_traces.plot(rates[row, :, channel], color=colour, lw=1.4)
            if truth is not None:
                ax_traces.plot(truth[row, :, channel], "--", color=colour, lw=1)
        ax_data.set_title(f"trial {trial}: observed data", fontsize=9)
        ax_rates.set_title(f"trial {trial}: inferred rates", fontsize=9)
        ax_traces.set_title(f"trial {trial}: channels {', '.join(map(str, top))}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("time bin")
    styles = [Line2D([], [], color="k", lw=1.4)]
    labels = ["inferred"]
    if truth is not None:
        styles.append(Line2D([], [], color="k", ls="--", lw=1))
        labels.append("truth")
    axes[0, 2].legend(styles, labels, fontsize=7)
    if image is not None:
        box = axes[0, 2].get_position()
        bar = fig.add_axes(
            (box.x1 + 0.12 / fig.get_figwidth(), box.y0, 0.12 / fig.get_figwidth(), box.height)
        )
        fig.colorbar(image, cax=bar, label="rate heatmaps: mean per bin")
    return fig


def _heatmap(ax: Axes, values: np.ndarray, vmin: float, vmax: float) -> AxesImage:
    """values (T, N) as channels (rows) over time bins, on a shared colour scale."""
    return ax.imshow(
        values.T, aspect="auto", origin="lower", interpolation="nearest", vmin=vmin, vmax=vmax
    )


def _raster(ax: Axes, counts: np.ndarray) -> None:
    """Spike raster of one trial's (T, N) counts: a tick per non-empty bin, longer for more spikes."""
    observed = np.nan_to_num(counts, nan=0.0)
    t, n = np.nonzero(observed > 0)
    sizes = 8.0 * np.sqrt(observed[t, n])
    ax.scatter(t, n, s=sizes, marker="|", color="k", linewidths=0.8)
    ax.set_xlim(-0.5, counts.shape[0] - 0.5)
    ax.set_ylim(-0.5, counts.shape[1] - 0.5)


def _mark_held_in(ax: Axes, held_in: tuple[int, int], shown: np.ndarray) -> None:
    seq_len, data_dim = held_in
    ax.axvline(seq_len - 0.5, color="crimson", lw=0.8)
    boundary = int(np.searchsorted(shown, data_dim))
    if boundary < len(shown):
        ax.axhline(boundary - 0.5, color="crimson", lw=0.8)


# --------------------------------------------------------------------------- latents and inputs


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
    names = list(latents)
    n_trials = next(iter(latents.values())).shape[0]
    order = np.arange(n_trials) if conditions is None else np.argsort(conditions, kind="stable")
    drawn = order[np.unique(np.linspace(0, n_trials - 1, min(n_trials, max_trials)).astype(int))]
    fig, axes = _panels(len(names), 2, 3.6, 3.0, top=0.7, wgap=0.9)
    colours, how = _trial_colours(len(drawn), None if conditions is None else conditions[drawn])
    for row, name in enumerate(names):
        mean, components, explained = pca_projection(latents[name])
        projected = (latents[name][drawn] - mean) @ components.T  # (B_drawn, T, C)
        n_components = components.shape[0]
        if n_components >= 2:
            pairs = [(0, 1), (1, 2)] if n_components >= 3 else [(0, 1)]
            for ax, (i, j) in zip(axes[row], pairs, strict=False):
                ax.add_collection(LineCollection(projected[:, :, [i, j]], colors=colours, lw=0.8))
                ax.scatter(projected[:, 0, i], projected[:, 0, j], s=6, c=colours, zorder=3)
                ax.autoscale_view()
                ax.set_xlabel(f"PC{i + 1} ({explained[i]:.0%})")
                ax.set_ylabel(f"PC{j + 1} ({explained[j]:.0%})")
                ax.set_title(f"{name}: PC{i + 1} vs PC{j + 1}", fontsize=9)
            used = len(pairs)
        else:  # a single dimension: its time course
            t = np.broadcast_to(np.arange(projected.shape[1]), projected.shape[:2])
            traces = np.stack([t, projected[:, :, 0]], axis=-1)  # (B, T, 2)
            axes[row, 0].add_collection(LineCollection(traces, colors=colours, lw=0.8))
            axes[row, 0].autoscale_view()
            axes[row, 0].set_xlabel("time bin")
            axes[row, 0].set_title(f"{name} over time", fontsize=9)
            used = 1
        for ax in axes[row, used:]:
            ax.set_axis_off()
    if conditions is not None and len(np.unique(conditions)) <= 10:
        labels, first = np.unique(conditions[drawn], return_index=True)
        handles = [Line2D([], [], color=colours[i]) for i in first]
        axes[0, 0].legend(handles, [str(c) for c in labels], title="condition", fontsize=7)
    fig.suptitle(f"{len(colours)} trials, coloured by {how}; dots mark the first bin", fontsize=9)
    return fig


def _trial_colours(n_trials: int, conditions: np.ndarray | None) -> tuple[list, str]:
    if conditions is None:
        cmap = colormaps["viridis"]
        return [cmap(i / max(n_trials - 1, 1)) for i in range(n_trials)], "trial"
    labels, index = np.unique(np.asarray(conditions), return_inverse=True)
    if len(labels) <= 10:
        palette = colormaps["tab10"].colors
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
    n_trials, n_bins, n_inputs = co_means.shape
    fig, grid = _panels(n_trials, 1, 8.0, 1.3, hgap=0.45, sharex=True)
    axes = grid[:, 0]
    palette = colormaps["tab10"].colors
    t = np.arange(n_bins)
    for ax, b, trial in zip(axes, range(n_trials), trial_ids, strict=True):
        for u in range(min(n_inputs, max_inputs)):
            colour = palette[u % len(palette)]
            ax.plot(t, co_means[b, :, u], color=colour, lw=1.2, label=f"input {u}")
            if co_stds is not None:
                low, high = (
                    co_means[b, :, u] - co_stds[b, :, u],
                    co_means[b, :, u] + co_stds[b, :, u],
                )
                ax.fill_between(t, low, high, color=colour, alpha=0.2, lw=0)
        ax.set_title(f"trial {trial}", fontsize=9)
    axes[0].legend(fontsize=7, ncols=min(n_inputs, max_inputs))
    axes[-1].set_xlabel("time bin")
    return fig
