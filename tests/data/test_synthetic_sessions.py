"""Tests of the multi-session simulators (`autolfads simulate NAME DIR sessions=S`): one latent
system, sessions with their own neurons of a shared pool and their own trial counts, shared
conditions, files, and refused parameters."""

from __future__ import annotations

import inspect
import json

import h5py
import numpy as np
import pytest

from autolfads.cli import main
from autolfads.data import read_sessions
from autolfads.data.synthetic import lorenz, simulate, simulate_to_file
from autolfads.data.synthetic_sessions import (
    SESSION_SIMULATORS,
    lorenz_sessions,
    simulate_sessions,
    simulate_sessions_to_dir,
)
from autolfads.errors import UsageError

POOL = {
    "sessions": 3,
    "n_neurons_pool": 20,
    "neurons_min": 5,
    "neurons_max": 9,
    "trials_min": 12,
    "trials_max": 20,
    "n_conditions": 4,
    "n_steps": 15,
}
WORDS = [f"{key}={value}" for key, value in POOL.items()]


@pytest.fixture(scope="module", params=sorted(SESSION_SIMULATORS))
def simulated(request) -> tuple[str, list[dict[str, np.ndarray]]]:
    return request.param, simulate_sessions(request.param, seed=2, **POOL)


def both_splits(arrays: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """train and valid arrays of one kind, put back in original trial order."""
    inds = np.concatenate([arrays["train_inds"], arrays["valid_inds"]])
    values = np.concatenate([arrays[f"train_{kind}"], arrays[f"valid_{kind}"]])
    return values[np.argsort(inds)]


def by_condition(arrays: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """(C, ...) one trial's `kind` per condition, after checking every trial of it agrees."""
    values, condition = both_splits(arrays, kind), both_splits(arrays, "condition")
    firsts = []
    for c in range(POOL["n_conditions"]):
        of_c = values[condition == c]
        np.testing.assert_array_equal(of_c, of_c[:1].repeat(len(of_c), axis=0))
        firsts.append(of_c[0])
    return np.stack(firsts)


# --------------------------------------------------------------------------- sizes and layout


def test_each_session_has_its_own_neurons_and_trials_within_the_ranges(simulated):
    _, sessions = simulated
    assert len(sessions) == POOL["sessions"]
    sizes = []
    for s, arrays in enumerate(sessions):
        neurons = arrays["pool_neuron_index"]
        counts = both_splits(arrays, "encod_data")  # (B, T, N)
        n_trials, n_steps, n_neurons = counts.shape
        assert POOL["neurons_min"] <= n_neurons <= POOL["neurons_max"]
        assert POOL["trials_min"] <= n_trials <= POOL["trials_max"]
        assert n_steps == POOL["n_steps"]
        assert neurons.shape == (n_neurons,) and neurons.dtype == np.int64
        assert np.all(np.diff(neurons) > 0) and 0 <= neurons[0] and neurons[-1] < 20
        assert int(arrays["session_index"]) == s
        assert counts.dtype.kind == "i" and counts.min() >= 0
        for split in ("train", "valid"):
            assert arrays[f"{split}_truth"].shape == arrays[f"{split}_encod_data"].shape
            np.testing.assert_array_equal(
                arrays[f"{split}_recon_data"], arrays[f"{split}_encod_data"]
            )
        sizes.append((n_trials, n_neurons))
    assert len({n for _, n in sizes}) > 1 and len({b for b, _ in sizes}) > 1  # sessions differ


def test_trials_are_spread_over_the_conditions_and_split_within_each(simulated):
    _, sessions = simulated
    for arrays in sessions:
        n_trials = arrays["train_inds"].size + arrays["valid_inds"].size
        train = np.bincount(arrays["train_condition"], minlength=4)
        valid = np.bincount(arrays["valid_condition"], minlength=4)
        per_condition = train + valid
        assert per_condition.sum() == n_trials
        assert per_condition.max() - per_condition.min() <= 1  # as even as the count allows
        expected = [min(max(round(0.2 * n), 1), n - 1) for n in per_condition]
        np.testing.assert_array_equal(valid, expected)


# --------------------------------------------------------------------------- shared latent system


def test_a_condition_is_the_same_latent_trajectory_in_every_session(simulated):
    _, sessions = simulated
    first = by_condition(sessions[0], "latents")  # (C, T, D)
    for arrays in sessions[1:]:
        np.testing.assert_array_equal(by_condition(arrays, "latents"), first)
    assert not np.allclose(first[0], first[1])  # conditions differ


def test_truth_rates_are_the_pool_neurons_rates_in_every_session(simulated):
    _, sessions = simulated
    pool: dict[int, np.ndarray] = {}  # pool neuron -> (C, T) rates, from the first session seen
    shared = 0
    for arrays in sessions:
        truth = by_condition(arrays, "truth")  # (C, T, N)
        for channel, neuron in enumerate(arrays["pool_neuron_index"]):
            if int(neuron) in pool:
                np.testing.assert_array_equal(truth[:, :, channel], pool[int(neuron)])
                shared += 1
            pool[int(neuron)] = truth[:, :, channel]
    assert shared > 0  # some pool neurons are recorded in two sessions


def test_lorenz_pool_is_the_single_file_lorenz_with_the_pool_as_neurons():
    sessions = simulate_sessions("lorenz", seed=4, **POOL)
    single = simulate("lorenz", seed=4, n_neurons=20, n_conditions=4, n_steps=15)
    condition = both_splits(single, "condition")
    pool = np.stack([both_splits(single, "truth")[condition == c][0] for c in range(4)])
    latents = np.stack([both_splits(single, "latents")[condition == c][0] for c in range(4)])
    for arrays in sessions:
        neurons = arrays["pool_neuron_index"]
        np.testing.assert_array_equal(by_condition(arrays, "truth"), pool[:, :, neurons])
        np.testing.assert_array_equal(by_condition(arrays, "latents"), latents)


def test_lorenz_sessions_share_the_single_file_defaults_but_the_conditions():
    def defaults(function) -> dict[str, object]:
        items = inspect.signature(function).parameters.items()
        return {name: p.default for name, p in items if p.kind is p.KEYWORD_ONLY}

    single, multi = defaults(lorenz), defaults(lorenz_sessions)
    shared = set(single) & set(multi)
    assert shared >= {"n_steps", "dt", "base_rate", "gain", "lorenz_dt", "valid_fraction"}
    assert {k: v for k, v in single.items() if k in shared - {"n_conditions"}} == {
        k: v for k, v in multi.items() if k in shared - {"n_conditions"}
    }
    assert (multi["n_neurons_pool"], multi["neurons_min"], multi["neurons_max"]) == (120, 25, 40)
    assert (multi["trials_min"], multi["trials_max"]) == (150, 250)


def test_same_seed_same_sessions_other_seed_other_sessions():
    first = simulate_sessions("lorenz", seed=7, **POOL)
    again = simulate_sessions("lorenz", seed=7, **POOL)
    other = simulate_sessions("lorenz", seed=8, **POOL)
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(first[0]["pool_neuron_index"], other[0]["pool_neuron_index"])


# --------------------------------------------------------------------------- files and command line


def test_sessions_are_written_one_file_each_and_read_back(tmp_path):
    out = tmp_path / "sim"
    paths = simulate_sessions_to_dir("lorenz", out, seed=3, overrides=WORDS)
    assert paths == [out / f"sess{s}.h5" for s in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["sess0.h5", "sess1.h5", "sess2.h5"]
    arrays = simulate_sessions("lorenz", seed=3, **POOL)
    for s, path in enumerate(paths):
        with h5py.File(path, "r") as file:
            assert set(file.keys()) == set(arrays[s])
            for key, value in arrays[s].items():
                np.testing.assert_array_equal(file[key][()], value, err_msg=key)
            assert file.attrs["simulator"] == "lorenz" and file.attrs["session"] == s
            assert json.loads(file.attrs["params"])["neurons_max"] == 9
    sessions = read_sessions(str(out / "sess*.h5"))  # valid session files, in session order
    dims = [s.dims.encod_data_dim for s in sessions]
    assert dims == [a["train_encod_data"].shape[2] for a in arrays]


def test_simulate_command_writes_a_folder_with_sessions_and_a_file_without(tmp_path, capsys):
    assert main(["simulate", "chaotic-rnn", str(tmp_path / "d"), *WORDS, "--seed", "1"]) == 0
    assert "3 sessions" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [f"sess{s}.h5" for s in range(3)]
    single = ["n_conditions=3", "trials_per_condition=4", "n_steps=10"]
    assert main(["simulate", "lorenz", str(tmp_path / "one.h5"), *single]) == 0
    expected = simulate_to_file("lorenz", tmp_path / "ref.h5", overrides=single)
    with h5py.File(tmp_path / "one.h5", "r") as file, h5py.File(expected, "r") as ref:
        assert set(file.keys()) == set(ref.keys())
        assert "pool_neuron_index" not in file
        for key in ref:
            np.testing.assert_array_equal(file[key][()], ref[key][()], err_msg=key)


@pytest.mark.parametrize(
    ("name", "words", "message"),
    [
        ("lorenz", ["sessions=0"], "sessions=0"),
        ("lorenz", ["sessions=true"], "sessions=True; expected an integer"),
        ("lorenz", ["sessions=2", "neurons_min=0"], "neurons_min=0"),
        ("lorenz", ["sessions=2", "neurons_min=20", "neurons_max=10"], "neurons_max=10"),
        ("lorenz", ["sessions=2", "n_conditions=20", "trials_min=30"], "trials_min=30"),
        ("lorenz", ["sessions=2", "trials_max=100", "trials_min=150"], "trials_max=100"),
        ("lorenz", ["sessions=2", "n_neurons_pool=0"], "n_neurons_pool=0"),
        ("lorenz", ["sessions=2", "n_neurons=10"], "no parameter 'n_neurons'"),
        ("chaotic-rnn", ["sessions=2", "inputs=true"], "no parameter 'inputs'"),
        ("oscillator", ["sessions=2"], "'oscillator' has no multi-session form"),
        ("lorenz", ["neurons_min=5"], "neurons_min=5 needs sessions=S"),
    ],
)
def test_bad_overrides_exit_2_with_one_line_naming_them(name, words, message, tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["simulate", name, str(out), *words]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err
    assert not out.exists()


def test_session_files_left_from_another_simulation_are_refused(tmp_path):
    out = tmp_path / "d"
    simulate_sessions_to_dir("lorenz", out, overrides=WORDS)
    fewer = [w for w in WORDS if not w.startswith("sessions=")] + ["sessions=2"]
    with pytest.raises(UsageError, match="sess2.h5: left from another simulation"):
        simulate_sessions_to_dir("lorenz", out, overrides=fewer)
    simulate_sessions_to_dir("lorenz", out, seed=1, overrides=WORDS)  # the same files: replaced
    with h5py.File(out / "sess0.h5", "r") as file:
        assert file.attrs["seed"] == 1
    (tmp_path / "f.h5").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        simulate_sessions_to_dir("lorenz", tmp_path / "f.h5", overrides=WORDS)


# --------------------------------------------------------------------------- test split


@pytest.mark.parametrize("name", sorted(SESSION_SIMULATORS))
def test_test_fraction_gives_every_session_a_stratified_test_split(name):
    pool = {**POOL, "trials_min": 16}  # at least 4 trials per condition: train, valid, test
    default = simulate_sessions(name, seed=2, **pool)
    sessions = simulate_sessions(name, seed=2, **pool, test_fraction=0.25)
    for arrays, before in zip(sessions, default, strict=True):
        assert not any(key.startswith("test_") for key in before)
        kinds = {"encod_data", "recon_data", "truth", "inds", "condition", "latents"}
        assert {f"test_{kind}" for kind in kinds} <= set(arrays)
        counts = [np.bincount(arrays[f"{s}_condition"], minlength=4) for s in ("train", "test")]
        per_condition = np.bincount(both_splits(before, "condition"))
        np.testing.assert_array_equal(counts[1], np.maximum(np.round(per_condition / 4), 1))
        assert counts[0].min() >= 1
        np.testing.assert_array_equal(arrays["valid_inds"], before["valid_inds"])
        np.testing.assert_array_equal(arrays["pool_neuron_index"], before["pool_neuron_index"])
        inds = np.concatenate([arrays[f"{s}_inds"] for s in ("train", "valid", "test")])
        np.testing.assert_array_equal(np.sort(inds), np.arange(per_condition.sum()))


def test_test_split_needs_three_trials_per_condition():
    with pytest.raises(UsageError, match=r"trials_min=11; expected >= 3 \* n_conditions = 12"):
        simulate_sessions("lorenz", seed=0, **{**POOL, "trials_min": 11}, test_fraction=0.2)
