"""End-to-end tests of `autolfads run` (docs/data-format.md, Outputs and Metrics) on a tiny chaotic-RNN file.

Each run is 4 tiny workers for 2-4 one-epoch generations (about a second on one CPU thread).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_DATA, TINY_MODEL
from omegaconf import OmegaConf

from autolfads import LFADS
from autolfads.cli import main
from autolfads.config import load_config
from autolfads.data.synthetic import simulate_to_file
from autolfads.pbt.backends import InlineBackend
from autolfads.pbt.runner import ShardRunner

N_WORKERS = 4
TINY = [
    *TINY_MODEL,
    "pbt.backend=inline",  # Ray has its own tests (tests/pbt/test_ray_backend.py)
    f"pbt.num_workers={N_WORKERS}",
    "pbt.burn_in_period=1",
    "pbt.perturbation_interval=1",
    "pbt.max_generations=2",
]
SEARCHED = sorted(load_config().pbt.hps)
OUTPUT_FIELDS = [
    "output_params",
    "factors",
    "ic_mean",
    "ic_std",
    "co_means",
    "co_stds",
    "gen_states",
    "gen_init",
    "gen_inputs",
    "con_states",
]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=TINY_DATA)
    return path


def run(data: Path, out: Path, *extra: str) -> int:
    """`autolfads run DATA -o OUT --quiet` with the tiny overrides (later overrides win)."""
    return main(["run", str(data), "-o", str(out), "--quiet", *TINY, *extra])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finished(data_file, tmp_path_factory) -> Path:
    """A finished 2-generation run: generation 0 is epochs 0-1 (burn-in 2), generation 1 is epoch 2."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert run(data_file, out, "pbt.burn_in_period=2") == 0
    return out


def fitlog(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "fitlog.csv")


def history(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "pbt_history.csv")


# ----------------------------------------------------------------------------- outputs


def test_run_writes_every_output_and_the_zip(finished):
    names = {p.name for p in finished.iterdir()}
    assert names == {
        "autolfads.zip",
        "config.yaml",
        "report",
        "fitlog.csv",
        "lfads_output_sess0.h5",
        "model.ckpt",
        "pbt_history.csv",
        "pbt_state.pt",
    }
    with zipfile.ZipFile(finished / "autolfads.zip") as zf:
        assert sorted(zf.namelist()) == ["fitlog.csv", "lfads_output_sess0.h5", "model.ckpt"]
        for name in zf.namelist():
            assert zf.read(name) == (finished / name).read_bytes(), name


def test_fitlog_has_a_row_per_worker_per_epoch_and_the_spec_columns(finished):
    log = fitlog(finished)
    assert len(log) == N_WORKERS * 3
    pairs = set(zip(log["worker_id"], log["epoch"], strict=True))
    assert pairs == {(w, e) for w in range(N_WORKERS) for e in range(3)}
    assert dict(zip(log["epoch"], log["generation"], strict=True)) == {0: 0, 1: 0, 2: 1}
    required = [
        "worker_id",
        "generation",
        "epoch",
        "train/loss",
        "train/recon",
        "valid/loss",
        "valid/recon",
        "valid/recon_smth",
        "train/kl/ic",
        "train/kl/co",
        "train/l2",
        "copied_from",
        "valid/r2",
        "valid/bps",
        *(f"hp/{name}" for name in SEARCHED),
    ]
    missing = [c for c in required if c not in log.columns]
    assert not missing
    assert list(log.columns[:3]) == ["worker_id", "generation", "epoch"]
    assert np.isfinite(log[required].to_numpy(dtype=float)).all()


def test_pbt_history_records_every_decision(finished):
    hist = history(finished)
    assert len(hist) == N_WORKERS * 2
    for col in ["generation", "worker_id", "score", "copied_from"]:
        assert col in hist.columns
    for name in SEARCHED:
        assert f"hp_before/{name}" in hist.columns and f"hp_after/{name}" in hist.columns
    # a generation's score is each worker's smoothed loss at the generation's last epoch
    log = fitlog(finished).set_index(["worker_id", "epoch"])
    for row in hist.itertuples():
        last_epoch = 1 if row.generation == 0 else 2
        assert row.score == log.loc[(row.worker_id, last_epoch), "valid/recon_smth"]


