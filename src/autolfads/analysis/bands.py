"""Frequency bands of latent trajectories by Gaussian smoothing, and R^2 band by band.

A zero-phase Gaussian smoothing of std `s` seconds has the frequency response
`exp(-2 pi^2 s^2 f^2)`, which falls to 1/2 at `f = sqrt(ln 2 / 2) / (pi s)`, about `0.187 / s`.
Splitting a signal at cut frequencies f_1 < f_2 < ... by differences of such smoothings gives
components that add back up to the signal exactly: below f_1, between f_1 and f_2, ..., above
the last cut (each edge the frequency where the neighbouring filters cross at half gain).
Smoothing is `analysis.baselines.gaussian_smooth` (kernel cut at 4 std, reflected at the trial
edges), so every trial is filtered on its own.

Shape legend: B trials, T bins, D dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from autolfads.analysis.baselines import gaussian_smooth
from autolfads.analysis.metrics import r2_score

__all__ = ["HALF_GAIN", "band_components", "band_r2", "half_gain_std_bins", "high_pass"]

HALF_GAIN = math.sqrt(math.log(2.0) / 2.0) / math.pi
"""`f * s` at which a Gaussian smoothing of std `s` seconds passes half of frequency `f` (0.187)."""


def half_gain_std_bins(cut_hz: float, bin_s: float) -> float:
    """Std in bins of the Gaussian smoothing whose gain is 1/2 at `cut_hz`.

    Args:
        cut_hz: the cut frequency in Hz.
        bin_s: the bin width in seconds.

    Raises:
        ValueError: a value is not positive.
    """
    if not cut_hz > 0:
        raise ValueError(f"cut_hz: got {cut_hz!r}; expected a frequency > 0")
    if not bin_s > 0:
        raise ValueError(f"bin_s: got {bin_s!r}; expected a bin width > 0")
    return HALF_GAIN / (cut_hz * bin_s)


def high_pass(x: np.ndarray, std_bins: float) -> np.ndarray:
    """The fast component of (B, T, D): `x` minus its Gaussian smoothing of std `std_bins` bins."""
    return x - gaussian_smooth(x, std_bins)


def band_components(x: np.ndarray, cut_stds: Sequence[float]) -> list[np.ndarray]:
    """(B, T, D) split into len(cut_stds) + 1 bands, slowest first, that sum to `x`.

    Args:
        x: (B, T, D) finite signals, filtered trial by trial.
        cut_stds: Gaussian stds in bins of the cuts (see `half_gain_std_bins`), in decreasing
            order (increasing cut frequency).

    Returns:
        [band 0 (below the first cut), ..., band len(cut_stds) (above the last cut)], each
        (B, T, D).

    Raises:
        ValueError: no cut, a std not > 0, or the stds not strictly decreasing.
    """
    stds = [float(s) for s in cut_stds]
    if not stds or min(stds) <= 0:
        raise ValueError(f"cut_stds: got {list(cut_stds)!r}; expected one or more stds > 0")
    if any(a <= b for a, b in zip(stds, stds[1:], strict=False)):
        raise ValueError(
            f"cut_stds: got {stds!r}; expected strictly decreasing stds (increasing cuts)"
        )
    x = np.asarray(x, dtype=np.float64)
    smooth = [gaussian_smooth(x, s) for s in stds]  # low-passes, slowest first
    edges = [np.zeros_like(x), *smooth, x]
    return [high - low for low, high in zip(edges[:-1], edges[1:], strict=True)]


def band_r2(truth: np.ndarray, pred: np.ndarray, cut_stds: Sequence[float]) -> list[float]:
    """`metrics.r2_score` of `pred` against `truth` in each band of `band_components`.

    Both are split the same way, so each band's R^2 says how well the prediction follows the
    truth's content in that band (uniform average over the D dimensions).

    Args:
        truth: (B, T, D) true latents.
        pred: (B, T, D) predicted latents (e.g. a ridge map of a model's factors).
        cut_stds: as in `band_components`.

    Returns:
        One R^2 per band, slowest first.

    Raises:
        ValueError: the shapes differ, or `cut_stds` is not valid.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth/pred: shapes {truth.shape} and {pred.shape}; expected equal")
    pairs = zip(band_components(truth, cut_stds), band_components(pred, cut_stds), strict=True)
    return [r2_score(t, p) for t, p in pairs]
