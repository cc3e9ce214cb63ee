"""`autolfads train NEW.h5 --from CKPT` end to end on tiny chaotic-RNN files: a new session with
another channel count fitted onto a trained model, its outputs, where its settings come from, and
the one-line refusals (before any output folder exists)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import TINY_DATA, TINY_MODEL
from omegaconf import OmegaConf

from autolfads import LFADS
from autolfads.cli import main
from autolfads.data.synthetic import simulate_to_file
from autolfads.train.transfer import SESSION_PARTS, Transfer


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _simulate(path: Path, seed: int, **overrides) -> Path:
    settings = dict(item.split("=") for item in TINY_DATA)  # 12 bins, 8 neurons
    settings.update({k: str(v) for k, v in overrides.items()})
    simulate_to_file(
        "chaotic-rnn", path, seed=seed, overrides=[f"{k}={v}" for k, v in settings.items()]
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """base.h5 (8 neurons) with a model trained on it, and new.h5 (5 neurons, same 12 bins)."""
    root = tmp_path_factory.mktemp("from")
    base = _simulate(root / "base.h5", seed=0)
    new = _simulate(root / "new.h5", seed=1, n_neurons=5)
    out = root / "base_out"
    argv = ["train", str(base), "-o", str(out), "--quiet", *TINY_MODEL, "trainer.max_epochs=2"]
    assert main([*argv, "model.lr_init=0.003"]) == 0
    return {"root": root, "base": base, "new": new, "ckpt": out / "model.ckpt"}


@pytest.fixture(scope="module")
def fitted(files) -> Path:
    out = files["root"] / "new_out"
    argv = ["train", str(files["new"]), "--from", str(files["ckpt"]), "-o", str(out), "--quiet"]
    assert main([*argv, "trainer.max_epochs=3"]) == 0
    return out


def test_the_new_session_is_fitted_onto_the_frozen_model(files, fitted):
    base = LFADS.load_from_checkpoint(files["ckpt"])
    new = LFADS.load_from_checkpoint(fitted / "model.ckpt")
    assert new.structure.encod_data_dims == (5,) and new.structure.recon_data_dims == (5,)
    assert new.structure.readin_dim == 8  # the base model had no read-in: its 8 inputs
    assert new.session_names == ["new"]
    assert new.fitted_from == {
        "checkpoint": "model.ckpt",
        "sessions": ["base"],
        "trained": list(SESSION_PARTS),
    }
    old, now = base.network.state_dict(), new.network.state_dict()
    shared = [name for name in now if name.split(".")[0] not in SESSION_PARTS]
    assert shared and set(shared) == {n for n in old if n.split(".")[0] not in SESSION_PARTS}
    for name in shared:
        assert torch.equal(now[name], old[name]), name
    assert now["readin.0.weight"].shape == (1, 5, 8) and now["readout.0.bias"].shape == (1, 5)
    names = {p.name for p in fitted.iterdir()}
    assert {"model.ckpt", "lfads_output_sess0.h5", "fitlog.csv", "config.yaml", "report"} <= names
    assert (fitted / "config.yaml").read_text().startswith("# fitted --from model.ckpt")


def test_settings_come_from_the_checkpoint_then_the_command(fitted):
    cfg = OmegaConf.load(fitted / "config.yaml")
    assert cfg.trainer.max_epochs == 3  # the command's override
    assert cfg.datamodule.batch_size == 8 and cfg.trainer.samples == 2  # the checkpoint's config
    assert cfg.model.lr_init == pytest.approx(0.003)  # the checkpoint config's, not the default
    assert cfg.model.gen_dim == 8 and cfg.model.readin_dim == 8  # the checkpoint's structure
    assert cfg.model.encod_data_dim == 5  # the new file's


def test_hyperparameters_come_from_the_checkpoints_hps_not_its_config(files, tmp_path):
    payload = torch.load(files["ckpt"], weights_only=True)
    payload["hps"]["lr_init"] = 0.0021  # as training leaves it: decayed
    payload["hps"]["dropout_rate"] = 0.17  # as PBT leaves them: the best worker's, not the config's
    payload["config"]["device"] = "cuda:7"  # this machine's device and accel, not the checkpoint's
    ckpt = tmp_path / "pbt.ckpt"
    torch.save(payload, ckpt)
    base = Transfer.load(ckpt).config_base()
    assert base["model"]["dropout_rate"] == 0.17
    assert payload["config"]["model"]["dropout_rate"] != 0.17
    assert base["model"]["lr_init"] == 0.003  # the starting rate, not the decayed one
    assert "device" not in base and "accel" not in base
    assert base["model"]["encod_data_dim"] is None and base["model"]["readin_dim"] == 8


def test_sample_and_evaluate_work_on_the_result(files, fitted, tmp_path):
    out = tmp_path / "sampled"
    argv = ["sample", str(fitted / "model.ckpt"), str(files["new"]), "-o", str(out)]
    assert main([*argv, "--samples", "2"]) == 0
    with h5py.File(out / "lfads_output_sess0.h5", "r") as f:
        assert f["valid_output_params"].shape[1:] == (12, 5)
        assert np.isfinite(f["valid_output_params"][()]).all()
    assert main(["evaluate", str(fitted)]) == 0
    assert (fitted / "metrics.json").is_file()


def _from(files, data, out, *extra) -> list[str]:
    return ["train", str(data), "--from", str(files["ckpt"]), "-o", str(out), "--quiet", *extra]


def _with_ext_input(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        for split in ("train", "valid"):
            n, t, _ = f[f"{split}_encod_data"].shape
            f[f"{split}_ext_input"] = np.zeros((n, t, 2), dtype=np.float32)
    return dst


def _with_negative_count(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        data = f["train_recon_data"][()]
        data[0, 0, 0] = -1
        f["train_recon_data"][...] = data
    return dst


@pytest.mark.parametrize(
    ("make", "found", "expected"),
    [
        (lambda root: _simulate(root / "short.h5", seed=2, n_steps=10), "=10", "=12"),
        (lambda root: _with_ext_input(root / "new.h5", root / "ext.h5"), "=2", "=0"),
        (lambda root: _with_negative_count(root / "new.h5", root / "neg.h5"), "-1", "poisson"),
    ],
    ids=["time-steps", "ext-input", "values"],
)
def test_data_the_checkpoint_cannot_take_is_refused_in_one_line(
    files, tmp_path, capsys, make, found, expected
):
    shutil.copy(files["new"], tmp_path / "new.h5")
    data = make(tmp_path)
    out = tmp_path / "out"
    assert main(_from(files, data, out)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(files["ckpt"]) in line and str(data) in line
    assert found in line and expected in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "checkpoint not found"),
        ("corrupt", "not an autolfads checkpoint"),
        ("two-files", "give one data file, got 2"),
        ("resume", "cannot --resume"),
        ("structure", "model.gen_dim=16"),
    ],
)
def test_unusable_requests_are_refused_in_one_line(files, tmp_path, capsys, case, message):
    out = tmp_path / "out"
    ckpt, data, extra = files["ckpt"], [str(files["new"])], []
    if case == "missing":
        ckpt = tmp_path / "nothing.ckpt"
    elif case == "corrupt":
        ckpt = tmp_path / "corrupt.ckpt"
        ckpt.write_bytes(b"not a checkpoint")
    elif case == "two-files":
        data.append(str(files["base"]))
    elif case == "resume":
        extra = ["--resume"]
    else:
        extra = ["model.gen_dim=16"]
    argv = ["train", *data, "--from", str(ckpt), "-o", str(out), "--quiet", *extra]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line
    if case in ("missing", "corrupt", "structure"):
        assert str(ckpt) in line
    assert not out.exists()