def test_recon_smth_is_smoothed_per_worker_and_continues_from_the_copied_worker(finished):
    log = fitlog(finished).set_index(["worker_id", "epoch"]).sort_index()
    hist = history(finished)
    sources = hist[hist.generation == 0].set_index("worker_id")["copied_from"]
    copied = [w for w in range(N_WORKERS) if sources[w] != w]
    assert copied, "seed 0 should give at least one exploit copy after generation 0"
    for w in range(N_WORKERS):
        assert log.loc[(w, 0), "copied_from"] == w  # nobody has copied before the first exploit
        assert log.loc[(w, 2), "copied_from"] == sources[w]
        # first value = current; then 0.7 * current + 0.3 * previous (docs/data-format.md, Metrics)
        assert log.loc[(w, 0), "valid/recon_smth"] == pytest.approx(
            log.loc[(w, 0), "valid/recon"], rel=1e-12
        )
        own = 0.7 * log.loc[(w, 1), "valid/recon"] + 0.3 * log.loc[(w, 0), "valid/recon_smth"]
        assert log.loc[(w, 1), "valid/recon_smth"] == pytest.approx(own, rel=1e-12)
        # after the exploit the history continues from the source's smoothed value
        src = sources[w]
        carried = 0.7 * log.loc[(w, 2), "valid/recon"] + 0.3 * log.loc[(src, 1), "valid/recon_smth"]
        assert log.loc[(w, 2), "valid/recon_smth"] == pytest.approx(carried, rel=1e-12)
    w = copied[0]
    assert log.loc[(w, 1), "valid/recon_smth"] != log.loc[(sources[w], 1), "valid/recon_smth"]


def test_posterior_output_file_holds_the_inputs_and_every_field(finished, data_file):
    with h5py.File(data_file, "r") as src, h5py.File(finished / "lfads_output_sess0.h5", "r") as f:
        for key in src:
            np.testing.assert_array_equal(f[key][()], src[key][()], err_msg=key)
        n = {"train": src["train_encod_data"].shape[0], "valid": src["valid_encod_data"].shape[0]}
        expected = {
            "output_params": (12, 8),
            "factors": (12, 3),
            "ic_mean": (4,),
            "ic_std": (4,),
            "co_means": (12, 1),
            "co_stds": (12, 1),
            "gen_states": (12, 8),
            "gen_init": (8,),
            "gen_inputs": (12, 1),
            "con_states": (12, 4),
        }
        assert set(expected) == set(OUTPUT_FIELDS)
        for split in ("train", "valid"):
            for name, tail in expected.items():
                value = f[f"{split}_{name}"][()]
                assert value.shape == (n[split], *tail), f"{split}_{name}"
                assert np.isfinite(value).all(), f"{split}_{name}"
        assert (f["valid_output_params"][()] > 0).all()
        assert set(f) == set(src) | {f"{s}_{n}" for s in ("train", "valid") for n in OUTPUT_FIELDS}


def test_model_ckpt_is_the_best_worker_and_loads_both_ways(finished):
    payload = torch.load(finished / "model.ckpt", map_location="cpu", weights_only=True)
    assert isinstance(payload, dict)
    model = LFADS.load_from_checkpoint(finished / "model.ckpt")
    assert model.structure.gen_dim == 8 and model.structure.fac_dim == 3
    assert model.network.n_workers == 1
    state = torch.load(finished / "pbt_state.pt", map_location="cpu", weights_only=True)
    hist = history(finished)
    best = state["best"]
    assert best["score"] == hist.score.min()
    row = hist[(hist.generation == best["generation"]) & (hist.worker_id == best["worker"])]
    assert row.score.item() == best["score"]
    for name in SEARCHED:
        assert model.hps[name] == pytest.approx(row[f"hp_before/{name}"].item(), rel=1e-6)


def test_config_yaml_is_the_resolved_config_with_the_overrides(finished):
    cfg = OmegaConf.load(finished / "config.yaml")
    assert cfg.model.gen_dim == 8 and cfg.model.co_dim == 1
    assert cfg.pbt.num_workers == N_WORKERS and cfg.pbt.burn_in_period == 2
    assert cfg.datamodule.batch_size == 8
    assert cfg.model.encod_data_dim == 8 and cfg.model.encod_seq_len == 12  # filled from the data
    assert cfg.model.lr_init == load_config().model.lr_init  # defaults are there too


# ----------------------------------------------------------------------------- policy


def test_exploit_none_never_copies_and_never_changes_hps(data_file, tmp_path):
    out = tmp_path / "out"
    assert run(data_file, out, "pbt.exploit.method=none", "pbt.max_generations=3") == 0
    log, hist = fitlog(out), history(out)
    assert (log.copied_from == log.worker_id).all()
    assert (hist.copied_from == hist.worker_id).all()
    for name in SEARCHED:
        assert (log.groupby("worker_id")[f"hp/{name}"].nunique() == 1).all(), name
        np.testing.assert_array_equal(hist[f"hp_before/{name}"], hist[f"hp_after/{name}"])
    assert log.groupby("worker_id")["hp/kl_ic_scale"].first().nunique() == N_WORKERS


