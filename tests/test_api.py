"""`autolfads.fit` / `autolfads.load` on arrays (src/autolfads/api.py): the same training,
checks and outputs as the commands, from Python.

Data: the tiny chaotic-RNN of the command tests (6 conditions x 5 trials, 12 bins, 8 neurons);
model: the tiny one of `helpers.TINY_MODEL`, one or two epochs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_DATA, TINY_MODEL

import autolfads
from autolfads.cli import main
from autolfads.config import nested_keys
from autolfads.data.synthetic import simulate, write_session_file
from autolfads.errors import ConfigError, DataError
from autolfads.outputs.posterior import OUTPUT_FIELDS


def params(items: list[str]) -> dict[str, int]:
    """`key=value` words of integers as a dict."""
    return {k: int(v) for k, v in (item.split("=") for item in items)}


TINY = {**params(TINY_MODEL), "trainer.max_epochs": 2}


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    """The simulated session, under a file's keys."""
    return simulate("chaotic-rnn", seed=0, **params(TINY_DATA))


@pytest.fixture(scope="module")
def fitted(arrays, tmp_path_factory):
    """A 2-epoch fit on bare arrays, run in an empty folder with an empty temporary folder:
    returns the model and what was left in each."""
    cwd, tmp = tmp_path_factory.mktemp("cwd"), tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(tempfile, "tempdir", str(tmp))
        mp.setenv("TMPDIR", str(tmp))
        model = autolfads.fit(
            arrays["train_encod_data"], arrays["valid_encod_data"], config=TINY, quiet=True
        )
    return model, sorted(os.listdir(cwd)) + sorted(os.listdir(tmp))


def test_nothing_is_written_without_out(fitted):
    _, left = fitted
    assert left == []


def test_posterior_gives_every_output_field_of_the_files(fitted, arrays):
    model, _ = fitted
    valid = arrays["valid_encod_data"]
    out = model.posterior(valid, n_samples=2)
    assert set(out) == set(OUTPUT_FIELDS)
    b, t, n = valid.shape
    assert out["output_params"].shape == (b, t, n)
    assert out["factors"].shape == (b, t, 3) and out["gen_states"].shape == (b, t, 8)
    assert out["co_means"].shape == (b, t, 1) and out["ic_mean"].shape == (b, 4)
    assert all(isinstance(v, np.ndarray) and np.isfinite(v).all() for v in out.values())


def test_posterior_equals_what_autolfads_sample_writes(fitted, arrays, tmp_path):
    model, _ = fitted
    ckpt = model.save(tmp_path / "model.ckpt")
    data = write_session_file(tmp_path / "data.h5", arrays, {})
    argv = ["sample", str(ckpt), str(data), "-o", str(tmp_path / "s"), "--samples", "3"]
    assert main([*argv, "--seed", "5"]) == 0
    with h5py.File(tmp_path / "s" / "lfads_output_sess0.h5", "r") as file:
        for split in ("train", "valid"):
            ours = model.posterior(arrays[f"{split}_encod_data"], n_samples=3, seed=5)
            for field in OUTPUT_FIELDS:
                np.testing.assert_array_equal(ours[field], file[f"{split}_{field}"][()], field)


def test_save_and_load_round_trip(fitted, arrays, tmp_path):
    model, _ = fitted
    loaded = autolfads.load(model.save(tmp_path / "m.ckpt"))
    valid = arrays["valid_encod_data"]
    a, b = model.posterior(valid, n_samples=2), loaded.posterior(valid, n_samples=2)
    for field in OUTPUT_FIELDS:
        np.testing.assert_array_equal(a[field], b[field])
    pd.testing.assert_frame_equal(loaded.fitlog, model.fitlog)
    assert loaded.hps == model.hps and loaded.config == model.config


def test_fitlog_is_a_data_frame_of_the_fitlog_columns(fitted):
    log = fitted[0].fitlog
    assert isinstance(log, pd.DataFrame)
    assert list(log.columns[:3]) == ["worker_id", "generation", "epoch"]
    assert list(log.epoch) == [0, 1] and {"valid/recon_smth", "valid/bps"} <= set(log.columns)


# ----------------------------------------------------------------------------- refusals


def test_refusals_name_the_argument(arrays):
    train, valid = arrays["train_encod_data"], arrays["valid_encod_data"]
    negative, nan = train.copy(), np.full(valid.shape, np.nan)
    negative[0, 2, 3] = -1
    cases = [
        (train[:, :, 0], valid, "train: has shape (24, 12); expected a 3-D array"),
        (train, valid[:, :10], "valid: has 10 time steps, shape (6, 10, 8); expected 12 time"),
        (train, valid[:, :, :7], "valid: has 7 channels, shape (6, 12, 7); expected 8 channels"),
        (train, nan, "valid: is NaN everywhere"),
        (negative, valid, "train: has a negative value (-1 at index (0, 2, 3); 1 element in all)"),
        (train, {"recon_data": valid}, "valid: no 'encod_data' (keys given: 'recon_data')"),
        (train, {"encod_data": valid, "recon_data": valid[:, :, :5]}, "valid['recon_data']: has 5"),
        (train, [valid], "valid: a list (several sessions); expected one session, as train"),
        ([train, train], [valid], "valid: a list of 1; expected a list of 2 sessions, as train"),
        (train, {"valid_encod_data": valid}, "without the prefix: 'encod_data'"),
    ]
    for t, v, message in cases:
        with pytest.raises(DataError) as err:
            autolfads.fit(t, v, config=TINY, quiet=True)
        assert message in str(err.value) and "\n" not in str(err.value)


