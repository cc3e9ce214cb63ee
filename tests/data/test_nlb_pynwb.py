"""`autolfads convert nwb` on NWB files written by pynwb itself: counts against an independent
histogram, behaviour against per-bin means, conditions, held-out units, test trials from a second
file, and bad input refused in one line (exit status 2)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

pytest.importorskip("pynwb")

from nwb_files import BEHAVIOR_HZ, simulate_recording, write_nwb  # noqa: E402

from autolfads.cli import main  # noqa: E402
from autolfads.data import read_session  # noqa: E402

SPLITS = ["train", "val", "none", "train", "test", "train", "val", "train", "train", "val"]
HELDOUT = [False, True, False, False, True, False, False]  # units 1 and 4 held out
BIN_S, WINDOW_S, FP_S = 0.02, (-0.25, 0.45), 0.2
LABEL = {"train": "train", "val": "valid", "test": "test"}


@pytest.fixture(scope="module")
def recording():
    return simulate_recording(SPLITS, HELDOUT, seed=3)


@pytest.fixture(scope="module")
def nwb_path(recording, tmp_path_factory):
    return write_nwb(tmp_path_factory.mktemp("nwb") / "sim_train.nwb", recording)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def expected_counts(recording, row: int, units, n_bins: int) -> np.ndarray:
    """(n_bins, len(units)) counts by np.histogram, bins from the trial's move onset - 250 ms."""
    start = recording.trials["move_onset_time"][row] + WINDOW_S[0]
    edges = start + BIN_S * np.arange(n_bins + 1)
    return np.stack([np.histogram(recording.spikes[u], bins=edges)[0] for u in units], axis=1)


