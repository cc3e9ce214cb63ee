"""The data-versus-rates figure: for a few trials, the observed data (spike raster or heatmap), the
inferred rates as a heatmap on the same colour scale, and a few channels' rates next to the truth.

Shape legend: B trials, T bins, N channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D

from autolfads.analysis.report.canvas import panels

__all__ = ["rates_figure"]


@dataclass(frozen=True)
class _Scales:
    """What every trial row shares: the channels drawn in the raster and heatmaps (`shown`, of
    `n_channels`), those drawn as traces (`traced`) and the heatmaps' colour range."""

    shown: np.ndarray
    n_channels: int
    traced: np.ndarray
    vmin: float
    vmax: float


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
    scales = _scales(rates, truth, max_channels, n_traces)
    fig, axes = panels(rates.shape[0], 3, 3.5, 2.0, right=1.1)
    image = None
    for row, trial in enumerate(trial_ids):
        ax_data, ax_rates, ax_traces = axes[row]
        image = _data_and_rate_panels(
            ax_data, ax_rates, data[row], rates[row], scales, counts, held_in
        )
        _trace_panel(ax_traces, rates[row], None if truth is None else truth[row], scales.traced)
        ax_data.set_title(f"trial {trial}: observed data", fontsize=9)
        ax_rates.set_title(f"trial {trial}: inferred rates", fontsize=9)
        ax_traces.set_title(
            f"trial {trial}: channels {', '.join(map(str, scales.traced))}", fontsize=9
        )
    for ax in axes[-1]:
        ax.set_xlabel("time bin")
    _trace_legend(axes[0, 2], truth is not None)
    if image is not None:
        _rate_colourbar(fig, axes[0, 2], image)
    return fig


def _scales(
    rates: np.ndarray, truth: np.ndarray | None, max_channels: int, n_traces: int
) -> _Scales:
    """Channels shown (evenly spaced), channels traced (highest mean true, else inferred, rate)
    and one colour scale for data and rates: from 0 (or the 1st percentile if negative) to the
    99th percentile of the rates."""
    n_channels = rates.shape[2]
    shown = np.unique(np.linspace(0, n_channels - 1, min(n_channels, max_channels)).astype(int))
    reference = truth if truth is not None else rates
    traced = np.argsort(-np.nanmean(reference, axis=(0, 1)))[:n_traces]
    low, high = (float(v) for v in np.nanpercentile(rates[:, :, shown], [1, 99]))
    vmin = min(low, 0.0)
    vmax = high if high > vmin else vmin + 1.0  # constant rates still get a scale
    return _Scales(shown, n_channels, traced, vmin, vmax)


def _data_and_rate_panels(
    ax_data: Axes,
    ax_rates: Axes,
    data: np.ndarray,
    rates: np.ndarray,
    scales: _Scales,
    counts: bool,
    held_in: tuple[int, int] | None,
) -> AxesImage:
    """One trial's (T, N) data (raster or heatmap) and rates (heatmap); returns the rates image."""
    if counts:
        _raster(ax_data, data[:, scales.shown])
    else:
        _heatmap(ax_data, data[:, scales.shown], scales.vmin, scales.vmax)
    image = _heatmap(ax_rates, rates[:, scales.shown], scales.vmin, scales.vmax)
    for ax in (ax_data, ax_rates):
        ax.set_ylabel("channel" if len(scales.shown) == scales.n_channels else "channel (subset)")
        if held_in is not None:
            _mark_held_in(ax, held_in, scales.shown)
    return image


def _trace_panel(
    ax: Axes, rates: np.ndarray, truth: np.ndarray | None, channels: np.ndarray
) -> None:
    """One trial's inferred rates (T, N) of a few channels, the true ones dashed in the same colour."""
    trace_colours = colormaps["tab10"].colors
    for j, channel in enumerate(channels):
        colour = trace_colours[j % len(trace_colours)]
        ax.plot(rates[:, channel], color=colour, lw=1.4)
        if truth is not None:
            ax.plot(truth[:, channel], "--", color=colour, lw=1)


def _trace_legend(ax: Axes, with_truth: bool) -> None:
    """Legend of the trace panels: solid inferred, dashed truth."""
    styles = [Line2D([], [], color="k", lw=1.4)]
    labels = ["inferred"]
    if with_truth:
        styles.append(Line2D([], [], color="k", ls="--", lw=1))
        labels.append("truth")
    ax.legend(styles, labels, fontsize=7)


def _rate_colourbar(fig: Figure, ax: Axes, image: AxesImage) -> None:
    """A colour bar for the heatmaps, just right of `ax`."""
    box = ax.get_position()
    bar = fig.add_axes(
        (box.x1 + 0.12 / fig.get_figwidth(), box.y0, 0.12 / fig.get_figwidth(), box.height)
    )
    fig.colorbar(image, cax=bar, label="rate heatmaps: mean per bin")


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
    """Red lines after the held-in bins and before the first held-out channel shown."""
    seq_len, data_dim = held_in
    ax.axvline(seq_len - 0.5, color="crimson", lw=0.8)
    boundary = int(np.searchsorted(shown, data_dim))
    if boundary < len(shown):
        ax.axhline(boundary - 0.5, color="crimson", lw=0.8)
