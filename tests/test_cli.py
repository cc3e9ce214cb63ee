"""Tests of the `autolfads` command line (README): exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_DATA, TINY_MODEL
from omegaconf import OmegaConf

from autolfads import __version__
from autolfads.cli import main
from autolfads.data.synthetic import simulate_to_file


def one_error_line(err: str) -> str:
    """The single stderr line of a usage error (and proof that no traceback was printed)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_simulate_writes_the_file(tmp_path, capsys):
    out = tmp_path / "sim.h5"
    argv = ["simulate", "chaotic-rnn", str(out), "--seed", "1"]
    assert main([*argv, "n_conditions=4", "trials_per_condition=5"]) == 0
    assert str(out) in capsys.readouterr().out
    with h5py.File(out, "r") as file:
        n_trials = file["train_encod_data"].shape[0] + file["valid_encod_data"].shape[0]
        assert n_trials == 4 * 5
        assert file["train_encod_data"].shape[1:] == (100, 50)
        assert file.attrs["seed"] == 1


def test_simulate_accepts_overrides_before_the_seed_option(tmp_path, capsys):
    out = tmp_path / "sim.h5"
    assert main(["simulate", "oscillator", str(out), "n_conditions=3", "--seed", "2"]) == 0
    with h5py.File(out, "r") as file:
        assert file["train_condition"][()].max() == 2
        assert file.attrs["seed"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["simulate", "nope", "OUT"], "unknown simulator 'nope'"),
        (["simulate", "chaotic-rnn", "OUT", "n_conditions=many"], "n_conditions='many'"),
        (["simulate", "chaotic-rnn", "OUT", "n_conditions"], "'n_conditions' is not key=value"),
        (["simulate", "chaotic-rnn", "OUT", "sigma=2"], "no parameter 'sigma'"),
        (["simulate", "chaotic-rnn", "OUT", "--bogus"], "unrecognized arguments: --bogus"),
        (["simulate", "chaotic-rnn"], "required: out"),
        (["simulate", "chaotic-rnn", "OUT", "--seed", "-1"], "seed=-1"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "sim.h5") if word == "OUT" else word for word in argv]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line
    assert not (tmp_path / "sim.h5").exists()


def test_fixed_points_of_a_missing_checkpoint_exit_2_naming_it(tmp_path, capsys):
    assert main(["fixed-points", str(tmp_path / "model.ckpt")]) == 2
    assert "model.ckpt" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("folder", "message"), [("absent", "no such folder"), ("empty", "no fitlog.csv")]
)
def test_report_with_nothing_to_report_exits_2_naming_the_folder(folder, message, tmp_path, capsys):
    out = tmp_path / "out"
    if folder == "empty":
        out.mkdir()
    assert main(["report", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and message in line


def test_report_of_a_running_fit_exits_0_and_says_where(tmp_path, capsys):
    rows = [
        {
            "worker_id": w,
            "generation": 0,
            "epoch": e,
            "train/recon": 1.0 / (e + 1),
            "valid/recon": 1.1 / (e + 1),
        }
        for e in range(3)
        for w in range(2)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "fitlog.csv", index=False)
    assert main(["report", str(tmp_path)]) == 0
    index = tmp_path / "report" / "index.html"
    assert capsys.readouterr().out.strip() == f"wrote {index}"
    assert "data:image/png;base64," in index.read_text()


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_console_script_runs():
    script = Path(sys.executable).parent / "autolfads"
    if not script.exists():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


# ----------------------------------------------------------------------------- checks before work

TINY = [*TINY_MODEL, "trainer.max_epochs=2", "pbt.backend=inline"]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    """A chaotic-RNN file of 24 train and 6 valid trials, 12 bins, 8 neurons."""
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=TINY_DATA)
    return path


BAD_VALUES = [
    ("model.gen_dim=abc", "model.gen_dim = 'abc'"),
    ("trainer.max_epochs=-3", "trainer.max_epochs = -3"),
    ("datamodule.batch_size=0", "datamodule.batch_size = 0"),
    ("model.dropout_rate=1.5", "model.dropout_rate = 1.5"),
    ("model.cd_rate=1.0", "model.cd_rate = 1.0"),
    ("model.lr_init=-1", "model.lr_init = -1"),
]


@pytest.mark.parametrize("command", ["train", "run"])
@pytest.mark.parametrize(("override", "words"), BAD_VALUES)
def test_a_value_outside_its_rule_is_exit_2_before_anything_is_written(
    command, override, words, tiny_file, tmp_path, capsys
):
    out = tmp_path / "out"
    assert main([command, str(tiny_file), "-o", str(out), *TINY, override]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {words}: expected ")
    assert not out.exists()


def test_a_bad_value_from_the_console_is_one_line_without_traceback(tiny_file, tmp_path):
    out = tmp_path / "out"
    argv = ["train", str(tiny_file), "-o", str(out), "model.gen_dim=abc"]
    result = subprocess.run(
        [sys.executable, "-m", "autolfads.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "error: model.gen_dim = 'abc': expected an integer >= 1"
    assert not out.exists()


def test_a_split_with_nothing_observed_is_exit_2(tiny_file, tmp_path, capsys):
    path = tmp_path / "unobserved.h5"
    with h5py.File(tiny_file, "r") as src, h5py.File(path, "w") as dst:
        for key in src:
            dst[key] = src[key][()]
        shape = dst["train_encod_data"].shape
        del dst["train_encod_data"]
        dst["train_encod_data"] = np.full(shape, np.nan, dtype=np.float32)
    out = tmp_path / "out"
    assert main(["train", str(path), "-o", str(out), *TINY]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line and "'train_encod_data' is NaN everywhere" in line
    assert not out.exists()


def test_24_train_trials_with_a_batch_of_100_train_as_one_batch_with_a_note(
    tiny_file, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["train", str(tiny_file), "-o", str(out), *TINY, "datamodule.batch_size=100"]
    assert main(argv) == 0
    note = (
        f"note: datamodule.batch_size=100 is larger than the 24 train trials of {tiny_file}: "
        "one batch of all 24 trials"
    )
    assert note in capsys.readouterr().err.splitlines()
    assert OmegaConf.load(out / "config.yaml").datamodule.batch_size == 24
    assert len(pd.read_csv(out / "fitlog.csv")) == 2
