"""The packaged `-c emg` and `-c radical` configs: what they set, and a tiny end-to-end fit of each."""

from __future__ import annotations

import inspect
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL

from autolfads.cli import main
from autolfads.config import load_config, packaged_config_names
from autolfads.data.synthetic import calcium
from autolfads.errors import ConfigError
from autolfads.train.shard import TrainSettings

TINY = [*TINY_MODEL, "trainer.max_epochs=2", "pbt.backend=inline"]
T, N, S_MIN = 12, 5, 0.3


def _write(path: Path, train: np.ndarray, valid: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        for split, data in (("train", train), ("valid", valid)):
            file[f"{split}_encod_data"] = data
            file[f"{split}_recon_data"] = data
    return path


def _gamma_file(path: Path, seed: int = 0) -> Path:
    """Positive EMG-like values: a smooth envelope per muscle times gamma noise."""
    rng = np.random.default_rng(seed)
    envelope = 0.5 + np.sin(np.linspace(0, np.pi, T))[None, :, None] * rng.uniform(0.5, 2, N)
    data = rng.gamma(4.0, envelope / 4.0, size=(24, T, N)).astype(np.float32)
    return _write(path, data[:16], data[16:])


def _zig_file(path: Path, seed: int = 0) -> Path:
    """Events that are 0 or >= s_min, each neuron observed in one sub-frame bin of 2 (NaN elsewhere)."""
    rng = np.random.default_rng(seed)
    events = np.where(rng.random((24, T, N)) < 0.4, S_MIN + rng.gamma(2.0, 0.5, (24, T, N)), 0.0)
    scanned = (np.arange(T)[:, None] % 2) == (np.arange(N)[None, :] % 2)  # (T, N)
    data = np.where(scanned, events, np.nan).astype(np.float32)
    return _write(path, data[:16], data[16:])


def _outputs(out: Path) -> dict[str, np.ndarray]:
    with h5py.File(out / "lfads_output_sess0.h5", "r") as file:
        return {key: file[key][()] for key in ("train_output_params", "valid_output_params")}


def test_both_configs_are_packaged_names():
    assert {"emg", "radical"} <= set(packaged_config_names())


def test_emg_config_is_gamma_with_log_input_and_temporal_shift():
    cfg = load_config("emg")
    assert cfg.model.reconstruction == "gamma" and cfg.model.log_input is True
    settings = TrainSettings.from_config(cfg)
    assert settings.temporal_shift and (
        settings.temporal_shift_std,
        settings.temporal_shift_max,
    ) == (3.0, 6)


def test_radical_config_is_zig_at_the_calcium_threshold_and_searches_gamma_prior():
    cfg = load_config("radical")
    assert cfg.model.reconstruction == "zig"
    assert cfg.model.s_min == inspect.signature(calcium).parameters["s_min"].default
    spec = cfg.pbt.hps.gamma_prior
    assert spec.min < cfg.model.gamma_prior < spec.max
    assert cfg.model.l2_gamma_scale > 0  # without the pull, the searched prior would do nothing
    assert not TrainSettings.from_config(cfg).temporal_shift


def test_any_hyperparameter_may_be_added_to_the_search_but_other_groups_stay_closed():
    cfg = load_config(overrides=["pbt.hps.l2_ic_enc_scale={min: 1.0e-4, max: 1.0}"])
    assert cfg.pbt.hps.l2_ic_enc_scale.max == 1.0
    with pytest.raises(ConfigError, match="'lag' is not in struct"):
        load_config(overrides=["datamodule.temporal_shift.lag=1"])


def test_train_with_emg_config_on_a_tiny_gamma_file(tmp_path):
    data = _gamma_file(tmp_path / "emg.h5")
    assert (
        main(["train", str(data), "-c", "emg", "-o", str(tmp_path / "out"), "--quiet", *TINY]) == 0
    )
    out = _outputs(tmp_path / "out")
    assert out["train_output_params"].shape == (16, T, N)
    assert all(np.isfinite(v).all() and (v > 0).all() for v in out.values())
    log = pd.read_csv(tmp_path / "out" / "fitlog.csv")
    assert len(log) == 2 and np.isfinite(log["train/loss"]).all()


def test_train_with_radical_config_on_a_tiny_zig_file_with_nan(tmp_path):
    data = _zig_file(tmp_path / "events.h5")
    assert (
        main(["train", str(data), "-c", "radical", "-o", str(tmp_path / "out"), "--quiet", *TINY])
        == 0
    )
    out = _outputs(tmp_path / "out")
    assert all(np.isfinite(v).all() and (v > 0).all() for v in out.values())
    log = pd.read_csv(tmp_path / "out" / "fitlog.csv")
    assert np.isfinite(log[["train/loss", "valid/recon"]].to_numpy()).all()


def test_run_with_radical_config_searches_gamma_prior(tmp_path):
    data = _zig_file(tmp_path / "events.h5")
    pbt = ["pbt.num_workers=2", "pbt.burn_in_period=1", "pbt.perturbation_interval=1"]
    argv = ["run", str(data), "-c", "radical", "-o", str(tmp_path / "out"), "--quiet"]
    assert main([*argv, *TINY, *pbt, "pbt.max_generations=1"]) == 0
    prior = (
        pd.read_csv(tmp_path / "out" / "fitlog.csv").groupby("worker_id")["hp/gamma_prior"].first()
    )
    assert len(prior) == 2 and prior.between(0.1, 10.0).all() and prior.nunique() == 2
