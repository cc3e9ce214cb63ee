"""Tests of the plumbing shared by `train` and `run` (output folder, data dims, zip) and of
`autolfads train` / `autolfads sample` end to end on a tiny chaotic-RNN file."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_DATA, TINY_MODEL

from autolfads import LFADS
from autolfads.analysis.evaluate import evaluate_run
from autolfads.cli import main
from autolfads.commands.workflow import ZIP_NAME, load_sessions, prepare_out_dir, write_zip
from autolfads.config import DATA_DIM_KEYS, load_config
from autolfads.data.synthetic import simulate_to_file
from autolfads.errors import UsageError

TINY = [
    *TINY_MODEL,
    "pbt.backend=inline",  # Ray has its own tests (tests/pbt/test_ray_backend.py)
]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=TINY_DATA)
    return path


# ----------------------------------------------------------------------------- prepare_out_dir


def test_prepare_out_dir_creates_a_missing_folder(tmp_path):
    out = prepare_out_dir(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir()


def test_prepare_out_dir_accepts_an_empty_folder(tmp_path):
    assert prepare_out_dir(tmp_path) == tmp_path


def test_prepare_out_dir_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="--resume or --overwrite"):
        prepare_out_dir(tmp_path)
    assert (tmp_path / "x.txt").read_text() == "x"


def test_prepare_out_dir_resume_keeps_the_contents(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    prepare_out_dir(tmp_path, resume=True)
    assert (tmp_path / "x.txt").read_text() == "x"


def test_prepare_out_dir_overwrite_empties_the_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("x")
    out = prepare_out_dir(tmp_path, overwrite=True)
    assert out.is_dir() and list(out.iterdir()) == []


@pytest.mark.parametrize("non_empty", [False, True])
def test_prepare_out_dir_refuses_resume_with_overwrite(tmp_path, non_empty):
    if non_empty:
        (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="--resume and --overwrite"):
        prepare_out_dir(tmp_path, resume=True, overwrite=True)
    assert (tmp_path / "x.txt").exists() == non_empty


def test_prepare_out_dir_refuses_a_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        prepare_out_dir(path, overwrite=True)
    assert path.read_text() == "x"


# ----------------------------------------------------------------------------- load_sessions


def test_load_sessions_fills_the_data_dims_into_the_config(data_file):
    cfg = load_config(None, ["datamodule.batch_size=8"])
    assert all(cfg.model[key] is None for key in DATA_DIM_KEYS)
    sessions = load_sessions([str(data_file)], cfg)
    assert len(sessions) == 1
    assert cfg.model.encod_data_dim == 8 and cfg.model.recon_data_dim == 8
    assert cfg.model.encod_seq_len == 12 and cfg.model.recon_seq_len == 12
    assert cfg.model.ext_input_dim == 0


def test_load_sessions_accepts_stated_dims_that_agree(data_file):
    cfg = load_config(None, ["datamodule.batch_size=8", "model.encod_data_dim=8"])
    load_sessions([str(data_file)], cfg)
    assert cfg.model.encod_data_dim == 8


def test_load_sessions_needs_a_file():
    with pytest.raises(UsageError, match="no data file"):
        load_sessions([], load_config())


def test_a_config_dim_that_disagrees_with_the_data_is_exit_2(data_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["train", str(data_file), "-o", str(out), "--quiet", *TINY]
    assert main([*argv, "model.encod_seq_len=20"]) == 2
    line = one_error_line(capsys.readouterr().err).replace(str(data_file), "FILE")
    assert "model.encod_seq_len" in line and "FILE" in line
    assert "20" in line and "12" in line  # both values
    assert not out.exists() or not any(out.iterdir())  # nothing written before validation


def test_a_batch_larger_than_the_train_split_is_one_batch_of_all_trials(data_file, capsys):
    cfg = load_config(None, ["datamodule.batch_size=100"])
    load_sessions([str(data_file)], cfg)
    note = capsys.readouterr().err.strip()
    assert note == (
        f"note: datamodule.batch_size=100 is larger than the 24 train trials of {data_file}: "
        "one batch of all 24 trials"
    )
    assert cfg.datamodule.batch_size == 24  # what ran, as config.yaml will say


def test_the_batch_note_is_quiet_with_quiet_and_absent_when_the_batch_fits(data_file, capsys):
    cfg = load_config(None, ["datamodule.batch_size=100"])
    load_sessions([str(data_file)], cfg, quiet=True)
    assert cfg.datamodule.batch_size == 24 and capsys.readouterr().err == ""
    cfg = load_config(None, ["datamodule.batch_size=24"])
    load_sessions([str(data_file)], cfg)
    assert cfg.datamodule.batch_size == 24 and capsys.readouterr().err == ""


def test_a_batch_is_cut_to_the_largest_train_split_of_several_sessions(data_file, tmp_path, capsys):
    small = tmp_path / "small.h5"
    with h5py.File(data_file, "r") as src, h5py.File(small, "w") as dst:
        for key in ("encod_data", "recon_data"):
            dst[f"train_{key}"] = src[f"train_{key}"][:10]
            dst[f"valid_{key}"] = src[f"valid_{key}"][()]
    cfg = load_config(None, ["datamodule.batch_size=20"])
    load_sessions([str(data_file), str(small)], cfg)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "10 train trials of" in lines[0] and str(small) in lines[0]
    assert cfg.datamodule.batch_size == 20  # the 24-trial session still has full batches


def test_a_model_that_does_not_fit_the_data_is_refused_before_any_output(
    data_file, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["train", str(data_file), "-o", str(out), "--quiet", *TINY]
    assert main([*argv, "model.ci_lag=12"]) == 2  # the trials have 12 bins
    assert "model.ci_lag" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


# ----------------------------------------------------------------------------- write_zip


def test_write_zip_holds_the_files_under_their_names(tmp_path):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    files = [tmp_path / "fitlog.csv", sub / "lfads_output_sess0.h5", tmp_path / "model.ckpt"]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * (100 + i))
    path = write_zip(tmp_path, files)
    assert path == tmp_path / ZIP_NAME
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["fitlog.csv", "lfads_output_sess0.h5", "model.ckpt"]
        for f in files:
            assert zf.read(f.name) == f.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "autolfads.zip",
        "elsewhere",
        "fitlog.csv",
        "model.ckpt",
    ]  # no temporary file left behind


# ----------------------------------------------------------------------------- train and sample


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "out"
    argv = ["train", str(data_file), "-o", str(out), "--quiet", *TINY, "trainer.max_epochs=3"]
    assert main(argv) == 0
    return out


def test_train_writes_the_same_outputs_as_run_without_pbt_files(trained):
    names = {p.name for p in trained.iterdir()}
    assert names == {
        "autolfads.zip",
        "config.yaml",
        "report",
        "fitlog.csv",
        "lfads_output_sess0.h5",
        "model.ckpt",
    }
    with zipfile.ZipFile(trained / "autolfads.zip") as zf:
        assert sorted(zf.namelist()) == ["fitlog.csv", "lfads_output_sess0.h5", "model.ckpt"]
    log = pd.read_csv(trained / "fitlog.csv")
    assert list(log.worker_id) == [0, 0, 0] and list(log.epoch) == [0, 1, 2]
    for col in ["valid/recon", "valid/recon_smth", "train/loss", "valid/r2", "valid/bps"]:
        assert np.isfinite(log[col]).all(), col
    assert torch.load(trained / "model.ckpt", weights_only=True)["format"]
    assert LFADS.load_from_checkpoint(trained / "model.ckpt").structure.gen_dim == 8


def test_train_refuses_resume(data_file, tmp_path, capsys):
    argv = ["train", str(data_file), "-o", str(tmp_path / "o"), "--quiet", "--resume", *TINY]
    assert main(argv) == 2
    assert "--resume" in one_error_line(capsys.readouterr().err)


def test_sample_writes_posterior_outputs(trained, data_file, tmp_path, capsys):
    out = tmp_path / "sampled"
    argv = ["sample", str(trained / "model.ckpt"), str(data_file), "-o", str(out)]
    assert main([*argv, "--samples", "3"]) == 0
    with h5py.File(out / "lfads_output_sess0.h5", "r") as f, h5py.File(data_file, "r") as src:
        n_valid = src["valid_encod_data"].shape[0]
        assert f["valid_output_params"].shape == (n_valid, 12, 8)
        assert f["train_factors"].shape == (src["train_encod_data"].shape[0], 12, 3)
        np.testing.assert_array_equal(f["valid_encod_data"][()], src["valid_encod_data"][()])


def test_sample_refuses_data_with_other_channels(trained, tmp_path, capsys):
    other = tmp_path / "other.h5"
    simulate_to_file("chaotic-rnn", other, seed=1, overrides=[*TINY_DATA[:3], "n_neurons=6"])
    out = tmp_path / "sampled"
    assert main(["sample", str(trained / "model.ckpt"), str(other), "-o", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err).replace(str(other), "FILE")
    assert "encod_data_dim" in line and "FILE" in line
    assert "6" in line and "8" in line  # both values
    assert not (out / "lfads_output_sess0.h5").exists()


# --------------------------------------------------------------------------- the test split


def other_test_target(src: Path, dst: Path) -> Path:
    """A copy of `src` whose test target and truth hold other values, or (`dst` named
    'none.h5') are left out: test trials with input only."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        for key in ("test_recon_data", "test_truth"):
            values = f[key][()]
            del f[key]
            if dst.name != "none.h5":
                f[key] = values[::-1] * 2 + 1  # other counts and rates, the same shape
    return dst


