"""Continuous recordings (EMG, calcium imaging) cut into overlapping trials, and put back together.

LFADS works on trials of a fixed length. A continuous recording (T_total, N) is cut into windows of
`window` bins that overlap by `overlap` bins; the last window is aligned to the end of the recording,
so that no bin is lost (it may then overlap its neighbour by more than `overlap`). After fitting,
`merge` puts per-trial outputs back on the continuous time axis, with a linear cross-fade over each
overlap so that no seam appears where one window hands over to the next.

Shapes: B trials (windows), T_total bins of the recording, N channels (any trailing shape in `merge`).

Example::

    trials = chop(emg, window=100, overlap=20)        # (B, 100, N), write as {split}_encod_data
    rates = merge(output_params, overlap=20, total_len=len(emg))   # (T_total, N)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from autolfads.errors import UsageError

__all__ = ["chop_starts", "chop", "crossfade_weights", "merge"]


def _check_window(window: int, overlap: int, total_len: int) -> None:
    for name, value in (("window", window), ("overlap", overlap), ("total_len", total_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UsageError(f"`{name}` must be an integer number of bins, got {value!r}")
    if window < 1:
        raise UsageError(f"`window` must be >= 1 bin, got {window}")
    if not 0 <= overlap < window:
        raise UsageError(f"`overlap` must be in [0, window) = [0, {window}), got {overlap}")
    if window > total_len:
        raise UsageError(
            f"`window`={window} is longer than the recording ({total_len} bins): "
            "expected window <= the number of bins"
        )


def chop_starts(total_len: int, window: int, overlap: int) -> np.ndarray:
    """First bin of each window: every `window - overlap` bins, plus one window ending at the end.

    Returns:
        (B,) int64 start bins, increasing; the last is `total_len - window`.
    """
    _check_window(window, overlap, total_len)
    step = window - overlap
    starts = list(range(0, total_len - window + 1, step))
    if starts[-1] != total_len - window:
        starts.append(total_len - window)  # the end of the recording gets a window of its own
    return np.asarray(starts, dtype=np.int64)


def chop(signal: ArrayLike, window: int, overlap: int) -> np.ndarray:
    """Cut a continuous recording into overlapping trials.

    Args:
        signal: (T_total, N) recording.
        window: trial length in bins.
        overlap: bins shared by consecutive trials, 0 <= overlap < window.
    Returns:
        (B, window, N) trials starting at `chop_starts(T_total, window, overlap)`.

    Raises:
        UsageError: `signal` is not 2-D, or `window`/`overlap` do not fit (named in the message).
    """
    x = np.asarray(signal)
    if x.ndim != 2:
        raise UsageError(f"`signal` must be 2-D (T_total, N), got shape {x.shape}")
    starts = chop_starts(x.shape[0], window, overlap)
    steps = starts[:, None] + np.arange(window)[None, :]  # (B, window)
    return x[steps]


def crossfade_weights(total_len: int, window: int, overlap: int) -> np.ndarray:
    """Weight of each bin of each trial in `merge`; at every bin of the recording they sum to 1.

    Each trial hands over to the next over the last `overlap` bins of the earlier one: there the
    later trial's weight rises linearly as (i + 1) / (overlap + 1), i = 0..overlap-1, and the
    earlier one's falls as the complement; elsewhere a bin belongs to one trial with weight 1. The
    end-aligned last trial, which may overlap its neighbour by more, takes over in the same way at
    the end of its neighbour and has weight 0 before. (When overlap > window / 2, three trials share
    some bins; the ramps are then normalised to sum to 1.)

    Returns:
        (B, window) float64 weights.
    """
    starts = chop_starts(total_len, window, overlap)
    t = np.arange(window)[None, :]  # (1, window)
    fade_in_from = np.zeros_like(starts)  # first bin (within the trial) of its fade-in
    fade_in_from[1:] = (starts[:-1] + window - overlap) - starts[1:]
    rise = np.clip((t - fade_in_from[:, None] + 1) / (overlap + 1), 0.0, 1.0)
    fall = np.minimum(1.0, (window - t) / (overlap + 1)) * np.ones((len(starts), 1))
    fall[-1] = 1.0  # the last trial fades out nowhere
    ramps = np.minimum(rise, fall)  # (B, window)
    coverage = np.zeros(total_len)
    np.add.at(coverage, starts[:, None] + t, ramps)
    return ramps / coverage[starts[:, None] + t]


def merge(trials: ArrayLike, overlap: int, total_len: int) -> np.ndarray:
    """Put per-trial outputs back on the continuous time axis, cross-fading over the overlaps.

    The inverse of `chop`: `merge(chop(x, w, o), o, len(x))` equals `x` (up to rounding).

    Args:
        trials: (B, window, ...) per-trial values (rates, factors...), in `chop` order.
        overlap: the `overlap` given to `chop`.
        total_len: T_total, the length of the recording given to `chop`.
    Returns:
        (T_total, ...) merged values; float (float64 for integer input).

    Raises:
        UsageError: `trials` has too few dimensions or not the number of trials `chop` makes.
    """
    y = np.asarray(trials)
    if y.ndim < 2:
        raise UsageError(f"`trials` must be (B, window, ...), got shape {y.shape}")
    window = y.shape[1]
    starts = chop_starts(total_len, window, overlap)
    if y.shape[0] != len(starts):
        raise UsageError(
            f"`trials` has {y.shape[0]} trials, expected {len(starts)} for window={window}, "
            f"overlap={overlap}, total_len={total_len}"
        )
    dtype = np.result_type(y.dtype, np.float32)
    weights = crossfade_weights(total_len, window, overlap)  # (B, window)
    weighted = y * weights.reshape(*weights.shape, *([1] * (y.ndim - 2)))
    out = np.zeros((total_len, *y.shape[2:]), dtype=np.float64)
    np.add.at(out, starts[:, None] + np.arange(window)[None, :], weighted)
    return out.astype(dtype, copy=False)
