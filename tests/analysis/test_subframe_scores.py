"""Tests of autolfads.analysis.subframe_scores: R^2 at each neuron's scanned sub-bin."""

import numpy as np
import pytest

from autolfads.analysis.metrics import r2_score
from autolfads.analysis.subframe_scores import at_scan_subbins, sampled_subbin_r2

K = 4
OFFSETS = np.array([0.0, 0.3, 0.55, 0.9, 0.26])  # sub-bins 0, 1, 2, 3, 1


def truth_and_rates(seed=0, shape=(6, 5, 5)):
    """(B, T*K, N) smooth truth and a noisy prediction of it."""
    rng = np.random.default_rng(seed)
    b, t, n = shape
    time = np.arange(t * K)[None, :, None]
    truth = 1.0 + np.sin(0.3 * time + rng.uniform(0, 6, (b, 1, n)))
    return truth, truth + 0.3 * rng.standard_normal(truth.shape)


def scanned_mask(n_bins: int) -> np.ndarray:
    """(T*K, N) True at each neuron's scanned sub-bin, built by hand from OFFSETS."""
    mask = np.zeros((n_bins, OFFSETS.size), dtype=bool)
    for n, sub in enumerate([0, 1, 2, 3, 1]):
        mask[sub::K, n] = True
    return mask


def test_equals_r2_score_of_the_scanned_values_gathered_by_hand():
    truth, rates = truth_and_rates()
    mask = scanned_mask(truth.shape[1])
    # per neuron, the scanned bins in time order: (B, T, N)
    gathered_truth = np.stack([truth[:, mask[:, n], n] for n in range(5)], axis=-1)
    gathered_rates = np.stack([rates[:, mask[:, n], n] for n in range(5)], axis=-1)
    assert gathered_truth.shape == (6, 5, 5)
    np.testing.assert_array_equal(at_scan_subbins(truth, OFFSETS, K), gathered_truth)
    expected = r2_score(gathered_truth, gathered_rates)
    assert sampled_subbin_r2(truth, rates, OFFSETS, K) == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(r2_score(truth, rates), abs=1e-3)  # not all bins


def test_unscanned_sub_bins_do_not_count_and_scanned_ones_do():
    truth, rates = truth_and_rates(seed=1)
    score = sampled_subbin_r2(truth, rates, OFFSETS, K)
    unscanned = ~scanned_mask(truth.shape[1])[None].repeat(truth.shape[0], axis=0)
    wild_rates, wild_truth = rates.copy(), truth.copy()
    wild_rates[unscanned] = 1e6
    wild_truth[unscanned] = -1e6
    assert sampled_subbin_r2(wild_truth, wild_rates, OFFSETS, K) == score
    moved = rates.copy()
    moved[2, 4 * K + 2, 2] += 1.0  # neuron 2 is scanned in sub-bin 2 of frame 4
    assert sampled_subbin_r2(truth, moved, OFFSETS, K) < score


def test_perfect_rates_score_one():
    truth, _ = truth_and_rates(seed=2)
    assert sampled_subbin_r2(truth, truth.copy(), OFFSETS, K) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("truth_shape", "rates_shape", "offsets", "k", "message"),
    [
        ((2, 20, 5), (2, 16, 5), OFFSETS, K, "truth/rates: shapes"),
        ((2, 18, 5), (2, 18, 5), OFFSETS, K, "18 time bins; expected a multiple of n_subframes=4"),
        ((2, 20, 5), (2, 20, 5), OFFSETS[:3], K, "scan_offsets: 3 offsets; expected one per"),
        ((2, 20, 5), (2, 20, 5), OFFSETS, 0, "n_subframes: got 0"),
        ((20, 5), (20, 5), OFFSETS, K, "expected 3 dimensions"),
    ],
)
def test_bad_shapes_or_k_are_refused_naming_the_argument(
    truth_shape, rates_shape, offsets, k, message
):
    with pytest.raises(ValueError, match=message):
        sampled_subbin_r2(np.ones(truth_shape), np.ones(rates_shape), offsets, k)


def test_offsets_out_of_range_are_refused():
    with pytest.raises(ValueError, match="scan_offsets: 1.0 at index 0"):
        at_scan_subbins(np.ones((1, 8, 1)), np.array([1.0]), K)