@pytest.mark.parametrize(
    "command",
    [
        ["train", "trainer.max_epochs=3"],
        [
            "run",
            "pbt.num_workers=2",
            "pbt.burn_in_period=1",
            "pbt.perturbation_interval=1",
            "pbt.max_generations=3",
            "pbt.metric=valid/bps",
        ],
    ],
    ids=["train", "run"],
)
def test_the_test_split_cannot_change_training_or_selection(command, tmp_path):
    """Files that differ only in their test target (or lack one) train bit-identically: the same
    fit log (losses, valid metrics, PBT ranking and copies), weights and outputs. Only the test
    metrics of `evaluate` differ."""
    data = tmp_path / "a.h5"
    overrides = [*TINY_DATA, "test_fraction=0.2"]
    simulate_to_file("chaotic-rnn", data, seed=0, overrides=overrides)
    files = [data, other_test_target(data, tmp_path / "b.h5")]
    files.append(other_test_target(data, tmp_path / "none.h5"))
    outs = []
    for i, path in enumerate(files):
        out = tmp_path / f"out{i}"
        assert main([command[0], str(path), "-o", str(out), "--quiet", *TINY, *command[1:]]) == 0
        outs.append(out)
    first, *others = outs
    names = ["fitlog.csv"] + (["pbt_history.csv"] if command[0] == "run" else [])
    weights = torch.load(first / "model.ckpt", weights_only=True)["state_dict"]
    for out in others:
        for name in names:
            assert (out / name).read_bytes() == (first / name).read_bytes(), name
        other = torch.load(out / "model.ckpt", weights_only=True)["state_dict"]
        assert other.keys() == weights.keys()
        for key, value in weights.items():
            assert torch.equal(other[key], value), key
        with (
            h5py.File(first / "lfads_output_sess0.h5") as a,
            h5py.File(out / "lfads_output_sess0.h5") as b,
        ):
            for key in [k for k in a if k.endswith(("_output_params", "_factors"))]:
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)
    metrics = [evaluate_run(out)["sess0"] for out in outs]
    valid = [{k: v for k, v in m.items() if not k.startswith("test/")} for m in metrics]
    assert valid[0] == valid[1] == valid[2]
    assert metrics[0]["test/bps"] != metrics[1]["test/bps"]
    assert not any(k.startswith("test/") for k in metrics[2])
