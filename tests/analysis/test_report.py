"""`autolfads report OUT`: PNGs and one self-contained HTML page for a finished or running run.

Run folders are written directly (fitlog.csv, pbt_history.csv, lfads_output_sess0.h5, config.yaml
with the columns and keys autolfads writes), except one tiny end-to-end `autolfads train`.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_DATA, TINY_MODEL

from autolfads.analysis.report import commands as report_module
from autolfads.analysis.report import make_report, report_at_end
from autolfads.analysis.report.canvas import png_bytes, wants_log_axis
from autolfads.analysis.report.hp_progression import HPProgression, hp_progression_figure
from autolfads.analysis.report.latent_figures import latent_trajectories_figure, pca_projection
from autolfads.analysis.report.rates_figure import rates_figure
from autolfads.cli import main
from autolfads.data.synthetic import simulate_to_file
from autolfads.errors import UsageError

N_WORKERS, N_GENERATIONS, EPOCHS_PER_GENERATION = 3, 2, 2
COPIER, SOURCE = 2, 0  # in generation 0, worker 2 copies worker 0
FINISHED_FIGURES = {
    "training.png",
    "validation_metrics.png",
    "hyperparameters.png",
    "sess0_rates.png",
    "sess0_latents.png",
    "sess0_inputs.png",
}


def hp_values(worker: int, generation: int) -> dict[str, float]:
    """The searched HPs of a worker in a generation (after generation 0, the copier has its
    source's values times 1.1); kl_ic_scale is fixed and never searched."""
    if generation > 0 and worker == COPIER:
        source = hp_values(SOURCE, generation - 1)
        return {k: (v * 1.1 if k != "kl_ic_scale" else v) for k, v in source.items()}
    return {"lr_init": 1e-3 * (worker + 1), "dropout_rate": 0.1 * worker, "kl_ic_scale": 1e-4}


def fake_fitlog() -> pd.DataFrame:
    rows = []
    for g in range(N_GENERATIONS):
        for epoch in range(g * EPOCHS_PER_GENERATION, (g + 1) * EPOCHS_PER_GENERATION):
            for w in range(N_WORKERS):
                recon = 0.3 + 1.0 / (epoch + 1) + 0.01 * w
                row = {"worker_id": w, "generation": g, "epoch": epoch, "train/recon": recon}
                row.update({"valid/recon": recon + 0.02, "valid/recon_smth": recon + 0.02})
                row.update({f"hp/{k}": v for k, v in hp_values(w, g).items()})
                row["valid/r2"] = 0.1 * epoch
                row["copied_from"] = SOURCE if (g > 0 and w == COPIER) else w
                rows.append(row)
    return pd.DataFrame(rows)


def fake_history() -> pd.DataFrame:
    rows = []
    for g in range(N_GENERATIONS):
        for w in range(N_WORKERS):
            source = SOURCE if (g == 0 and w == COPIER) else w
            row = {"generation": g, "epoch": (g + 1) * EPOCHS_PER_GENERATION, "worker_id": w}
            row.update({"score": 0.4, "copied_from": source})
            row.update({f"hp_before/{k}": v for k, v in hp_values(w, g).items()})
            row.update({f"hp_after/{k}": v for k, v in hp_values(w, g + 1).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def write_outputs(path: Path, seed: int = 0) -> None:
    """A session file with its posterior outputs: 6 train / 4 valid trials, T 10, N 5."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for split, n in (("train", 6), ("valid", 4)):
            truth_hz = rng.uniform(10, 100, size=(n, 10, 5))
            counts = rng.poisson(truth_hz / 100.0).astype(np.int32)
            f[f"{split}_encod_data"] = counts
            f[f"{split}_recon_data"] = counts
            f[f"{split}_truth"] = truth_hz.astype(np.float32)
            f[f"{split}_condition"] = np.arange(n) % 2
            f[f"{split}_output_params"] = (truth_hz / 100.0 * 1.1).astype(np.float32)
            f[f"{split}_factors"] = rng.normal(size=(n, 10, 3)).astype(np.float32)
            f[f"{split}_gen_states"] = rng.normal(size=(n, 10, 6)).astype(np.float32)
            f[f"{split}_co_means"] = rng.normal(size=(n, 10, 2)).astype(np.float32)
            f[f"{split}_co_stds"] = np.full((n, 10, 2), 0.1, dtype=np.float32)
        f["conversion_factor"] = 100.0


CONFIG = """\
model:
  reconstruction: poisson
pbt:
  hps:
    lr_init: {min: 1.0e-05, max: 0.01, sample: log, explore_scale: 0.3}
    dropout_rate: {min: 0.0, max: 0.6, sample: uniform, explore_scale: 0.3}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished AutoLFADS folder and its report."""
    out = tmp_path_factory.mktemp("finished")
    fake_fitlog().to_csv(out / "fitlog.csv", index=False)
    fake_history().to_csv(out / "pbt_history.csv", index=False)
    write_outputs(out / "lfads_output_sess0.h5")
    (out / "config.yaml").write_text(CONFIG)
    make_report(out)
    return out


def embedded_pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(d) for d in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


def test_finished_run_writes_every_figure_and_embeds_it_in_the_page(finished):
    folder = finished / "report"
    assert {p.name for p in folder.glob("*.png")} == FINISHED_FIGURES
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temp files
    page = (folder / "index.html").read_text()
    # self-contained: each PNG's bytes are in the page as a data URI, and nothing is linked
    assert sorted(embedded_pngs(page)) == sorted(p.read_bytes() for p in folder.glob("*.png"))
    assert "src='sess0" not in page and 'src="' not in page
    assert "Missing:" not in page
    assert "1 exploit event (a worker copied a better one)" in page


def test_finished_report_has_the_metrics_table_of_evaluate(finished):
    from autolfads.analysis.evaluate import evaluate_run

    page = (finished / "report" / "index.html").read_text()
    bps = evaluate_run(finished)["sess0"]["valid/bps"]
    assert f"<td>valid (selected on)</td><td>valid/bps</td><td>{bps:.4f}</td>" in page
    assert "valid: seen by selection" in page
    assert not (finished / "metrics.json").exists()  # the report computes, it does not save


def test_metrics_table_says_the_split_of_every_metric_train_valid_test_in_order():
    from autolfads.analysis.evaluate import metric_order
    from autolfads.analysis.report.metrics_table import _metrics_table

    results = {
        "sess0": {"test/bps": 0.1, "valid/r2": 0.5, "valid/bps": 0.2, "train/bps": 0.3},
        "sess1": {"valid/bps": 0.4},
    }
    names = metric_order(n for m in results.values() for n in m)
    assert _metrics_table(results, names) == [
        ["split", "metric", "sess0", "sess1"],
        ["train (fitted)", "train/bps", "0.3000", "nan"],
        ["valid (selected on)", "valid/bps", "0.2000", "0.4000"],
        ["valid (selected on)", "valid/r2", "0.5000", "nan"],
        ["test (held out)", "test/bps", "0.1000", "nan"],
    ]


def test_finished_report_draws_truth_in_data_units_and_a_raster(finished):
    page = (finished / "report" / "index.html").read_text()
    assert "spike raster" in page and "truth / conversion_factor" in page
    assert "coloured by condition" not in page  # that text is in the PNG, not the page
    assert "Trials of the valid split" in page


def test_in_progress_run_with_only_a_fitlog_says_what_is_missing(tmp_path):
    fake_fitlog().to_csv(tmp_path / "fitlog.csv", index=False)
    stale = tmp_path / "report" / "sess0_rates.png"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier report's figure")
    page = make_report(tmp_path).read_text()
    folder = tmp_path / "report"
    assert {p.name for p in folder.glob("*.png")} == {
        "training.png",
        "validation_metrics.png",
        "hyperparameters.png",
    }
    assert "running or interrupted" in page
    for missing in ("pbt_history.csv", "lfads_output_sess*.h5", "config.yaml"):
        assert f"Missing: {missing}" in page
    assert len(embedded_pngs(page)) == 3


@pytest.mark.parametrize("folder", ["absent", "empty", "header only"])
def test_nothing_to_report_is_a_usage_error_naming_the_folder(folder, tmp_path):
    out = tmp_path / "out"
    if folder != "absent":
        out.mkdir()
    if folder == "header only":
        (out / "fitlog.csv").write_text("worker_id,generation,epoch\n")
    with pytest.raises(UsageError, match=re.escape(str(out))):
        make_report(out)
    assert not (out / "report").exists()


def test_progression_from_history_puts_the_exploit_after_its_generation():
    progression = HPProgression.from_history(fake_history())
    assert list(progression.x) == [0, 1, 2]  # two generations, then the values after the last
    assert progression.exploits == [(1, COPIER, SOURCE)]
    lr = progression.values["lr_init"]  # (X, K)
    assert lr.shape == (3, N_WORKERS)
    assert lr[1, COPIER] == pytest.approx(1.1 * lr[0, SOURCE])
    assert set(progression.varying()) == {"lr_init", "dropout_rate"}


def test_history_without_values_after_the_last_generation_still_plots():
    history = fake_history()
    history = history.drop(columns=[c for c in history.columns if c.startswith("hp_after/")])
    progression = HPProgression.from_history(history)
    lr = progression.values["lr_init"]
    assert lr.shape == (3, N_WORKERS) and np.isnan(lr[-1]).all()
    assert png_bytes(hp_progression_figure(progression))[:4] == b"\x89PNG"


def test_progression_from_fitlog_marks_the_first_epoch_of_the_generation():
    progression = HPProgression.from_fitlog(fake_fitlog())
    assert list(progression.x) == [0, 1, 2, 3]
    assert progression.exploits == [(EPOCHS_PER_GENERATION, COPIER, SOURCE)]
    assert progression.xlabel == "epoch"


def test_pca_matches_the_svd_of_the_centred_points():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(2, 5))
    points = (rng.normal(size=(7, 9, 2)) * [3.0, 1.0]) @ plane + 0.01 * rng.normal(size=(7, 9, 5))
    mean, components, explained = pca_projection(points + 4.0, n_components=3)
    flat = (points + 4.0).reshape(-1, 5)
    _, s, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    np.testing.assert_allclose(mean, flat.mean(0))
    np.testing.assert_allclose(np.abs(components @ vt[:3].T), np.eye(3), atol=1e-6)
    np.testing.assert_allclose(explained, s[:3] ** 2 / np.sum(s**2))
    assert explained[:2].sum() > 0.99


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1e-5, 1e-3], True), ([0.1, 0.5], False), ([0.0, 1e-3, 1.0], False), ([-1.0, 10.0], False)],
)
def test_log_axis_only_for_positive_values_spanning_a_decade(values, expected):
    assert wants_log_axis(np.array([*values, np.nan])) is expected


def test_figures_draw_non_count_data_with_gaps_and_low_dimensional_latents():
    rng = np.random.default_rng(1)
    data = rng.gamma(2.0, size=(2, 6, 4))
    data[:, ::2, 1] = np.nan  # unobserved bins (SBTT)
    rates = np.full((2, 6, 4), 2.0)
    fig = rates_figure(data, rates, trial_ids=[0, 3], counts=False, held_in=(4, 3))
    latents = {"one": rng.normal(size=(3, 6, 1)), "two": rng.normal(size=(3, 6, 2))}
    for figure in (fig, latent_trajectories_figure(latents)):
        assert png_bytes(figure).startswith(b"\x89PNG")


def test_a_failing_report_at_the_end_of_a_run_only_warns(tmp_path, monkeypatch, capsys):
    def broken(out):
        raise RuntimeError("disk full\nsecond line")

    monkeypatch.setattr(report_module, "make_report", broken)
    assert report_at_end(tmp_path) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "disk full second line" in err[0]


def test_train_ends_with_the_report(tmp_path, capsys):
    data = tmp_path / "tiny.h5"
    simulate_to_file("chaotic-rnn", data, seed=0, overrides=TINY_DATA)
    out = tmp_path / "out"
    argv = ["train", str(data), "-o", str(out), *TINY_MODEL, "trainer.max_epochs=2"]
    assert main([*argv, "--quiet"]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "a single LFADS model" in page and "Missing:" not in page
    assert (out / "report" / "sess0_rates.png").is_file()
    assert "pbt_history" not in page  # a single model has no population history to miss
