"""Tests of the `autolfads` command line (SPEC.md section 4): exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest

from autolfads import __version__
from autolfads.cli import main


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