def test_a_pynwb_file_converts_exactly(recording, nwb_path, tmp_path, capsys):
    out = tmp_path / "session.h5"
    argv = ["convert", "nwb", str(nwb_path), str(out), "--bin-ms", "20"]
    argv += ["--align", "move_onset_time", "--window", "-250", "450", "--fp-ms", "200"]
    argv += ["--behavior", "hand_vel", "--condition", "trial_type", "trial_version"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "5 train, 3 valid, 1 test trials; 5 held-in + 2 held-out units; 35 + 10 forward" in said

    session = read_session(out)
    n_bins, n_fp = 35, 10
    heldin, heldout = [0, 2, 3, 5, 6], [1, 4]
    np.testing.assert_array_equal(session.extra["recon_unit_ids"], heldin + heldout)
    np.testing.assert_array_equal(session.extra["recon_unit_heldout"], [0] * 5 + [1] * 2)
    for split in ("train", "valid", "test"):
        rows = np.flatnonzero([LABEL.get(s) == split for s in SPLITS])
        np.testing.assert_array_equal(session.inds[split], rows)  # NWB table order
        for b, row in enumerate(rows):
            encod = expected_counts(recording, row, heldin, n_bins)
            np.testing.assert_array_equal(session.encod[split][b], encod)
            if split != "test":
                recon = expected_counts(recording, row, heldin + heldout, n_bins + n_fp)
                np.testing.assert_array_equal(session.recon[split][b], recon)
    assert "test" not in session.recon
    with h5py.File(out, "r") as f:
        assert f.attrs["bin_ms"] == 20.0 and f.attrs["fp_steps"] == n_fp
        assert f.attrs["align_field"] == "move_onset_time" and f.attrs["eval_split"] == "test"
        np.testing.assert_array_equal(f.attrs["window_ms"], [-250.0, 450.0])
        assert "nlb_dataset" not in f.attrs


def test_behaviour_is_the_mean_of_its_samples_in_each_bin(recording, nwb_path, tmp_path):
    out = tmp_path / "session.h5"
    argv = ["convert", "nwb", str(nwb_path), str(out), "--bin-ms", "20", "--align"]
    assert (
        main([*argv, "move_onset_time", "--window", "-250", "450", "--behavior", "hand_vel"]) == 0
    )
    session = read_session(out)
    behavior = session.extra["valid_behavior"]  # (3, 35, 2): encod bins only
    assert behavior.shape == (3, 35, 2)
    t, v = recording.hand_t, recording.hand_vel
    for b, row in enumerate(session.inds["valid"]):
        start = recording.trials["move_onset_time"][row] + WINDOW_S[0]
        for k in range(35):
            inside = (t >= start + k * BIN_S) & (t < start + (k + 1) * BIN_S)
            assert inside.sum() == round(BIN_S * BEHAVIOR_HZ)  # 20 samples at 1 kHz
            np.testing.assert_allclose(behavior[b, k], v[inside].mean(axis=0), rtol=1e-5, atol=1e-5)


def test_conditions_are_the_combinations_of_several_columns(recording, nwb_path, tmp_path):
    out = tmp_path / "session.h5"
    argv = ["convert", "nwb", str(nwb_path), str(out), "--bin-ms", "50"]
    assert main([*argv, "--window", "0", "500", "--condition", "trial_type", "trial_version"]) == 0
    session = read_session(out)
    pairs = sorted(
        {
            (int(a), int(c))
            for a, c, s in zip(*_columns(recording), SPLITS, strict=True)
            if s != "none"
        }
    )
    for split in ("train", "valid", "test"):
        rows = session.inds[split]
        types, versions = (recording.trials[c][rows] for c in ("trial_type", "trial_version"))
        expected = [pairs.index((int(a), int(c))) for a, c in zip(types, versions, strict=True)]
        np.testing.assert_array_equal(session.extra[f"{split}_condition"], expected)
    assert session.extra["psth"].shape == (len(pairs), 10, 7)


def _columns(recording):
    return recording.trials["trial_type"], recording.trials["trial_version"]


def test_test_trials_come_from_the_test_file(nwb_path, tmp_path):
    train_rec = simulate_recording(["train", "val", "train", "val"], HELDOUT, seed=5)
    train_nwb = write_nwb(tmp_path / "a_train.nwb", train_rec, behavior=False)
    test_rec = simulate_recording(["test", "none", "test"], [False] * 5, seed=6)  # held-in only
    test_nwb = write_nwb(tmp_path / "a_test.nwb", test_rec, behavior=False)
    out = tmp_path / "session.h5"
    argv = ["convert", "nwb", str(train_nwb), str(out), "--dataset", "mc_maze_small"]
    assert main([*argv, "--bin-ms", "20", "--test", str(test_nwb)]) == 0
    session = read_session(out)
    np.testing.assert_array_equal(session.inds["test"], [0, 2])
    for b, row in enumerate([0, 2]):  # NLB's MC_Maze window: move onset -250..450 ms
        counts = expected_counts(test_rec, row, range(5), 35)
        np.testing.assert_array_equal(session.encod["test"][b], counts)
    assert session.recon["train"].shape == (2, 45, 7)
    with h5py.File(out, "r") as f:
        assert f.attrs["nlb_dataset"] == "mc_maze_small" and f.attrs["eval_split"] == "test"
        assert f.attrs["fp_ms"] == 200.0 and f.attrs["test_source"] == str(test_nwb)
    # the main file's own test trial clashes with the test file's
    assert main(["convert", "nwb", str(nwb_path), str(out), "--test", str(test_nwb)]) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--align", "go_cue_time"], "'/intervals/trials/go_cue_time' is missing"),
        (["--condition", "maze_id"], "'/intervals/trials/maze_id' is missing"),
        (["--align", "split"], "'/intervals/trials/split' holds text"),
        (["--behavior", "eye_pos"], "'eye_pos' is not a group"),
        (["--bin-ms", "0"], "bin_ms: got 0.0; expected a positive number"),
        (["--bin-ms", "30", "--window", "-250", "450"], "window_ms: 700 ms; expected a positive"),
        (["--bin-ms", "20", "--window", "0", "100", "--fp-ms", "30"], "fp_ms: 30 ms"),
        (["--bin-ms", "five"], "argument --bin-ms: invalid float value: 'five'"),
        (["--dataset", "mc_mize"], "dataset: got 'mc_mize'; expected one of mc_maze"),
        (["--heldout-units", "9"], "heldout_units: got [9]"),
        (["--test", "MISSING"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(options, message, nwb_path, tmp_path, capsys):
    out = tmp_path / "session.h5"
    options = [str(tmp_path / "none.nwb") if o == "MISSING" else o for o in options]
    assert main(["convert", "nwb", str(nwb_path), str(out), *options]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_missing_or_unreadable_file_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "session.h5"
    assert main(["convert", "nwb", str(tmp_path / "absent.nwb"), str(out)]) == 2
    assert "absent.nwb: no such file" in one_error_line(capsys.readouterr().err)
    (tmp_path / "text.nwb").write_text("not an NWB file")
    assert main(["convert", "nwb", str(tmp_path / "text.nwb"), str(out)]) == 2
    assert "is not an HDF5 file" in one_error_line(capsys.readouterr().err)
    assert main(["convert", "csv", "x", "y"]) == 2
    assert "invalid choice: 'csv'" in one_error_line(capsys.readouterr().err)
    assert not out.exists()
