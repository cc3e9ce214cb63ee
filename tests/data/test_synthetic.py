"""Tests of the synthetic datasets (README, `autolfads simulate`): ground truth, statistics, layout."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest

from autolfads.data.synthetic import SIMULATORS, parse_overrides, simulate, simulate_to_file
from autolfads.errors import UsageError

SMALL = {
    "chaotic-rnn": {"n_conditions": 6, "trials_per_condition": 5, "n_steps": 40},
    "lorenz": {"n_conditions": 5, "trials_per_condition": 4, "n_steps": 30},
    "oscillator": {"n_conditions": 5, "trials_per_condition": 4, "n_steps": 30},
    "calcium": {"n_conditions": 5, "trials_per_condition": 4, "n_neurons": 6, "n_frames": 10},
    "emg": {"n_conditions": 5, "trials_per_condition": 4, "n_steps": 30},
}
SPIKING = ("chaotic-rnn", "lorenz", "oscillator")  # integer counts; calcium and emg are real-valued
REQUIRED = ("train_encod_data", "valid_encod_data", "train_recon_data", "valid_recon_data")


def both_splits(arrays: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """train and valid arrays of one kind, put back in original trial order."""
    inds = np.concatenate([arrays["train_inds"], arrays["valid_inds"]])
    values = np.concatenate([arrays[f"train_{kind}"], arrays[f"valid_{kind}"]])
    return values[np.argsort(inds)]


def expected_counts(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return both_splits(arrays, "truth") / arrays["conversion_factor"]


# --------------------------------------------------------------------------- chaotic-rnn


def test_chaotic_rnn_rates_span_zero_to_max_rate_in_every_trial():
    arrays = simulate("chaotic-rnn", seed=0, **SMALL["chaotic-rnn"], max_rate=30.0)
    truth = both_splits(arrays, "truth")  # (B, T, N) in Hz
    assert truth.shape == (30, 40, 50)
    np.testing.assert_allclose(truth.min(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(truth.max(axis=(1, 2)), 30.0, rtol=1e-6)
    assert float(arrays["conversion_factor"]) == pytest.approx(100.0)  # 1 / (10 ms)


def test_chaotic_rnn_default_spike_counts_match_truth_within_sampling_error():
    arrays = simulate("chaotic-rnn", seed=5)
    counts, expected = both_splits(arrays, "encod_data"), expected_counts(arrays)
    assert counts.shape == (4000, 100, 50)
    # group the bins by expected count; Poisson variance = mean, so the mean of n counts has
    # standard error sqrt(mean / n)
    group = np.digitize(expected, [0.05, 0.15, 0.25]).ravel()
    n = np.bincount(group)
    observed = np.bincount(group, weights=counts.ravel()) / n
    mean = np.bincount(group, weights=expected.ravel()) / n
    assert n.size == 4 and n.min() > 10_000
    np.testing.assert_array_less(np.abs(observed - mean), 5 * np.sqrt(mean / n))


def test_chaotic_rnn_trials_of_a_condition_share_rates_but_not_spikes():
    arrays = simulate("chaotic-rnn", seed=1, **SMALL["chaotic-rnn"])
    truth, counts = both_splits(arrays, "truth"), both_splits(arrays, "encod_data")
    by_condition = truth.reshape(6, 5, 40, 50)
    np.testing.assert_array_equal(by_condition, by_condition[:, :1].repeat(5, axis=1))
    assert not np.array_equal(by_condition[0], by_condition[1])
    assert not np.array_equal(counts[0], counts[1])


def test_chaotic_rnn_inputs_give_one_pulse_per_trial_in_the_middle_half():
    arrays = simulate("chaotic-rnn", seed=2, n_conditions=40, trials_per_condition=5, n_steps=10)
    assert "train_true_inputs" not in arrays
    arrays = simulate(
        "chaotic-rnn", seed=2, n_conditions=40, trials_per_condition=5, n_steps=10, inputs=True
    )
    inputs = both_splits(arrays, "true_inputs")  # (B, T, 1)
    assert inputs.shape == (200, 10, 1)
    trial, time, _ = np.nonzero(inputs)
    np.testing.assert_array_equal(trial, np.arange(200))  # exactly one pulse per trial
    np.testing.assert_array_equal(inputs[trial, time, 0], 20.0)
    # T = 10: T/4 = 2.5 <= t < 7.5 = 3T/4, and every allowed bin occurs among 200 trials
    assert set(time.tolist()) == {3, 4, 5, 6, 7}


def test_chaotic_rnn_pulse_changes_the_rates_from_its_own_bin_on():
    arrays = simulate(
        "chaotic-rnn", seed=3, n_conditions=4, trials_per_condition=10, n_steps=60, inputs=True
    )
    truth = both_splits(arrays, "truth")
    pulse_bin = both_splits(arrays, "true_inputs")[:, :, 0].argmax(axis=1)
    # two trials of condition 0 with different pulse bins: before the earlier pulse both follow
    # the same trajectory, up to each trial's own min-max scaling (an affine map)
    i, j = _two_pulse_times(pulse_bin[:10])
    t = pulse_bin[i]
    a, b = truth[i].ravel(), truth[j].ravel()
    before = np.arange(a.size) < t * truth.shape[2]
    fit = np.polyfit(b[before], a[before], 1)
    residual = np.abs(np.polyval(fit, b) - a).reshape(truth.shape[1:]).max(axis=1)  # (T,)
    assert residual[:t].max() < 1e-3
    assert residual[t] > 0.1


def _two_pulse_times(pulse_bin: np.ndarray) -> tuple[int, int]:
    """Indices (i, j) of two trials with pulse_bin[i] < pulse_bin[j]."""
    order = np.argsort(pulse_bin)
    i = int(order[0])
    j = int(next(k for k in order if pulse_bin[k] > pulse_bin[i]))
    return i, j


def test_chaotic_rnn_gain_defaults_to_1_5_or_2_5_with_inputs():
    explicit = simulate("chaotic-rnn", seed=4, **SMALL["chaotic-rnn"], g=1.5)
    default = simulate("chaotic-rnn", seed=4, **SMALL["chaotic-rnn"])
    other = simulate("chaotic-rnn", seed=4, **SMALL["chaotic-rnn"], g=2.5)
    np.testing.assert_array_equal(explicit["train_truth"], default["train_truth"])
    assert not np.array_equal(other["train_truth"], default["train_truth"])
    # inputs=true with g unset must equal inputs=true with g=2.5 given explicitly
    given = simulate("chaotic-rnn", seed=4, **SMALL["chaotic-rnn"], inputs=True, g=2.5)
    unset = simulate("chaotic-rnn", seed=4, **SMALL["chaotic-rnn"], inputs=True)
    np.testing.assert_array_equal(given["train_truth"], unset["train_truth"])


# --------------------------------------------------------------------------- all simulators


def test_every_simulator_has_a_small_test_size():
    assert set(SMALL) == set(SIMULATORS)


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_same_seed_same_arrays_other_seed_other_arrays(name):
    first = simulate(name, seed=7, **SMALL[name])
    again = simulate(name, seed=7, **SMALL[name])
    other = simulate(name, seed=8, **SMALL[name])
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.array_equal(first["train_encod_data"], other["train_encod_data"])
    assert not np.array_equal(first["train_truth"], other["train_truth"])


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_split_is_80_20_within_every_condition(name):
    arrays = simulate(name, seed=0, **{**SMALL[name], "trials_per_condition": 10})
    n_conditions = SMALL[name]["n_conditions"]
    train, valid = arrays["train_inds"], arrays["valid_inds"]
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train, valid])), np.arange(10 * n_conditions)
    )
    np.testing.assert_array_equal(arrays["train_condition"], train // 10)
    np.testing.assert_array_equal(arrays["valid_condition"], valid // 10)
    np.testing.assert_array_equal(np.bincount(train // 10), np.full(n_conditions, 8))
    np.testing.assert_array_equal(np.bincount(valid // 10), np.full(n_conditions, 2))
    # the valid trials are not the same positions in every condition
    assert len(set((valid % 10).tolist())) > 2


@pytest.mark.parametrize("name", SPIKING)
def test_layout_encod_equals_recon_and_truth_matches_data_shape(name):
    arrays = simulate(name, seed=0, **SMALL[name])
    for split in ("train", "valid"):
        counts = arrays[f"{split}_encod_data"]
        assert counts.dtype.kind == "i" and counts.min() >= 0
        np.testing.assert_array_equal(arrays[f"{split}_recon_data"], counts)
        assert arrays[f"{split}_truth"].shape == counts.shape
        assert arrays[f"{split}_inds"].shape == (counts.shape[0],)
        assert np.all(np.isfinite(arrays[f"{split}_truth"]))


# --------------------------------------------------------------------------- lorenz, oscillator


def test_lorenz_latents_are_normalised_and_not_degenerate():
    arrays = simulate("lorenz", seed=0)
    latents = both_splits(arrays, "latents")
    assert arrays["train_encod_data"].shape[1:] == (50, 29)
    assert latents.shape == (65 * 24, 50, 3)
    flat = latents.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, rtol=1e-4)
    assert np.linalg.cond(np.corrcoef(flat.T)) < 100
    assert float(arrays["conversion_factor"]) == pytest.approx(50.0)  # 1 / (20 ms)
    assert 2.0 < np.median(arrays["train_truth"]) < 10.0  # around the 5 Hz base rate


@pytest.mark.parametrize("name", ["lorenz", "oscillator"])
def test_log_rates_are_linear_in_the_latents(name):
    arrays = simulate(name, seed=1, **SMALL[name])
    latents = arrays["train_latents"].reshape(-1, arrays["train_latents"].shape[-1])
    log_rates = np.log(arrays["train_truth"].reshape(latents.shape[0], -1))
    design = np.column_stack([np.ones(len(latents)), latents])
    coef, *_ = np.linalg.lstsq(design, log_rates, rcond=None)
    np.testing.assert_allclose(design @ coef, log_rates, atol=1e-4)
    assert np.abs(coef[1:]).max() > 0.1  # the latents do modulate the rates


def test_oscillator_latent_rotates_by_the_angle_per_step():
    arrays = simulate("oscillator", seed=0, **SMALL["oscillator"], angle_per_step=0.2)
    latents = arrays["train_latents"].astype(np.float64)  # (B, T, 2)
    assert arrays["train_encod_data"].shape[1:] == (30, 100)
    np.testing.assert_allclose(np.hypot(latents[..., 0], latents[..., 1]), 1.0, atol=1e-6)
    angle = np.arctan2(latents[..., 1], latents[..., 0])
    step = np.angle(np.exp(1j * np.diff(angle, axis=1)))  # wrapped to (-pi, pi]
    np.testing.assert_allclose(step, 0.2, atol=1e-5)
    # conditions start at different phases
    assert np.ptp(angle[:, 0]) > 0.5


# --------------------------------------------------------------------------- files and parameters


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_written_file_has_every_key_and_reads_back(name, tmp_path):
    out = simulate_to_file(name, tmp_path / "sim.h5", seed=3, overrides=["n_conditions=4"])
    arrays = simulate(name, seed=3, n_conditions=4)
    with h5py.File(out, "r") as file:
        assert set(file.keys()) == set(arrays)
        assert set(REQUIRED) <= set(file.keys())
        for key, value in arrays.items():
            np.testing.assert_array_equal(file[key][()], value, err_msg=key)
        assert file.attrs["simulator"] == name
        assert json.loads(file.attrs["params"])["n_conditions"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["sim.h5"]  # no temporary file left


def test_written_file_passes_read_session(tmp_path):
    read_session = pytest.importorskip("autolfads.data").read_session
    out = simulate_to_file("chaotic-rnn", tmp_path / "sim.h5", overrides=["n_conditions=3"])
    session = read_session(out)
    arrays = simulate("chaotic-rnn", n_conditions=3)
    assert session.dims.encod_data_dim == 50
    # the reader divides the truth by conversion_factor: expected counts per bin
    np.testing.assert_allclose(session.truth["valid"], arrays["valid_truth"] / 100.0, rtol=1e-6)


def test_parse_overrides_types():
    parsed = parse_overrides(["inputs=true", "n_conditions=12", "g=2.5", "x=False", "y=1e-3"])
    assert parsed == {"inputs": True, "n_conditions": 12, "g": 2.5, "x": False, "y": 1e-3}
    assert isinstance(parsed["n_conditions"], int)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("chaotic-rnn", ["n_conditions"], "not key=value"),
        ("chaotic-rnn", ["g=fast"], "g='fast'"),
        ("chaotic-rnn", ["n_conditions=2.5"], "expected an integer"),
        ("chaotic-rnn", ["inputs=1"], "expected true or false"),
        ("chaotic-rnn", ["trials_per_condition=1"], "trials_per_condition=1"),
        ("oscillator", ["valid_fraction=1.5"], "valid_fraction=1.5"),
        ("lorenz", ["dt=0"], "dt=0.0"),
    ],
)
def test_bad_overrides_raise_usage_error_naming_them(name, overrides, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        simulate_to_file(name, tmp_path / "sim.h5", overrides=overrides)
    assert not (tmp_path / "sim.h5").exists()


def test_unknown_simulator_or_parameter_lists_the_valid_ones():
    with pytest.raises(UsageError, match="'nope'.*chaotic-rnn, lorenz, oscillator"):
        simulate("nope")
    with pytest.raises(UsageError, match="'sigma'.*valid parameters: n_conditions"):
        simulate("chaotic-rnn", sigma=3.0)


def test_int_given_for_float_parameter_is_accepted():
    as_int = simulate("oscillator", seed=0, **SMALL["oscillator"], base_rate=10)
    as_float = simulate("oscillator", seed=0, **SMALL["oscillator"], base_rate=10.0)
    np.testing.assert_array_equal(as_int["train_truth"], as_float["train_truth"])


# --------------------------------------------------------------------------- test split


def split_keys(arrays: dict[str, np.ndarray], split: str) -> set[str]:
    """The per-trial kinds of a split ('encod_data', 'truth', 'latents', ...)."""
    return {key[len(split) + 1 :] for key in arrays if key.startswith(f"{split}_")}


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_test_fraction_moves_trials_of_each_condition_into_test_keys(name):
    """`test_fraction` takes trials of every condition out of train into a test split with
    every per-trial key; valid stays the default's, and each trial keeps its arrays."""
    small = {**SMALL[name], "n_conditions": 4, "trials_per_condition": 10}
    default = simulate(name, seed=2, **small)
    arrays = simulate(name, seed=2, **small, test_fraction=0.3)
    assert not split_keys(default, "test")
    kinds = split_keys(default, "train")
    assert split_keys(arrays, "test") == kinds == split_keys(arrays, "train")
    assert {"encod_data", "recon_data", "truth", "inds", "condition"} <= kinds
    # stratified: per condition 2 valid (round(0.2 * 10)), 3 test (round(0.3 * 10)), 5 train
    for split, n in (("train", 5), ("valid", 2), ("test", 3)):
        np.testing.assert_array_equal(np.bincount(arrays[f"{split}_condition"]), [n] * 4)
    inds = np.concatenate([arrays[f"{s}_inds"] for s in ("train", "valid", "test")])
    np.testing.assert_array_equal(np.sort(inds), np.arange(40))
    np.testing.assert_array_equal(arrays["valid_inds"], default["valid_inds"])
    # the test trials come out of the default's train split, each with its own arrays
    position = {int(i): k for k, i in enumerate(default["train_inds"])}
    moved = [position[int(i)] for i in arrays["test_inds"]]
    for kind in kinds - {"inds"}:
        np.testing.assert_array_equal(
            arrays[f"test_{kind}"], default[f"train_{kind}"][moved], err_msg=kind
        )
        np.testing.assert_array_equal(arrays[f"valid_{kind}"], default[f"valid_{kind}"])


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_default_test_fraction_leaves_the_arrays_as_they_were(name):
    """test_fraction=0 (the default) writes no test key and the same arrays: files and
    benchmarks made before it stay bit-identical (a split and its counts pinned below)."""
    default = simulate(name, seed=4, **SMALL[name])
    explicit = simulate(name, seed=4, **SMALL[name], test_fraction=0.0)
    assert set(default) == set(explicit) and not split_keys(default, "test")
    for key, value in default.items():
        np.testing.assert_array_equal(explicit[key], value, err_msg=key)


