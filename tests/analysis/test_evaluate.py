"""`autolfads evaluate OUT` on a finished tiny training run."""

import json
import math
import shutil

import h5py
import numpy as np
import pytest
from helpers import TINY_DATA, TINY_MODEL

from autolfads.analysis.metrics import bits_per_spike, r2_score
from autolfads.cli import main
from autolfads.data.synthetic import simulate_to_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "tiny.h5"
    simulate_to_file("chaotic-rnn", data, seed=0, overrides=TINY_DATA)
    out = root / "out"
    argv = ["train", str(data), "-o", str(out), "--quiet", *TINY_MODEL, "trainer.max_epochs=2"]
    assert main(argv) == 0
    return out


def test_evaluate_prints_and_writes_every_metric(trained, capsys):
    assert main(["evaluate", str(trained)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((trained / "metrics.json").read_text())["sess0"]
    for split in ("train", "valid"):
        for name in ("nll", "bps", "r2"):
            assert f"{split}/{name}" in metrics and f"{split}/{name}" in printed
            assert math.isfinite(metrics[f"{split}/{name}"])
    with h5py.File(trained / "lfads_output_sess0.h5", "r") as f:
        rates = f["valid_output_params"][()]
        counts = f["valid_recon_data"][()].astype(np.float64)
        truth = f["valid_truth"][()] / f["conversion_factor"][()]
    assert metrics["valid/bps"] == pytest.approx(bits_per_spike(rates, counts))
    assert metrics["valid/r2"] == pytest.approx(r2_score(truth, rates))


def test_evaluate_without_outputs_is_a_usage_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no lfads_output_sess" in err[0]


def test_evaluate_ignores_a_stray_file_named_like_an_output(trained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    (out / "lfads_output_sessX.h5").write_bytes(b"not an output")
    assert main(["evaluate", str(out)]) == 0
    assert list(json.loads((out / "metrics.json").read_text())) == ["sess0"]
