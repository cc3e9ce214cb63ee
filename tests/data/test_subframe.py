"""Tests of the sub-frame (SBTT) layout of 2-photon events: placement, round trip, arguments."""

from __future__ import annotations

import numpy as np
import pytest

from autolfads.data.subframe import (
    scan_offsets_by_row,
    subframe_index,
    to_frame_bins,
    to_subframe_bins,
)


def random_events(shape: tuple[int, int, int] = (3, 5, 4), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 1.0, shape).astype(np.float32)


def test_each_event_lands_in_the_sub_bin_of_its_scan_and_nan_elsewhere():
    events = random_events()  # (B=3, T=5, N=4)
    offsets = np.array([0.0, 0.25, 0.6, 0.99])  # K = 4: sub-bins 0, 1, 2, 3
    out = to_subframe_bins(events, offsets, 4)
    assert out.shape == (3, 20, 4) and out.dtype == np.float32
    expected = np.full((3, 20, 4), np.nan, dtype=np.float32)
    for n, sub in enumerate([0, 1, 2, 3]):
        for f in range(5):
            expected[:, f * 4 + sub, n] = events[:, f, n]
    np.testing.assert_array_equal(out, expected)


def test_every_neuron_is_observed_exactly_once_per_frame():
    events = random_events((2, 7, 30), seed=1)
    offsets = scan_offsets_by_row(30, 3)
    out = to_subframe_bins(events, offsets, 3)
    observed = ~np.isnan(out).reshape(2, 7, 3, 30)
    np.testing.assert_array_equal(observed.sum(axis=2), 1)
    np.testing.assert_array_equal(
        observed.argmax(axis=2), np.broadcast_to(offsets * 3 // 1, (2, 7, 30))
    )


def test_sub_bin_is_the_floor_of_offset_times_k_at_the_bin_edges():
    offsets = np.array([0.0, 0.2499, 0.25, 0.5, 0.75, 1.0 - 1e-12])
    np.testing.assert_array_equal(subframe_index(offsets, 4), [0, 0, 1, 2, 3, 3])
    np.testing.assert_array_equal(subframe_index(offsets, 1), 0)


@pytest.mark.parametrize("n_subframes", [1, 2, 5])
def test_round_trip_back_to_frames(n_subframes):
    events = random_events((2, 6, 9), seed=2)
    events[0, 3, 4] = np.nan  # a frame not observed at all stays unobserved
    offsets = scan_offsets_by_row(9, 4)
    back = to_frame_bins(to_subframe_bins(events, offsets, n_subframes), n_subframes)
    np.testing.assert_array_equal(back, events)


def test_to_frame_bins_sums_observed_values_and_is_nan_without_any():
    data = np.array([[[1.0], [np.nan], [np.nan], [np.nan], [2.0], [3.0]]])  # (1, 6, 1), K = 2
    np.testing.assert_array_equal(to_frame_bins(data, 2)[0, :, 0], [1.0, np.nan, 5.0])


def test_integer_events_become_float32_and_float64_stays_float64():
    counts = np.ones((1, 2, 3), dtype=np.int64)
    assert to_subframe_bins(counts, np.zeros(3), 2).dtype == np.float32
    assert to_subframe_bins(counts.astype(np.float64), np.zeros(3), 2).dtype == np.float64


def test_scan_offsets_are_row_fractions_in_the_unit_interval_and_seeded():
    offsets = scan_offsets_by_row(200, 5, n_rows=64)
    assert offsets.shape == (200,)
    assert offsets.min() >= 0.0 and offsets.max() < 1.0
    np.testing.assert_array_equal(offsets * 64, np.round(offsets * 64))
    assert len(np.unique(offsets)) > 40  # neurons spread over the rows
    np.testing.assert_array_equal(offsets, scan_offsets_by_row(200, 5, n_rows=64))
    from_generator = scan_offsets_by_row(200, np.random.default_rng(5), n_rows=64)
    np.testing.assert_array_equal(offsets, from_generator)
    assert not np.array_equal(offsets, scan_offsets_by_row(200, 6, n_rows=64))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: to_subframe_bins(np.zeros((2, 3)), np.zeros(3), 2), r"events: shape \(2, 3\)"),
        (lambda: to_subframe_bins(np.zeros((1, 2, 3)), np.zeros(4), 2), "scan_offsets: 4 offsets"),
        (lambda: to_subframe_bins(np.zeros((1, 2, 3)), np.zeros((3, 1)), 2), "scan_offsets: shape"),
        (
            lambda: to_subframe_bins(np.zeros((1, 2, 2)), [0.5, 1.0], 2),
            "scan_offsets: 1.0 at index 1",
        ),
        (lambda: to_subframe_bins(np.zeros((1, 2, 2)), [np.nan, 0.1], 2), "scan_offsets: nan"),
        (lambda: to_subframe_bins(np.zeros((1, 2, 2)), [-0.1, 0.1], 2), "scan_offsets: -0.1"),
        (lambda: to_subframe_bins(np.zeros((1, 2, 2)), [0.0, 0.1], 0), "n_subframes: got 0"),
        (lambda: to_subframe_bins(np.zeros((1, 2, 2)), [0.0, 0.1], 2.0), "n_subframes: got 2.0"),
        (lambda: to_frame_bins(np.zeros((1, 5, 2)), 2), "subframe_data: 5 time bins"),
        (lambda: to_frame_bins(np.zeros((5, 2)), 2), "subframe_data: shape"),
        (lambda: scan_offsets_by_row(0), "n_neurons: got 0"),
        (lambda: scan_offsets_by_row(3, n_rows=0), "n_rows: got 0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()