def test_two_way_split_and_counts_are_pinned():
    """The default split and spikes, as the simulators made them before the test split."""
    arrays = simulate("lorenz", seed=0, n_conditions=3, trials_per_condition=10, n_steps=3)
    assert arrays["valid_inds"].tolist() == [4, 8, 12, 13, 22, 29]
    digest = hashlib.sha256(arrays["train_encod_data"].tobytes()).hexdigest()[:16]
    assert digest == "79c11b43b6e747e1"


def test_written_file_with_a_test_split_reads_with_its_target(tmp_path):
    read_session = pytest.importorskip("autolfads.data").read_session
    overrides = ["n_conditions=3", "trials_per_condition=5", "n_steps=10", "test_fraction=0.2"]
    out = simulate_to_file("chaotic-rnn", tmp_path / "sim.h5", overrides=overrides)
    session = read_session(out)
    assert list(session.recon) == ["train", "valid", "test"]
    assert session.recon["test"].shape == (3, 10, 50) and session.truth["test"].shape == (3, 10, 50)
    with h5py.File(out, "r") as file:
        assert json.loads(file.attrs["params"])["test_fraction"] == 0.2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["test_fraction=-0.1"], "test_fraction=-0.1; expected a number in \\[0, 1\\)"),
        (["valid_fraction=0.5", "test_fraction=0.5"], "test_fraction=0.5; expected < 1 - valid"),
        (["trials_per_condition=2", "test_fraction=0.2"], "trials_per_condition=2; expected an"),
    ],
)
def test_bad_test_fraction_is_refused_naming_it(overrides, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        simulate_to_file("lorenz", tmp_path / "sim.h5", overrides=overrides)
