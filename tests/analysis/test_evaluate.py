"""`autolfads evaluate OUT` on a finished tiny training run of a file with a test split."""

import json
import math
import shutil

import h5py
import numpy as np
import pytest
from helpers import TINY_DATA, TINY_MODEL

from autolfads.analysis.evaluate import evaluate_run
from autolfads.analysis.metrics import bits_per_spike, bps_ratio, r2_score
from autolfads.cli import main
from autolfads.data.synthetic import simulate_to_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "tiny.h5"
    simulate_to_file("chaotic-rnn", data, seed=0, overrides=[*TINY_DATA, "test_fraction=0.2"])
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


def test_evaluate_scores_test_and_valid_each_under_its_split_name(trained, capsys):
    assert main(["evaluate", str(trained)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((trained / "metrics.json").read_text())["sess0"]
    for split in ("valid", "test"):
        for name in ("nll", "bps", "r2", "truth_bps", "bps_ratio"):
            assert math.isfinite(metrics[f"{split}/{name}"]) and f"{split}/{name}" in printed
    assert all(name.split("/")[0] in ("train", "valid", "test") for name in metrics)
    assert "valid: seen by selection" in printed and "test: seen by no selection" in printed
    lines = [line.split()[0] for line in printed.splitlines() if "/" in line.split()[0]]
    assert lines == sorted(lines, key=lambda n: ("train", "valid", "test").index(n.split("/")[0]))
    with h5py.File(trained / "lfads_output_sess0.h5", "r") as f:
        rates = f["test_output_params"][()]
        counts = f["test_recon_data"][()].astype(np.float64)
        truth = f["test_truth"][()] / f["conversion_factor"][()]
    assert metrics["test/bps"] == pytest.approx(bits_per_spike(rates, counts))
    assert metrics["test/truth_bps"] == pytest.approx(bits_per_spike(truth, counts))
    assert metrics["test/bps_ratio"] == pytest.approx(bps_ratio(rates, truth, counts))
    assert metrics["test/r2"] == pytest.approx(r2_score(truth, rates))


def test_evaluate_without_a_test_target_scores_train_and_valid(trained, tmp_path):
    """Outputs of a file whose test trials have no target: no test/ metric, the rest unchanged."""
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    with h5py.File(out / "lfads_output_sess0.h5", "a") as f:
        del f["test_recon_data"], f["test_truth"]
    assert main(["evaluate", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["sess0"]
    assert {name.split("/")[0] for name in metrics} == {"train", "valid"}
    full = evaluate_run(trained)["sess0"]
    assert metrics == {n: v for n, v in full.items() if not n.startswith("test/")}


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