def test_a_diverged_worker_loses_and_the_result_is_finite(data_file, tmp_path, monkeypatch):
    """Worker 0's weights are set to NaN before generation 1: it is copied over, never chosen."""
    real = ShardRunner.train_epochs

    def poisoned(self, start, stop):
        if start == 1 and 0 in self.spec.worker_ids:
            k = self.spec.worker_ids.index(0)
            state = self.worker_state(k)
            state["params"] = {n: torch.full_like(p, np.nan) for n, p in state["params"].items()}
            self.load_worker_state(k, state)
        return real(self, start, stop)

    monkeypatch.setattr(ShardRunner, "train_epochs", poisoned)
    out = tmp_path / "out"
    assert run(data_file, out, "pbt.max_generations=3", "pbt.workers_per_shard=2") == 0
    log = fitlog(out).set_index(["worker_id", "epoch"])
    assert np.isnan(log.loc[(0, 1), "valid/recon"])
    assert all(np.isfinite(log.loc[(w, 1), "valid/recon"]) for w in range(1, N_WORKERS))
    hist = history(out)
    gen1 = hist[hist.generation == 1].set_index("worker_id")
    assert np.isnan(gen1.loc[0, "score"]) and gen1.loc[0, "copied_from"] != 0
    assert np.isfinite(log.loc[(0, 2), "valid/recon"])  # restored from a finite worker
    best = torch.load(out / "pbt_state.pt", weights_only=True)["best"]
    assert np.isfinite(best["score"]) and (best["generation"], best["worker"]) != (1, 0)
    model = LFADS.load_from_checkpoint(out / "model.ckpt")
    assert all(torch.isfinite(p).all() for p in model.network.parameters())
    with h5py.File(out / "lfads_output_sess0.h5", "r") as f:
        assert np.isfinite(f["valid_output_params"][()]).all()


# ----------------------------------------------------------------------------- interrupt and resume


def test_interrupted_run_exits_130_and_resume_matches_an_uninterrupted_run(
    data_file, tmp_path, monkeypatch, capsys
):
    reference = tmp_path / "reference"
    assert run(data_file, reference, "pbt.max_generations=3") == 0

    real = InlineBackend.call_all
    calls = {"train_epochs": 0}

    def interrupt_in_generation_2(self, method, args):
        if method == "train_epochs":
            calls["train_epochs"] += 1
            if calls["train_epochs"] == 3:
                raise KeyboardInterrupt
        return real(self, method, args)

    monkeypatch.setattr(InlineBackend, "call_all", interrupt_in_generation_2)
    out = tmp_path / "out"
    capsys.readouterr()
    assert run(data_file, out, "pbt.max_generations=3") == 130
    assert "--resume" in capsys.readouterr().err
    state = torch.load(out / "pbt_state.pt", weights_only=True)
    assert state["generation"] == 2  # generations 0 and 1 finished
    assert max(row["generation"] for row in state["history"]) == 1
    assert not (out / "autolfads.zip").exists() and not (out / "model.ckpt").exists()
    assert fitlog(out).epoch.max() == 1

    monkeypatch.undo()
    assert run(data_file, out, "pbt.max_generations=3", "--resume") == 0
    pd.testing.assert_frame_equal(fitlog(out), fitlog(reference))
    pd.testing.assert_frame_equal(history(out), history(reference))
    best = torch.load(out / "pbt_state.pt", weights_only=True)["best"]
    assert best == torch.load(reference / "pbt_state.pt", weights_only=True)["best"]
    got = LFADS.load_from_checkpoint(out / "model.ckpt").network.state_dict()
    want = LFADS.load_from_checkpoint(reference / "model.ckpt").network.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_resuming_a_finished_run_rewrites_the_outputs_without_training(data_file, tmp_path):
    out = tmp_path / "out"
    assert run(data_file, out, "pbt.max_generations=1") == 0
    before = (out / "fitlog.csv").read_bytes()
    (out / "autolfads.zip").unlink()
    # the same stop rule: the run is finished, only the outputs are written again
    assert run(data_file, out, "pbt.max_generations=1", "--resume") == 0
    assert (out / "fitlog.csv").read_bytes() == before
    assert (out / "autolfads.zip").is_file()


def test_resuming_a_finished_run_with_more_generations_trains_on(data_file, tmp_path):
    out = tmp_path / "out"
    assert run(data_file, out, "pbt.max_generations=1") == 0
    epochs_before = fitlog(out)["epoch"].max()
    assert run(data_file, out, "pbt.max_generations=2", "--resume") == 0
    log = fitlog(out)
    assert log["epoch"].max() > epochs_before
    assert log["generation"].max() == 1
    assert not log.duplicated(["worker_id", "epoch"]).any()


