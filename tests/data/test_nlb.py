"""Tests of the NLB/NWB importer on a small NWB-like HDF5 file written here with h5py."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from autolfads.data import read_session
from autolfads.data.nlb import bin_spikes, nwb_to_session, resample_behavior
from autolfads.errors import DataError

# Four trials of 1 s each starting at 0, 2, 4, 6 s; splits train, val, train, test.
TRIAL_STARTS = np.array([0.0, 2.0, 4.0, 6.0])
SPLITS = ["train", "val", "train", "test"]
# Units 0 and 2 are held in, unit 1 is held out. Spike times (s), unsorted on purpose for unit 2.
UNIT_SPIKES = [
    np.array([0.001, 0.019, 0.020, 0.055, 2.000, 2.139, 4.5, 6.01]),
    np.array([0.030, 0.1999999, 2.040, 2.041, 6.5]),
    np.array([4.100, 0.099, 1.100]),  # 1.100 is after trial 0's window, inside its fp window
]
HELDOUT = [False, True, False]


def write_nwb(path: Path, *, behavior: bool = True, drop: str | None = None, **trial_extra) -> Path:
    """An NWB-like file: ragged units table, trials table, and a 100 Hz behaviour TimeSeries."""
    with h5py.File(path, "w") as f:
        f["units/spike_times"] = np.concatenate(UNIT_SPIKES)
        f["units/spike_times_index"] = np.cumsum([len(s) for s in UNIT_SPIKES])
        f["units/heldout"] = np.array(HELDOUT)
        f["intervals/trials/start_time"] = TRIAL_STARTS
        f["intervals/trials/stop_time"] = TRIAL_STARTS + 1.0
        f.create_dataset("intervals/trials/split", data=SPLITS, dtype=h5py.string_dtype())
        f["intervals/trials/move_onset_time"] = TRIAL_STARTS + np.array([0.2, 0.3, np.nan, 0.2])
        f.create_dataset(
            "intervals/trials/cond", data=["a", "b", "a", "b"], dtype=h5py.string_dtype()
        )
        for name, values in trial_extra.items():
            f[f"intervals/trials/{name}"] = values
        if behavior:
            t = np.arange(0, 8.0, 0.01)  # 100 Hz
            series = f.create_group("processing/behavior/hand_vel")
            series["data"] = np.stack([t, -t], axis=1)  # (S, 2): value = time, -time
            series["timestamps"] = t
            slow = f.create_group("processing/behavior/Position/slow_pos")
            slow["data"] = np.arange(9.0)  # one sample per second
            slow["starting_time"] = 0.0
            slow["starting_time"].attrs["rate"] = 1.0
        if drop:
            del f[drop]
    return path


# --- binning ---------------------------------------------------------------------------------


def test_bin_spikes_counts_land_in_the_right_bins():
    spikes = [np.array([0.0, 0.0049, 0.005, 0.012, 1.0]), np.array([0.999])]
    counts = bin_spikes(spikes, np.array([0.0, 0.995]), n_bins=3, bin_s=0.005)
    # trial 0: [0, 5) ms holds 0.0 and 4.9 ms; 5 ms is on the edge and goes to the next bin
    np.testing.assert_array_equal(counts[0, :, 0], [2, 1, 1])
    np.testing.assert_array_equal(counts[1, :, 0], [0, 1, 0])  # 1.0 s in [1.000, 1.005)
    np.testing.assert_array_equal(counts[1, :, 1], [1, 0, 0])


def test_resample_behavior_averages_fast_and_interpolates_slow_signals():
    t = np.arange(0, 1.0, 0.001)
    fast = resample_behavior(t, t[:, None], np.array([0.1]), n_bins=2, bin_s=0.02)
    np.testing.assert_allclose(fast[0, :, 0], [0.1095, 0.1295])  # means of 20 samples each
    coarse = np.array([0.0, 1.0])
    slow = resample_behavior(coarse, np.array([[0.0], [10.0]]), np.array([0.5]), 1, 0.1)
    np.testing.assert_allclose(slow[0, 0, 0], 5.5)  # no sample in [0.5, 0.6): value at 0.55


# --- nwb_to_session --------------------------------------------------------------------------


def test_import_writes_a_valid_session_with_held_out_units_last(tmp_path):
    nwb = write_nwb(tmp_path / "x.nwb")
    summary = nwb_to_session(nwb, tmp_path / "s.h5", bin_ms=20, window_ms=(0, 200))
    session = read_session(summary.path)
    assert summary.heldin_units == (0, 2) and summary.heldout_units == (1,)
    assert summary.trials == {"train": 2, "valid": 1, "test": 1}
    assert session.encod["train"].shape == (2, 10, 2)
    assert session.recon["train"].shape == (2, 10, 3)
    assert session.encod["test"].shape == (1, 10, 2)
    np.testing.assert_array_equal(session.inds["train"], [0, 2])
    np.testing.assert_array_equal(session.inds["valid"], [1])
    np.testing.assert_array_equal(session.extra["recon_unit_ids"], [0, 2, 1])
    train0 = session.recon["train"][0]  # trial 0, 20 ms bins from 0 s
    np.testing.assert_array_equal(train0[:, 0], [2, 1, 1, 0, 0, 0, 0, 0, 0, 0])  # unit 0
    np.testing.assert_array_equal(train0[:, 1], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0])  # unit 2: 99 ms
    np.testing.assert_array_equal(train0[:, 2], [0, 1, 0, 0, 0, 0, 0, 0, 0, 1])  # held out
    np.testing.assert_array_equal(session.encod["train"], session.recon["train"][:, :, :2])
    valid0 = session.recon["valid"][0]  # trial 1 from 2 s: unit 0 at 2.000, 2.139
    np.testing.assert_array_equal(np.flatnonzero(valid0[:, 0]), [0, 6])
    assert valid0[2, 2] == 2  # held-out spikes at 2.040, 2.041


def test_alignment_window_and_forward_prediction(tmp_path):
    nwb = write_nwb(tmp_path / "x.nwb")
    summary = nwb_to_session(
        nwb,
        tmp_path / "s.h5",
        bin_ms=100,
        align_field="move_onset_time",
        window_ms=(-200, 300),
        fp_ms=1000,
    )
    session = read_session(summary.path)
    assert summary.dropped_trials == 1  # trial 2 has no move onset
    assert summary.trials == {"train": 1, "valid": 1, "test": 1}
    assert (summary.encod_seq_len, summary.fp_steps) == (5, 10)
    assert session.encod["train"].shape == (1, 5, 2)
    assert session.recon["train"].shape == (1, 15, 3)
    # trial 0 aligned at 0.2 s: bins start at 0.0 s; unit 2's spike at 1.100 s is fp bin 11
    np.testing.assert_array_equal(np.flatnonzero(session.recon["train"][0, :, 1]), [0, 11])
    assert session.dims.encod_seq_len == 5 and session.dims.recon_seq_len == 15


def test_default_window_is_the_shortest_trial(tmp_path):
    nwb = write_nwb(tmp_path / "x.nwb")
    summary = nwb_to_session(nwb, tmp_path / "s.h5", bin_ms=5)
    assert summary.encod_seq_len == 200  # 1 s trials in 5 ms bins (the NLB bin width)


def test_behavior_is_resampled_to_the_bins(tmp_path):
    nwb = write_nwb(tmp_path / "x.nwb")
    summary = nwb_to_session(
        nwb,
        tmp_path / "s.h5",
        bin_ms=50,
        window_ms=(0, 500),
        fp_ms=100,
        behavior_key=["hand_vel", "processing/behavior/Position/slow_pos"],
    )
    session = read_session(summary.path)
    behavior = session.extra["train_behavior"]
    assert behavior.shape == (2, 10, 3)  # encod bins only; 2 + 1 dimensions
    means = 0.02 + 0.05 * np.arange(10)  # hand_vel = t: mean of the samples at 0, 10, ..., 40 ms
    np.testing.assert_allclose(behavior[0, :, 0], means, atol=1e-6)
    np.testing.assert_allclose(behavior[1, :, 1], -(means + 4.0), atol=1e-6)  # trial 2, from 4 s
    slow = 0.025 + 0.05 * np.arange(10)  # slow_pos = t at 1 Hz: interpolated at bin centres...
    slow[0] = 0.0  # ...except the first bin, which holds the sample at 0 s
    np.testing.assert_allclose(behavior[0, :, 2], slow, atol=1e-6)
    assert session.extra["test_behavior"].shape == (1, 10, 3)


def test_conditions_and_psth(tmp_path):
    nwb = write_nwb(tmp_path / "x.nwb")
    summary = nwb_to_session(
        nwb, tmp_path / "s.h5", bin_ms=100, window_ms=(0, 500), condition_field="cond"
    )
    session = read_session(summary.path)
    np.testing.assert_array_equal(session.extra["train_condition"], [0, 0])
    np.testing.assert_array_equal(session.extra["valid_condition"], [1])
    psth = session.extra["psth"]
    assert psth.shape == (2, 5, 3)
    np.testing.assert_allclose(psth[0], session.recon["train"].mean(axis=0))
    np.testing.assert_allclose(psth[1], session.recon["valid"][0])


def test_heldout_units_argument_overrides_the_file(tmp_path):
    nwb = write_nwb(tmp_path / "x.nwb")
    summary = nwb_to_session(nwb, tmp_path / "s.h5", bin_ms=100, heldout_units=[0, 2])
    session = read_session(summary.path)
    assert summary.heldin_units == (1,)
    assert session.dims.encod_data_dim == 1 and session.dims.recon_data_dim == 3


def test_missing_groups_are_named(tmp_path):
    out = tmp_path / "s.h5"
    cases = {
        "units/spike_times_index": "/units/spike_times_index",
        "intervals/trials/split": "/intervals/trials/split",
        "intervals": "/intervals/trials",
    }
    for i, (key, named) in enumerate(cases.items()):
        nwb = write_nwb(tmp_path / f"x{i}.nwb", drop=key)
        with pytest.raises(DataError, match=f"x{i}.nwb: '{named}' is missing"):
            nwb_to_session(nwb, out, bin_ms=100)
    nwb = write_nwb(tmp_path / "nobehavior.nwb", behavior=False)
    with pytest.raises(DataError, match="'hand_vel' is not a group"):
        nwb_to_session(nwb, out, bin_ms=100, behavior_key="hand_vel")
    with pytest.raises(DataError, match="trials/move_onset' is missing"):
        nwb_to_session(nwb, out, bin_ms=100, align_field="move_onset")
    assert not out.exists()


def test_bad_options_and_splits_are_refused(tmp_path):
    nwb = write_nwb(tmp_path / "x.nwb")
    out = tmp_path / "s.h5"
    with pytest.raises(DataError, match="window_ms: 130 ms"):
        nwb_to_session(nwb, out, bin_ms=20, window_ms=(0, 130))
    with pytest.raises(DataError, match="bin_ms"):
        nwb_to_session(nwb, out, bin_ms=0)
    with pytest.raises(DataError, match="heldout_units"):
        nwb_to_session(nwb, out, bin_ms=100, heldout_units=[3])
    with h5py.File(nwb, "r+") as f:
        del f["intervals/trials/split"]
        f.create_dataset("intervals/trials/split", data=["test"] * 4, dtype=h5py.string_dtype())
    with pytest.raises(DataError, match=r"'train' and 'val' trials"):
        nwb_to_session(nwb, out, bin_ms=100)
    not_hdf5 = tmp_path / "plain.nwb"
    not_hdf5.write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        nwb_to_session(not_hdf5, out)
    assert not out.exists()
