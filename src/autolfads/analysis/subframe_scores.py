"""Rate R^2 at the sub-frame bins where each neuron was actually scanned (RADICaL, SBTT).

In the sub-frame layout (`autolfads.data.subframe`) a neuron is observed in one of the K bins of
each frame, the sub-bin of its scan row, `floor(offset * K)`. A model gives rates in every bin,
and the simulator's truth exists in every bin, but only the scanned bins are ever observed: the
other K - 1 are an interpolation that no data can check. Scoring at the scanned bins compares a
sub-frame model and a frame-rate model on the same elements (a frame-rate rate of frame f is the
prediction for the neuron's scan in that frame).

Shape legend: B trials, T frames, K sub-frame bins per frame, N neurons.
"""

from __future__ import annotations

import numpy as np

from autolfads.analysis.metrics import r2_score
from autolfads.data.subframe import subframe_index

__all__ = ["at_scan_subbins", "sampled_subbin_r2"]


def at_scan_subbins(values: np.ndarray, scan_offsets: np.ndarray, n_subframes: int) -> np.ndarray:
    """Each neuron's value at its scan sub-bin of every frame.

    Neuron n of frame f is read at bin `f * K + floor(scan_offsets[n] * K)`
    (`autolfads.data.subframe.subframe_index`).

    Args:
        values: (B, T*K, N) sub-frame values, e.g. rates or truth.
        scan_offsets: (N,) scan times within the frame, fractions in [0, 1).
        n_subframes: sub-frame bins K per frame.

    Returns:
        (B, T, N) the values at the scanned sub-bins.

    Raises:
        ValueError: naming the argument whose shape or value is wrong.
    """
    values = np.asarray(values)
    index = subframe_index(scan_offsets, n_subframes)  # checks the offsets and K
    if values.ndim != 3:
        raise ValueError(f"values: shape {values.shape}; expected 3 dimensions (B, T*K, N)")
    n_trials, n_bins, n_neurons = values.shape
    if n_bins % n_subframes:
        raise ValueError(
            f"values: {n_bins} time bins; expected a multiple of n_subframes={n_subframes}"
        )
    if index.size != n_neurons:
        raise ValueError(
            f"scan_offsets: {index.size} offsets; expected one per neuron of values ({n_neurons})"
        )
    frames = values.reshape(n_trials, n_bins // n_subframes, n_subframes, n_neurons)
    return frames[:, :, index, np.arange(n_neurons)]  # adjacent index arrays: (B, T, N)


def sampled_subbin_r2(
    truth: np.ndarray, rates: np.ndarray, scan_offsets: np.ndarray, n_subframes: int
) -> float:
    """R^2 of `rates` against `truth` over each neuron's scanned sub-bins alone.

    Both are read at `at_scan_subbins` and scored by `metrics.r2_score`: per neuron over all
    trials and frames, then averaged uniformly over neurons (neurons whose truth does not vary
    left out). Values at unscanned sub-bins do not enter.

    Args:
        truth: (B, T*K, N) true rates (e.g. the expected event per bin).
        rates: (B, T*K, N) predicted rates in the same units.
        scan_offsets: (N,) scan times within the frame, fractions in [0, 1).
        n_subframes: sub-frame bins K per frame.

    Returns:
        The mean over neurons of `1 - SSE / SST` at the scanned sub-bins.

    Raises:
        ValueError: the shapes differ, or K does not divide T*K, or an offset is out of range.
    """
    truth, rates = np.asarray(truth), np.asarray(rates)
    if truth.shape != rates.shape:
        raise ValueError(
            f"truth/rates: shapes {truth.shape} and {rates.shape}; expected equal shapes"
        )
    return r2_score(
        at_scan_subbins(truth, scan_offsets, n_subframes),
        at_scan_subbins(rates, scan_offsets, n_subframes),
    )
