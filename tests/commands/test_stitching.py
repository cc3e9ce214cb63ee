"""`autolfads run` and `train` end to end on three simulated sessions with different neuron counts
(stitching): an output file per session, per-session fit-log columns (through a PBT resume),
`evaluate` metrics and `report` sections per session.

The sessions come from `autolfads simulate lorenz DIR sessions=3`, tiny: 4-8 neurons of a pool of
12, 12-16 trials of 12 bins; the model and population are the tiny ones of the other command tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL

from autolfads.cli import main
from autolfads.data.synthetic_sessions import simulate_sessions_to_dir

N_SESSIONS = 3
SESSIONS = [
    f"sessions={N_SESSIONS}",
    "n_neurons_pool=12",
    "neurons_min=4",
    "neurons_max=8",
    "trials_min=12",
    "trials_max=16",
    "n_conditions=3",
    "n_steps=12",
]
TINY_PBT = [
    *TINY_MODEL,
    "pbt.backend=inline",
    "pbt.num_workers=2",
    "pbt.burn_in_period=1",
    "pbt.perturbation_interval=1",
]
PER_SESSION = [f"valid/{m}/sess{i}" for m in ("r2", "bps") for i in range(N_SESSIONS)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[Path]:
    paths = simulate_sessions_to_dir(
        "lorenz", tmp_path_factory.mktemp("data") / "sim", seed=0, overrides=SESSIONS
    )
    channels = []
    for path in paths:
        with h5py.File(path, "r") as file:
            channels.append(file["train_encod_data"].shape[2])
    assert len(set(channels)) > 1, channels  # the sessions' neuron counts differ
    return paths


@pytest.fixture(scope="module")
def ran(data, tmp_path_factory) -> Path:
    """A 2-generation PBT run: one generation, then resumed for a second."""
    out = tmp_path_factory.mktemp("run") / "out"
    argv = ["run", str(data[0].parent / "sess*.h5"), "-o", str(out), "--quiet", *TINY_PBT]
    assert main([*argv, "pbt.max_generations=1"]) == 0
    assert main([*argv, "pbt.max_generations=2", "--resume"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "out"
    argv = ["train", *map(str, data), "-o", str(out), "--quiet", *TINY_MODEL]
    assert main([*argv, "trainer.max_epochs=2"]) == 0
    return out


def check_outputs(out: Path, data: list[Path]) -> None:
    """One output file per session, each split's outputs the shape of its data."""
    outputs = sorted(p.name for p in out.glob("lfads_output_sess*.h5"))
    assert outputs == [f"lfads_output_sess{i}.h5" for i in range(N_SESSIONS)]
    for i, path in enumerate(data):
        with h5py.File(path, "r") as src, h5py.File(out / f"lfads_output_sess{i}.h5", "r") as f:
            np.testing.assert_array_equal(f["pool_neuron_index"][()], src["pool_neuron_index"][()])
            for split in ("train", "valid"):
                n_trials, n_steps, _ = src[f"{split}_recon_data"].shape
                assert f[f"{split}_output_params"].shape == src[f"{split}_recon_data"].shape
                assert f[f"{split}_factors"].shape == (n_trials, n_steps, 3)  # fac_dim=3
                assert np.isfinite(f[f"{split}_output_params"][()]).all()


def check_fitlog(out: Path) -> pd.DataFrame:
    """Per-session valid/r2 and valid/bps columns, finite, whose mean is the logged average."""
    log = pd.read_csv(out / "fitlog.csv")
    assert np.isfinite(log[PER_SESSION].to_numpy(float)).all()
    for metric in ("r2", "bps"):
        columns = [f"valid/{metric}/sess{i}" for i in range(N_SESSIONS)]
        np.testing.assert_allclose(log[f"valid/{metric}"], log[columns].mean(axis=1), rtol=1e-6)
    return log


def test_run_writes_an_output_file_per_session(ran, data):
    check_outputs(ran, data)


def test_run_logs_each_session_through_a_resume(ran):
    log = check_fitlog(ran)
    assert sorted(log["epoch"].unique()) == [0, 1] and log["generation"].max() == 1
    assert not log.duplicated(["worker_id", "epoch"]).any()


def test_evaluate_gives_metrics_per_session(ran, capsys):
    assert main(["evaluate", str(ran)]) == 0
    metrics = json.loads((ran / "metrics.json").read_text())
    assert sorted(metrics) == [f"sess{i}" for i in range(N_SESSIONS)]
    for values in metrics.values():
        assert math.isfinite(values["valid/r2"]) and math.isfinite(values["valid/bps"])
    assert "sess2" in capsys.readouterr().out


def test_report_has_a_section_per_session(ran):
    assert main(["report", str(ran)]) == 0
    page = (ran / "report" / "index.html").read_text()
    for i in range(N_SESSIONS):
        assert f"Session {i} (lfads_output_sess{i}.h5)" in page
        assert (ran / "report" / f"sess{i}_rates.png").is_file()


def test_train_writes_an_output_file_and_fitlog_columns_per_session(trained, data):
    check_outputs(trained, data)
    assert len(check_fitlog(trained)) == 2  # one worker, two epochs


def test_a_file_alignment_matrix_that_does_not_fit_is_refused_before_any_work(
    data, tmp_path, capsys
):
    copies = []
    for path in data[:2]:
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    with h5py.File(copies[1], "a") as file:
        n = file["train_encod_data"].shape[2]
        file["alignment_matrix_cxf"] = np.zeros((n, 3))  # the read-in is as wide as session 0
    out = tmp_path / "out"
    argv = ["train", *map(str, copies), "-o", str(out), *TINY_MODEL, "trainer.max_epochs=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alignment_matrix_cxf has shape" in err, err
    assert not out.exists()