def test_resume_with_a_different_model_config_is_refused(data_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(data_file, out, "pbt.max_generations=1") == 0
    before = (out / "fitlog.csv").read_bytes()
    capsys.readouterr()
    assert run(data_file, out, "model.gen_dim=6", "--resume") == 2
    assert "model" in one_error_line(capsys.readouterr().err)
    assert (out / "fitlog.csv").read_bytes() == before


def test_resume_without_a_population_checkpoint_is_refused(data_file, tmp_path, capsys):
    assert run(data_file, tmp_path / "out", "--resume") == 2
    assert "pbt_state.pt" in one_error_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------- output folder


def test_a_non_empty_out_is_refused_then_overwrite_replaces_it(data_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run(data_file, out) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--overwrite" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    assert run(data_file, out, "--overwrite") == 0
    assert not (out / "notes.txt").exists()
    assert (out / "autolfads.zip").is_file()


# ----------------------------------------------------------------------------- the run's length


def test_run_trains_exactly_max_epochs_per_worker(data_file, tmp_path, capsys):
    out = tmp_path / "out"
    settings = ["pbt.max_generations=null", "trainer.max_epochs=7"]
    assert (
        run(data_file, out, *settings, "pbt.burn_in_period=3", "pbt.perturbation_interval=2") == 0
    )
    log = fitlog(out)
    assert (log.groupby("worker_id").size() == 7).all()
    assert sorted(log.epoch.unique()) == list(range(7))
    assert log.groupby("generation").epoch.agg(["min", "max"]).values.tolist() == [
        [0, 2],
        [3, 4],
        [5, 6],
    ]
    assert capsys.readouterr().err == ""  # no conflict, no notice


def test_a_burn_in_shorter_than_the_warm_up_is_kept_and_said_in_one_line(
    data_file, tmp_path, capsys
):
    out = tmp_path / "out"
    settings = ["pbt.max_generations=null", "trainer.max_epochs=3", "trainer.ramp_epochs=2"]
    assert run(data_file, out, *settings, "pbt.burn_in_period=1") == 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pbt.burn_in_period=1" in line and "warm-up" in line
    assert fitlog(out).query("generation == 0").epoch.max() == 0  # not lengthened to the warm-up


def test_max_epochs_within_the_burn_in_is_one_generation_said_in_one_line(
    data_file, tmp_path, capsys
):
    out = tmp_path / "out"
    settings = ["pbt.max_generations=null", "trainer.max_epochs=2", "pbt.burn_in_period=5"]
    assert run(data_file, out, *settings) == 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "trainer.max_epochs=2" in line and "one generation" in line
    log = fitlog(out)
    assert log.generation.max() == 0 and log.epoch.max() == 1


# ----------------------------------------------------------------------------- the ranking metric


def _last_epoch_of_each_generation(out: Path, column: str) -> pd.DataFrame:
    log = fitlog(out)
    last = log.groupby("generation").epoch.transform("max") == log.epoch
    return log[last].set_index(["generation", "worker_id"])[column].sort_index()


@pytest.mark.parametrize("metric", ["valid/recon", "valid/recon_smth"])
def test_pbt_metric_names_the_score_that_ranks_workers(data_file, tmp_path, metric):
    out = tmp_path / "out"
    assert run(data_file, out, f"pbt.metric={metric}", "pbt.perturbation_interval=2") == 0
    scores = history(out).set_index(["generation", "worker_id"])["score"].sort_index()
    want = _last_epoch_of_each_generation(out, metric)
    np.testing.assert_allclose(scores.values, want.values, rtol=1e-12)
    other = "valid/recon" if metric == "valid/recon_smth" else "valid/recon_smth"
    assert not np.allclose(scores.values, _last_epoch_of_each_generation(out, other).values)


def test_a_metric_where_higher_is_better_ranks_by_its_negative(data_file, tmp_path):
    out = tmp_path / "out"
    assert run(data_file, out, "pbt.metric=valid/r2") == 0
    scores = history(out).set_index(["generation", "worker_id"])["score"].sort_index()
    np.testing.assert_allclose(-scores.values, _last_epoch_of_each_generation(out, "valid/r2"))


def test_a_metric_the_run_cannot_compute_is_refused_before_work(data_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(data_file, out, "pbt.metric=valid/co_bps") == 2
    assert "pbt.metric" in one_error_line(capsys.readouterr().err)
    assert not (out / "fitlog.csv").exists()
