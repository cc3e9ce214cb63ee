"""Sub-frame binning of 2-photon events for selective backpropagation through time (RADICaL).

A 2-photon microscope scans its field of view line by line, so within each imaging frame a
neuron is sampled at a time set by its row: a neuron at row y of an image of H rows is sampled
a fraction y / H of the frame period after the frame starts. RADICaL (Zhu, Sedler et al.,
NeurIPS 2021; Nature Neuroscience 2022) splits every frame into K sub-frame bins and places each
neuron's per-frame event in the sub-bin where it was actually scanned; the other K - 1 sub-bins
are NaN ("not observed"), which SBTT leaves out of the loss. The model then runs at K times the
frame rate and can resolve latent dynamics faster than the frames.

- `scan_offsets_by_row` draws each neuron's scan time within the frame from a random row.
- `to_subframe_bins` turns frame-rate data into the sub-frame (SBTT) layout.
- `to_frame_bins` goes back: the observed value of each frame, NaN where none was observed.
- `subframe_index` is the sub-bin in which each neuron is observed.

Shape legend: B trials, T bins (frames, or frames x K sub-frame bins), N neurons.
"""

from __future__ import annotations

import numpy as np

__all__ = ["scan_offsets_by_row", "subframe_index", "to_frame_bins", "to_subframe_bins"]


def scan_offsets_by_row(
    n_neurons: int, rng: np.random.Generator | int = 0, *, n_rows: int = 512
) -> np.ndarray:
    """Scan time of each neuron within the frame, as a fraction of the frame period.

    Each neuron sits at a row drawn uniformly from the `n_rows` lines of the image, and the
    raster scan reaches row y a fraction `y / n_rows` of the frame after the frame starts.
    With `n_rows` a power of two the offsets are exact binary fractions, so `offset * K` has no
    rounding error for any integer K.

    Args:
        n_neurons: number of neurons N.
        rng: a numpy generator, or an integer seed for one.
        n_rows: lines per image.

    Returns:
        (N,) float64 offsets in [0, 1).
    """
    _require_int(n_neurons, "n_neurons", minimum=1)
    _require_int(n_rows, "n_rows", minimum=1)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    rows = generator.integers(0, n_rows, n_neurons)
    return rows / float(n_rows)


def subframe_index(scan_offsets: np.ndarray, n_subframes: int) -> np.ndarray:
    """Sub-frame bin in which each neuron is observed: `floor(offset * n_subframes)`.

    Args:
        scan_offsets: (N,) scan times within the frame, fractions of the frame in [0, 1).
        n_subframes: sub-frame bins K per frame.

    Returns:
        (N,) int64 indices in [0, K).
    """
    offsets = _check_offsets(scan_offsets)
    _require_int(n_subframes, "n_subframes", minimum=1)
    # min() guards against an offset just below 1 rounding up to K in floating point
    return np.minimum(np.floor(offsets * n_subframes).astype(np.int64), n_subframes - 1)


def to_subframe_bins(events: np.ndarray, scan_offsets: np.ndarray, n_subframes: int) -> np.ndarray:
    """Spread frame-rate data over K sub-frame bins per frame, each neuron in its scan sub-bin.

    Neuron n's value of frame f goes to bin `f * K + subframe_index(scan_offsets, K)[n]`; every
    other bin of that neuron is NaN, so each neuron is observed exactly once per frame. NaN in
    `events` (a frame not observed at all) stays NaN.

    Args:
        events: (B, T_frames, N) frame-rate values, e.g. deconvolved calcium events.
        scan_offsets: (N,) each neuron's scan time within the frame, a fraction in [0, 1).
        n_subframes: sub-frame bins K per frame; 1 returns a float copy of `events`.

    Returns:
        (B, T_frames * K, N) array of the float dtype of `events` (float32 for integers).

    Raises:
        ValueError: naming the argument whose shape or value is wrong.
    """
    events = np.asarray(events)
    if events.ndim != 3:
        raise ValueError(f"events: shape {events.shape}; expected 3 dimensions (B, T_frames, N)")
    index = subframe_index(scan_offsets, n_subframes)
    if index.shape[0] != events.shape[2]:
        raise ValueError(
            f"scan_offsets: {index.shape[0]} offsets; expected one per neuron of events "
            f"({events.shape[2]})"
        )
    n_trials, n_frames, n_neurons = events.shape
    out = np.full((n_trials, n_frames, n_subframes, n_neurons), np.nan, dtype=_float_dtype(events))
    # the two index arrays are adjacent, so the selection has shape (B, T_frames, N)
    out[:, :, index, np.arange(n_neurons)] = events
    return out.reshape(n_trials, n_frames * n_subframes, n_neurons)


def to_frame_bins(subframe_data: np.ndarray, n_subframes: int) -> np.ndarray:
    """Collapse K sub-frame bins per frame back to frames: the sum of the observed values.

    In the SBTT layout of `to_subframe_bins` each frame holds one observed value per neuron,
    so this returns it, and `to_frame_bins(to_subframe_bins(x, offsets, K), K)` equals `x`.
    Frames where a neuron has no observed (non-NaN) sub-bin are NaN.

    Args:
        subframe_data: (B, T_frames * K, N) values, NaN where not observed.
        n_subframes: sub-frame bins K per frame.

    Returns:
        (B, T_frames, N) array of the float dtype of `subframe_data` (float32 for integers).

    Raises:
        ValueError: naming the argument whose shape or value is wrong.
    """
    data = np.asarray(subframe_data)
    _require_int(n_subframes, "n_subframes", minimum=1)
    if data.ndim != 3:
        raise ValueError(
            f"subframe_data: shape {data.shape}; expected 3 dimensions (B, T_frames * K, N)"
        )
    n_trials, n_bins, n_neurons = data.shape
    if n_bins % n_subframes:
        raise ValueError(
            f"subframe_data: {n_bins} time bins; expected a multiple of n_subframes={n_subframes}"
        )
    frames = data.reshape(n_trials, n_bins // n_subframes, n_subframes, n_neurons)
    observed = ~np.isnan(frames)
    total = np.where(observed, frames, 0).sum(axis=2).astype(_float_dtype(data))
    total[~observed.any(axis=2)] = np.nan
    return total


def _float_dtype(array: np.ndarray) -> np.dtype:
    return array.dtype if array.dtype.kind == "f" else np.dtype(np.float32)


def _check_offsets(scan_offsets: np.ndarray) -> np.ndarray:
    offsets = np.asarray(scan_offsets, dtype=np.float64)
    if offsets.ndim != 1:
        raise ValueError(f"scan_offsets: shape {offsets.shape}; expected (N,), one per neuron")
    bad = ~((offsets >= 0.0) & (offsets < 1.0))  # also catches NaN
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"scan_offsets: {float(offsets[first])!r} at index {first}; "
            "expected fractions of the frame in [0, 1)"
        )
    return offsets


def _require_int(value: object, name: str, *, minimum: int) -> None:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not is_int or value < minimum:
        raise ValueError(f"{name}: got {value!r}; expected an integer >= {minimum}")