def test_non_integer_counts_need_allow_noninteger(arrays):
    train = arrays["train_encod_data"] + 0.5
    with pytest.raises(DataError, match=r"train: has a non-integer value .*model.allow_noninteger"):
        autolfads.fit(train, arrays["valid_encod_data"], config=TINY, quiet=True)


def test_posterior_refuses_trials_the_model_cannot_take(fitted, arrays):
    model, _ = fitted
    valid = arrays["valid_encod_data"]
    with pytest.raises(DataError, match=r"encod: has shape \(6, 12, 7\); expected \(n, 12, 8\)"):
        model.posterior(valid[:, :, :7])
    with pytest.raises(DataError, match="encod: has a negative value"):
        model.posterior(-valid - 1)
    with pytest.raises(DataError, match="a list of 2; expected a list of 1"):
        model.posterior([valid, valid])


def test_config_keys_nested_or_dotted():
    assert nested_keys({"model": {"gen_dim": 8}, "model.fac_dim": 3, "seed": 1}) == {
        "model": {"gen_dim": 8, "fac_dim": 3},
        "seed": 1,
    }
    with pytest.raises(ConfigError, match="model.gen_dim: given both a value and a group"):
        nested_keys({"model.gen_dim": 8, "model": {"gen_dim": {"x": 1}}})


def test_an_unknown_config_key_is_refused_before_anything(arrays, tmp_path):
    train, valid = arrays["train_encod_data"], arrays["valid_encod_data"]
    with pytest.raises(ConfigError, match="gen_dimm"):
        autolfads.fit(train, valid, config={"model.gen_dimm": 8}, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- richer data


def test_held_out_neurons_inputs_truth_and_conditions_as_dicts(arrays):
    def split(name: str) -> dict[str, np.ndarray]:
        data = arrays[f"{name}_encod_data"]
        return {
            "encod_data": data[:, :, :6],  # the last 2 neurons held out
            "recon_data": data,
            "ext_input": np.ones((len(data), 12, 2), np.float32),
            "truth": arrays[f"{name}_truth"],
            "condition": arrays[f"{name}_condition"],
        }

    train, valid = split("train"), split("valid")
    config = {**TINY, "trainer.max_epochs": 1}
    session = {**train, "conversion_factor": arrays["conversion_factor"]}  # truth in Hz
    model = autolfads.fit(session, valid, config=config, quiet=True)
    assert "valid/r2" in model.fitlog.columns  # the truth was seen
    out = model.posterior(valid, n_samples=2)  # recon_data, truth, condition are ignored
    assert out["output_params"].shape == (6, 12, 8)  # rates of the held-out neurons too
    with pytest.raises(DataError, match=r"encod\['ext_input'\]: is missing; expected external"):
        model.posterior(valid["encod_data"])


def test_two_sessions_as_lists(arrays):
    train, valid = arrays["train_encod_data"], arrays["valid_encod_data"]
    config = {**TINY, "trainer.max_epochs": 1}
    model = autolfads.fit(
        [train, train[:, :, :6]], [valid, valid[:, :, :6]], config=config, quiet=True
    )
    assert model.n_sessions == 2 and "valid/bps/sess1" in model.fitlog.columns
    first, second = model.posterior([valid, valid[:, :, :6]], n_samples=2)
    assert first["output_params"].shape == (6, 12, 8)
    assert second["output_params"].shape == (6, 12, 6)
    single = model.posterior(valid[:, :, :6], n_samples=2, session=1)
    np.testing.assert_array_equal(single["factors"], second["factors"])
    with pytest.raises(DataError, match="the model has 2 sessions"):
        model.posterior(valid)


def test_out_gets_the_files_of_autolfads_train(arrays, tmp_path):
    out = tmp_path / "out"
    train, valid = arrays["train_encod_data"], arrays["valid_encod_data"]
    config = {**TINY, "trainer.max_epochs": 1}
    model = autolfads.fit(train, valid, config=config, out=out, quiet=True)
    assert {p.name for p in out.iterdir()} == {
        "autolfads.zip",
        "config.yaml",
        "report",
        "fitlog.csv",
        "lfads_output_sess0.h5",
        "model.ckpt",
    }  # as tests/commands/test_workflow.py's `autolfads train`
    with h5py.File(out / "lfads_output_sess0.h5", "r") as file:
        np.testing.assert_array_equal(file["train_encod_data"][()], train)
        written = file["valid_factors"][()]
    np.testing.assert_array_equal(model.posterior(valid, n_samples=2)["factors"], written)
    assert len(pd.read_csv(out / "fitlog.csv")) == len(model.fitlog) == 1


def test_pbt_returns_the_best_worker_and_writes_nothing(arrays, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {**TINY, "pbt.num_workers": 2, "pbt.burn_in_period": 1, "pbt.perturbation_interval": 1}
    model = autolfads.fit(
        arrays["train_encod_data"], arrays["valid_encod_data"], config, pbt=True, quiet=True
    )
    assert sorted(set(model.fitlog.worker_id)) == [0, 1]
    assert list(model.fitlog.generation.unique()) == [0, 1]
    assert model.posterior(arrays["valid_encod_data"], n_samples=1)["factors"].shape == (6, 12, 3)
    assert list(Path(tmp_path).iterdir()) == []
