"""`autolfads demo` end to end, shrunk to a tiny data set and population so it takes seconds."""

from __future__ import annotations

import zipfile

import pytest

import autolfads.demo
from autolfads.cli import main
from autolfads.config import load_config

TINY_DATA = ["n_conditions=6", "trials_per_condition=5", "n_steps=12", "n_neurons=8"]
TINY = [
    "model.ic_enc_dim=4",
    "model.ci_enc_dim=4",
    "model.con_dim=4",
    "model.co_dim=1",
    "model.ic_dim=4",
    "model.gen_dim=8",
    "model.fac_dim=3",
    "datamodule.batch_size=8",
    "trainer.ramp_epochs=1",
    "trainer.samples=2",
    "pbt.num_workers=3",
    "pbt.burn_in_period=1",
    "pbt.perturbation_interval=1",
    "pbt.max_generations=2",
]


@pytest.fixture
def tiny_demo(monkeypatch):
    """The demo command with the tiny data set and the tiny overrides on top of its config."""
    names = []

    def tiny_config(name, overrides=()):
        names.append(name)
        return load_config(name, [*overrides, *TINY])

    monkeypatch.setattr(autolfads.demo, "DEMO_DATA", TINY_DATA)
    monkeypatch.setattr(autolfads.demo, "load_config", tiny_config)
    return names


def test_demo_simulates_runs_and_leaves_the_zip(tiny_demo, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    assert tiny_demo == ["demo"]  # the packaged demo config is the base
    assert (out / "demo_data.h5").is_file()
    with zipfile.ZipFile(out / "autolfads.zip") as zf:
        assert sorted(zf.namelist()) == ["fitlog.csv", "lfads_output_sess0.h5", "model.ckpt"]
    stdout = capsys.readouterr().out
    assert "R^2" in stdout and str(out) in stdout


def test_demo_refuses_a_non_empty_out(tiny_demo, tmp_path, capsys):
    (tmp_path / "x.txt").write_text("x")
    assert main(["demo", "-o", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert tiny_demo == []  # refused before any work
