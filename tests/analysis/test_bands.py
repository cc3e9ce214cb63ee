"""Tests of autolfads.analysis.bands: Gaussian band split of latents and R^2 per band."""

import numpy as np
import pytest

from autolfads.analysis.bands import (
    HALF_GAIN,
    band_components,
    band_r2,
    half_gain_std_bins,
    high_pass,
)
from autolfads.analysis.baselines import gaussian_smooth
from autolfads.analysis.metrics import r2_score

RATE = 120.0  # bins per second


def sines(freqs_hz, n_trials=4, n_bins=600, seed=0):
    """(B, T, 1) sums of sines of the given frequencies with random phases per trial."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_bins)[None, :, None] / RATE
    phases = rng.uniform(0, 2 * np.pi, (n_trials, 1, len(freqs_hz)))
    return np.sin(2 * np.pi * np.asarray(freqs_hz) * t + phases).sum(axis=-1, keepdims=True)


def test_half_gain_std_passes_half_of_the_cut_frequency():
    std = half_gain_std_bins(10.0, 1.0 / RATE)
    assert std == pytest.approx(0.1874 * RATE / 10.0, rel=1e-3)
    x = sines([10.0], n_trials=1, n_bins=2400)
    inner = slice(200, -200)  # away from the reflected edges
    gain = gaussian_smooth(x, std)[:, inner].std() / x[:, inner].std()
    assert gain == pytest.approx(0.5, abs=0.01)
    assert HALF_GAIN == pytest.approx(0.1874, abs=1e-4)


def test_bands_add_up_and_separate_slow_middle_and_fast_sines():
    slow, middle, fast = sines([2.0]), sines([12.0], seed=1), sines([40.0], seed=2)
    x = slow + middle + fast
    cuts = [half_gain_std_bins(hz, 1.0 / RATE) for hz in (5.0, 20.0)]
    parts = band_components(x, cuts)
    assert len(parts) == 3
    np.testing.assert_allclose(sum(parts), x, atol=1e-12)
    inner = slice(50, -50)
    for part, alone in zip(parts, (slow, middle, fast), strict=True):
        assert r2_score(alone[:, inner], part[:, inner]) > 0.9


def test_band_r2_scores_each_band_on_its_own():
    slow, fast = sines([2.0]), sines([40.0], seed=3)
    cuts = [half_gain_std_bins(10.0, 1.0 / RATE)]
    truth = slow + fast
    r2_slow, r2_fast = band_r2(truth, slow, cuts)  # a prediction missing the fast sine
    assert r2_slow > 0.95 and r2_fast < 0.05
    np.testing.assert_allclose(band_r2(truth, truth, cuts), [1.0, 1.0])


def test_high_pass_is_the_signal_minus_its_smoothing():
    x = sines([2.0, 40.0])
    np.testing.assert_allclose(high_pass(x, 3.0), band_components(x, [3.0])[1])


@pytest.mark.parametrize(
    ("cuts", "message"),
    [([], "cut_stds: got \\[\\]"), ([0.0], "stds > 0"), ([1.0, 2.0], "strictly decreasing")],
)
def test_bad_cuts_are_refused_naming_them(cuts, message):
    with pytest.raises(ValueError, match=message):
        band_components(np.zeros((1, 10, 1)), cuts)


def test_bad_frequency_or_shapes_are_refused():
    with pytest.raises(ValueError, match="cut_hz: got 0"):
        half_gain_std_bins(0, 0.01)
    with pytest.raises(ValueError, match="bin_s: got -1"):
        half_gain_std_bins(5.0, -1)
    with pytest.raises(ValueError, match="truth/pred: shapes"):
        band_r2(np.zeros((1, 10, 1)), np.zeros((1, 9, 1)), [1.0])
