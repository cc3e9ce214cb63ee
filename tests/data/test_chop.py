"""chop / merge: continuous recordings into overlapping trials and back."""

from __future__ import annotations

import numpy as np
import pytest

from autolfads.data.chop import chop, chop_starts, crossfade_weights, merge
from autolfads.errors import UsageError


def _recording(total_len: int, n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(total_len, n))


@pytest.mark.parametrize(
    ("total_len", "window", "overlap"),
    [(100, 20, 5), (103, 20, 5), (20, 20, 5), (50, 10, 0), (57, 10, 0), (40, 10, 7), (31, 8, 3)],
)
def test_chop_then_merge_gives_back_the_recording(total_len, window, overlap):
    x = _recording(total_len)
    trials = chop(x, window, overlap)
    assert trials.shape[1:] == (window, 3)
    np.testing.assert_allclose(merge(trials, overlap, total_len), x, rtol=0, atol=1e-12)


def test_chop_cuts_every_step_and_aligns_the_last_trial_to_the_end():
    x = np.arange(23)[:, None] * np.array([1, -1])  # (23, 2), value = bin index
    trials = chop(x, window=10, overlap=4)
    np.testing.assert_array_equal(chop_starts(23, 10, 4), [0, 6, 12, 13])
    np.testing.assert_array_equal(trials[:, 0, 0], [0, 6, 12, 13])
    np.testing.assert_array_equal(trials[-1, :, 0], np.arange(13, 23))
    np.testing.assert_array_equal(trials[..., 1], -trials[..., 0])


@pytest.mark.parametrize(
    ("total_len", "window", "overlap"), [(100, 20, 5), (103, 20, 5), (40, 10, 7), (9, 9, 0)]
)
def test_crossfade_weights_sum_to_one_at_every_bin(total_len, window, overlap):
    weights = crossfade_weights(total_len, window, overlap)
    starts = chop_starts(total_len, window, overlap)
    total = np.zeros(total_len)
    np.add.at(total, starts[:, None] + np.arange(window), weights)
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)
    assert (weights >= 0).all() and (weights <= 1).all()


def test_crossfade_is_linear_over_each_overlap():
    # starts 0, 6, 12, 13: the last trial shares 9 bins with trial 2 but takes over in its last 4
    weights = crossfade_weights(23, 10, 4)
    np.testing.assert_allclose(weights[1, :4], [1 / 5, 2 / 5, 3 / 5, 4 / 5])  # rises into trial 1
    np.testing.assert_allclose(weights[0, 6:], [4 / 5, 3 / 5, 2 / 5, 1 / 5])  # trial 0 fades out
    np.testing.assert_array_equal(weights[0, :6], 1.0)  # no neighbour: weight 1
    np.testing.assert_array_equal(weights[3, :5], 0.0)  # the end-aligned trial waits...
    np.testing.assert_allclose(weights[3, 5:9], [1 / 5, 2 / 5, 3 / 5, 4 / 5])  # ...then takes over
    np.testing.assert_allclose(weights[2, 6:], [4 / 5, 3 / 5, 2 / 5, 1 / 5])
    np.testing.assert_array_equal(weights[3, 9], 1.0)


def test_merge_blends_disagreeing_trials_smoothly():
    trials = np.stack([np.zeros((10, 1)), np.ones((10, 1))])  # starts 0 and 6: 4-bin overlap
    merged = merge(trials, overlap=4, total_len=16)[:, 0]
    np.testing.assert_allclose(merged[:6], 0.0)
    np.testing.assert_allclose(merged[6:10], [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(merged[10:], 1.0)


def test_merge_keeps_float32_and_extra_trailing_dimensions():
    x = _recording(30, n=4).astype(np.float32).reshape(30, 2, 2)
    trials = np.stack([x[s : s + 8] for s in chop_starts(30, 8, 2)])
    merged = merge(trials, overlap=2, total_len=30)
    assert merged.dtype == np.float32 and merged.shape == (30, 2, 2)
    np.testing.assert_allclose(merged, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("window", "overlap", "message"),
    [
        (10, 10, r"`overlap` must be in \[0, window\) = \[0, 10\), got 10"),
        (10, 12, "`overlap`"),
        (10, -1, "`overlap`"),
        (0, 0, "`window` must be >= 1"),
        (60, 5, "`window`=60 is longer than the recording"),
        (10.5, 2, "`window` must be an integer"),
    ],
)
def test_bad_window_or_overlap_names_the_argument(window, overlap, message):
    with pytest.raises(UsageError, match=message):
        chop(_recording(50), window, overlap)


def test_bad_shapes_name_the_argument():
    with pytest.raises(UsageError, match=r"`signal` must be 2-D \(T_total, N\), got shape \(50,\)"):
        chop(np.zeros(50), 10, 2)
    with pytest.raises(UsageError, match="`trials` has 3 trials, expected 6"):
        merge(np.zeros((3, 10, 2)), overlap=2, total_len=50)
    with pytest.raises(UsageError, match="`trials` must be"):
        merge(np.zeros(10), overlap=2, total_len=50)
