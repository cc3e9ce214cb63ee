"""Tests of the `calcium` (2-photon, RADICaL) and `emg` simulators (README, `autolfads simulate`)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from autolfads.cli import main
from autolfads.data.dataset import read_sessions
from autolfads.data.subframe import subframe_index, to_frame_bins
from autolfads.data.synthetic import simulate, simulate_to_file
from autolfads.errors import UsageError

CALCIUM = {"n_conditions": 3, "trials_per_condition": 5, "n_neurons": 7, "n_frames": 10}
EMG = {"n_conditions": 3, "trials_per_condition": 5, "n_muscles": 4, "n_steps": 30}
PER_TRIAL = ("encod_data", "recon_data", "truth", "inds", "condition", "latents")


def both_splits(arrays: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """train and valid arrays of one kind, put back in original trial order."""
    inds = np.concatenate([arrays["train_inds"], arrays["valid_inds"]])
    values = np.concatenate([arrays[f"train_{kind}"], arrays[f"valid_{kind}"]])
    return values[np.argsort(inds)]


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize(("name", "small"), [("calcium", CALCIUM), ("emg", EMG)])
def test_same_seed_same_arrays_other_seed_other_arrays(name, small):
    first = simulate(name, seed=7, **small)
    again = simulate(name, seed=7, **small)
    other = simulate(name, seed=8, **small)
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.array_equal(first["train_encod_data"], other["train_encod_data"])
    assert not np.array_equal(first["train_truth"], other["train_truth"])


# --------------------------------------------------------------------------- calcium


@pytest.mark.parametrize("subframes", [1, 4])
def test_calcium_keys_and_shapes(subframes):
    arrays = simulate("calcium", seed=0, **CALCIUM, subframes=subframes, frame_rate=25.0)
    splits = {f"{split}_{kind}" for split in ("train", "valid") for kind in PER_TRIAL}
    assert set(arrays) == splits | {"conversion_factor", "scan_offsets"}
    n_bins = 10 * subframes
    for split, n_trials in (("train", 12), ("valid", 3)):
        data = arrays[f"{split}_encod_data"]
        assert data.shape == (n_trials, n_bins, 7) and data.dtype == np.float32
        assert arrays[f"{split}_recon_data"] is data
        assert arrays[f"{split}_truth"].shape == data.shape
        assert np.isfinite(arrays[f"{split}_truth"]).all()
        assert arrays[f"{split}_latents"].shape == (n_trials, n_bins, 3)
    assert arrays["scan_offsets"].shape == (7,)
    assert float(arrays["conversion_factor"]) == 25.0  # truth in Hz, data per frame


def test_calcium_subframes_describe_the_same_trials_as_frames():
    frames = simulate("calcium", seed=3, **CALCIUM)
    for k in (3, 4):
        sub = simulate("calcium", seed=3, **CALCIUM, subframes=k)
        np.testing.assert_array_equal(sub["scan_offsets"], frames["scan_offsets"])
        np.testing.assert_array_equal(sub["valid_inds"], frames["valid_inds"])
        observed = subframe_index(sub["scan_offsets"], k)  # (N,)
        for split in ("train", "valid"):
            events = sub[f"{split}_encod_data"].reshape(-1, 10, k, 7)
            truth = sub[f"{split}_truth"].reshape(-1, 10, k, 7)
            latents = sub[f"{split}_latents"].reshape(-1, 10, k, 3)
            at_scan = (slice(None), slice(None), observed, np.arange(7))
            # the same events, and the same truth where the neuron is scanned
            np.testing.assert_array_equal(events[at_scan], frames[f"{split}_encod_data"])
            np.testing.assert_array_equal(truth[at_scan], frames[f"{split}_truth"])
            np.testing.assert_array_equal(
                to_frame_bins(sub[f"{split}_encod_data"], k), frames[f"{split}_encod_data"]
            )
            # the frame latents are the means of the sub-frame latents
            np.testing.assert_allclose(
                latents.mean(axis=2), frames[f"{split}_latents"], rtol=1e-5, atol=1e-5
            )
            # and the latent moves within a frame: sub-frame resolution has something to resolve
            assert np.abs(latents - latents.mean(axis=2, keepdims=True)).mean() > 0.05


def test_calcium_each_neuron_observed_once_per_frame_in_its_scan_sub_bin():
    arrays = simulate("calcium", seed=1, **CALCIUM, subframes=4)
    data = both_splits(arrays, "encod_data").reshape(15, 10, 4, 7)
    observed = ~np.isnan(data)
    np.testing.assert_array_equal(observed.sum(axis=2), 1)
    expected = np.broadcast_to(subframe_index(arrays["scan_offsets"], 4), (15, 10, 7))
    np.testing.assert_array_equal(observed.argmax(axis=2), expected)
    assert len(set(expected[0, 0].tolist())) > 1  # neurons are scanned at different times


def test_calcium_events_are_zero_or_at_least_s_min():
    arrays = simulate("calcium", seed=2, **CALCIUM, s_min=0.45, noise_std=0.2)
    events = both_splits(arrays, "encod_data")
    positive = events[events > 0]
    assert positive.min() >= 0.45
    assert 0.05 < positive.size / events.size < 0.95  # both zeros and events occur
    # noise makes event sizes other than the whole (decay-weighted) spike counts
    assert np.abs(positive - np.round(positive)).max() > 0.1


def test_calcium_sub_bin_must_divide_the_simulation_grid():
    with pytest.raises(
        UsageError, match="sim_subframes=12; expected a positive multiple of subframes=5"
    ):
        simulate("calcium", **CALCIUM, subframes=5)
    with pytest.raises(UsageError, match="s_min=0.0"):
        simulate("calcium", **CALCIUM, s_min=0.0)


def test_calcium_mean_event_matches_truth_without_noise():
    # without noise or threshold an event is the decay-weighted spike count of the frame period
    # before the scan, whose expectation is truth / conversion_factor; its variance is at most
    # its mean (Poisson), which bounds the standard errors of the means over 1000 trials
    arrays = simulate(
        "calcium",
        seed=4,
        n_conditions=1,
        trials_per_condition=1000,
        n_neurons=6,
        n_frames=12,
        base_rate=20.0,
        noise_std=0.0,
        s_min=1e-6,
    )
    events = both_splits(arrays, "encod_data").astype(np.float64)  # (1000, T, N)
    truth = both_splits(arrays, "truth")
    np.testing.assert_array_equal(truth, truth[:1].repeat(1000, axis=0))  # one condition
    expected = truth[0] / arrays["conversion_factor"]  # (T, N)
    assert expected.mean() > 0.5  # enough spikes for the comparison to mean something
    error = np.abs(events.mean(axis=0) - expected) / np.sqrt(expected / 1000)
    assert error.max() < 5.0
    # overall, within 4 standard errors (0.3 %): the decay weighting (about 4 %) must be right
    total, expected_total = events.sum(), 1000 * expected.sum()
    assert abs(total - expected_total) < 4 * np.sqrt(expected_total)


def latent_centroid_hz(latents: np.ndarray, bin_rate: float) -> float:
    """Spectral centroid (Hz) of (B, T, D) latents: power per trial, mean removed, over time."""
    centred = latents.astype(np.float64) - latents.mean(axis=1, keepdims=True)
    power = (np.abs(np.fft.rfft(centred, axis=1)) ** 2).sum(axis=(0, 2))  # (T // 2 + 1,)
    freqs = np.fft.rfftfreq(latents.shape[1], 1.0 / bin_rate)
    return float((freqs * power).sum() / power.sum())


TINY_FAST = {"n_conditions": 4, "trials_per_condition": 3, "n_neurons": 3, "n_frames": 60}


def test_calcium_speed_1_is_the_default_bit_for_bit():
    default = simulate("calcium", seed=5, **CALCIUM, subframes=2)
    explicit = simulate("calcium", seed=5, **CALCIUM, subframes=2, speed=1.0)
    assert default.keys() == explicit.keys()
    for key, value in default.items():
        np.testing.assert_array_equal(explicit[key], value, err_msg=key)
    faster = simulate("calcium", seed=5, **CALCIUM, subframes=2, speed=1.5)
    assert not np.array_equal(faster["train_latents"], default["train_latents"])


def test_calcium_speed_moves_the_latent_spectrum_up():
    # at sub-frame resolution (120 Hz bins) the spectrum of speed 4 (peak ~16 Hz) is not aliased
    # as it would be at the 30 Hz frames; its centroid scales about in proportion with speed
    centroid = {
        speed: latent_centroid_hz(
            simulate("calcium", seed=0, **TINY_FAST, subframes=4, speed=speed)["train_latents"],
            bin_rate=4 * 30.0,
        )
        for speed in (1.0, 2.0, 4.0)
    }
    assert centroid[4.0] > 2.5 * centroid[1.0]
    assert 1.4 * centroid[1.0] < centroid[2.0] < 0.75 * centroid[4.0]


def test_calcium_fast_speed_stays_finite_through_the_burn_in():
    # a frame of 0.8 Lorenz time units would make one RK4 bin diverge; the burn-in splits it
    arrays = simulate("calcium", seed=1, **CALCIUM, speed=8.0, burn_in=100)
    for split in ("train", "valid"):
        assert np.isfinite(arrays[f"{split}_latents"]).all()
        assert np.isfinite(arrays[f"{split}_truth"]).all()


@pytest.mark.parametrize("speed", [0.0, -1.0])
def test_calcium_speed_must_be_positive(speed):
    with pytest.raises(UsageError, match=f"speed={speed!r}; expected a number > 0"):
        simulate("calcium", **CALCIUM, speed=speed)


def test_calcium_test_split_with_subframes_holds_the_frame_test_trials():
    frames = simulate("calcium", seed=6, **CALCIUM, test_fraction=0.2)
    sub = simulate("calcium", seed=6, **CALCIUM, subframes=4, test_fraction=0.2)
    np.testing.assert_array_equal(sub["test_inds"], frames["test_inds"])
    assert sub["test_inds"].size == 3  # one test trial of each of the 3 conditions
    for kind in ("encod_data", "recon_data", "truth", "latents"):
        assert sub[f"test_{kind}"].shape[:2] == (3, 40), kind
    np.testing.assert_array_equal(
        to_frame_bins(sub["test_encod_data"], 4), frames["test_encod_data"]
    )
    assert np.isnan(sub["test_encod_data"]).mean() == pytest.approx(0.75)
    assert np.isfinite(sub["test_truth"]).all() and np.isfinite(sub["test_latents"]).all()


# --------------------------------------------------------------------------- emg


def test_emg_keys_shapes_and_positive_values():
    arrays = simulate("emg", seed=0, **EMG, n_latents=2, amplitude=2.0)
    splits = {f"{split}_{kind}" for split in ("train", "valid") for kind in PER_TRIAL}
    assert set(arrays) == splits | {"train_artifacts", "valid_artifacts", "conversion_factor"}
    data, truth = both_splits(arrays, "encod_data"), both_splits(arrays, "truth")
    assert data.shape == truth.shape == (15, 30, 4) and data.dtype == np.float32
    assert both_splits(arrays, "latents").shape == (15, 30, 2)
    assert np.isfinite(data).all() and data.min() > 0
    assert truth.min() > 0 and truth.max() < 1  # activations
    assert float(arrays["conversion_factor"]) == 0.5  # truth / 0.5 = mean signal, amplitude 2


def test_emg_signal_is_gamma_around_the_scaled_activation():
    arrays = simulate(
        "emg", seed=1, n_conditions=4, trials_per_condition=50, artifact_rate=0.0, gamma_shape=4.0
    )
    data = both_splits(arrays, "encod_data").astype(np.float64)
    mean = both_splits(arrays, "truth") / arrays["conversion_factor"]
    ratio = data / mean  # Gamma(shape 4, scale 1/4): mean 1, variance 1/4
    assert ratio.size > 200_000
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    assert ratio.var() == pytest.approx(0.25, rel=0.05)
    assert not both_splits(arrays, "artifacts").any()
    assert np.ptp(mean) > 0.5  # the activations are modulated, not flat


def test_emg_artifacts_occur_at_the_configured_rate_and_size():
    arrays = simulate(
        "emg", seed=2, n_conditions=4, trials_per_condition=50, artifact_rate=0.01, gamma_shape=8.0
    )
    artifacts = both_splits(arrays, "artifacts")
    data = both_splits(arrays, "encod_data")
    n = artifacts.size  # 240 000 channel-bins: about 2400 artifacts, std about 49
    assert abs(artifacts.sum() - 0.01 * n) < 5 * np.sqrt(0.01 * 0.99 * n)
    typical = both_splits(arrays, "truth").mean()  # mean signal (amplitude 1)
    assert data[artifacts].min() >= 10.0 * typical
    assert data[artifacts].max() <= 30.0 * typical + data[~artifacts].max()
    assert np.quantile(data[~artifacts], 0.999) < 10.0 * typical


def test_emg_trials_of_a_condition_differ_only_through_the_jitter():
    still = simulate("emg", seed=3, **EMG, time_jitter=0.0)
    truth = both_splits(still, "truth").reshape(3, 5, 30, 4)
    np.testing.assert_array_equal(truth, truth[:, :1].repeat(5, axis=1))
    jittered = both_splits(simulate("emg", seed=3, **EMG), "truth").reshape(3, 5, 30, 4)
    assert not np.array_equal(jittered[:, 0], jittered[:, 1])
    assert not np.array_equal(truth[0, 0], truth[1, 0])  # conditions differ


# --------------------------------------------------------------------------- files and CLI


@pytest.mark.parametrize(
    ("name", "small", "reconstruction"),
    [("calcium", {**CALCIUM, "subframes": 2}, "zig"), ("emg", EMG, "gamma")],
)
def test_written_file_is_a_valid_session(name, small, reconstruction, tmp_path):
    overrides = [f"{k}={v}" for k, v in small.items()]
    out = simulate_to_file(name, tmp_path / "sim.h5", seed=5, overrides=overrides)
    arrays = simulate(name, seed=5, **small)
    (session,) = read_sessions(out, reconstruction=reconstruction)
    np.testing.assert_array_equal(session.recon["valid"], arrays["valid_recon_data"])
    np.testing.assert_allclose(
        session.truth["valid"], arrays["valid_truth"] / arrays["conversion_factor"], rtol=1e-6
    )
    with h5py.File(out, "r") as file:
        assert set(file.keys()) == set(arrays)
        assert file.attrs["simulator"] == name


def test_cli_simulates_calcium_with_subframes(tmp_path, capsys):
    out = tmp_path / "calcium.h5"
    sizes = [f"{k}={v}" for k, v in CALCIUM.items()]
    assert main(["simulate", "calcium", str(out), "subframes=4", *sizes, "--seed", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    with h5py.File(out, "r") as file:
        data = file["train_encod_data"][()]
        offsets = file["scan_offsets"][()]
    assert data.shape == (12, 40, 7)
    assert np.isnan(data).mean() == pytest.approx(0.75)
    np.testing.assert_array_equal(
        data, simulate("calcium", seed=2, **CALCIUM, subframes=4)["train_encod_data"]
    )
    assert offsets.shape == (7,)


def test_cli_simulates_calcium_at_another_speed(tmp_path):
    sizes = [f"{k}={v}" for k, v in CALCIUM.items()]
    paths = {speed: tmp_path / f"speed{speed}.h5" for speed in ("1", "2")}
    for speed, path in paths.items():
        assert main(["simulate", "calcium", str(path), f"speed={speed}", *sizes]) == 0
    latents = {}
    for speed, path in paths.items():
        with h5py.File(path, "r") as file:
            latents[speed] = file["train_latents"][()]
            assert json.loads(file.attrs["params"])["speed"] == float(speed)
    assert not np.array_equal(latents["1"], latents["2"])
    np.testing.assert_array_equal(latents["1"], simulate("calcium", **CALCIUM)["train_latents"])
