"""`autolfads demo` end to end, shrunk to a tiny data set and population so it takes seconds."""

from __future__ import annotations

import zipfile

import pytest
from helpers import TINY_DATA, TINY_MODEL

import autolfads.commands.demo
from autolfads.cli import main
from autolfads.config import load_config

TINY = [
    *TINY_MODEL,
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

    monkeypatch.setattr(autolfads.commands.demo, "DEMO_DATA", TINY_DATA)
    monkeypatch.setattr(autolfads.commands.demo, "load_config", tiny_config)
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
