"""`autolfads nlb-submission OUT`: the layout, keys, shapes, dtypes and trial order that the NLB
evaluation reads (nlb_tools/evaluation.py), on a simulated NLB-like pair of NWB files (train file
with held-out units, test file with the test trials), converted and then given a run's outputs."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

pytest.importorskip("pynwb")

from nwb_files import simulate_recording, write_nwb  # noqa: E402

from autolfads.cli import main  # noqa: E402

TRAIN_SPLITS = ["val", "train", "train", "none", "val", "train", "train", "val", "train", "train"]
HELDOUT = [False, False, True, False, False, True, False, False, True]  # 6 held-in, 3 held-out
TEST_SPLITS = ["test", "test", "none", "test", "test"]
KEYS = {
    "train_rates_heldin",
    "train_rates_heldout",
    "eval_rates_heldin",
    "eval_rates_heldout",
    "eval_rates_heldin_forward",
    "eval_rates_heldout_forward",
}
T, T_FP = 35, 10  # NLB's MC_Maze window (-250, 450) ms and 200 ms of forward prediction, 20 ms bins


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def nwb_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nlb")
    train = write_nwb(folder / "sim_train.nwb", simulate_recording(TRAIN_SPLITS, HELDOUT, seed=1))
    test_rec = simulate_recording(TEST_SPLITS, [False] * 6, seed=2)
    return train, write_nwb(folder / "sim_test.nwb", test_rec, behavior=False)


def convert(nwb_pair, out, *extra) -> None:
    train, test = nwb_pair
    argv = ["convert", "nwb", str(train), str(out), "--bin-ms", "20", *extra]
    assert main([*argv, "--behavior", "hand_vel"]) == 0


def fake_run(session, out_dir, reconstruction="poisson"):
    """A run's folder: the session file plus `{split}_output_params` whose value encodes
    (NWB row, bin, channel) as row + bin / 100 + channel / 10000, and a config.yaml."""
    out_dir.mkdir()
    path = out_dir / "lfads_output_sess0.h5"
    shutil.copyfile(session, path)
    with h5py.File(path, "r+") as f:
        _, n_t, n_rec = f["train_recon_data"].shape
        for split in ("train", "valid", "test"):
            if f"{split}_inds" not in f:
                continue
            rows = f[f"{split}_inds"][()].astype(float)
            code = rows[:, None, None] + np.arange(n_t)[:, None] / 100
            f[f"{split}_output_params"] = (code + np.arange(n_rec) / 10000).astype(np.float32)
    (out_dir / "config.yaml").write_text(f"model:\n  reconstruction: {reconstruction}\n")
    return out_dir


def test_a_test_phase_submission_has_nlbs_layout(nwb_pair, tmp_path, capsys):
    session = tmp_path / "mc_maze_small.h5"
    convert(nwb_pair, session, "--dataset", "mc_maze_small", "--test", str(nwb_pair[1]))
    out = fake_run(session, tmp_path / "out")
    sub = tmp_path / "submission.h5"
    assert main(["nlb-submission", str(out), "-o", str(sub)]) == 0
    assert f"wrote {sub}" in capsys.readouterr().out
    with h5py.File(sub, "r") as f:
        assert list(f) == ["mc_maze_small_20"]  # 20 ms bins: the `_20` group
        group = f["mc_maze_small_20"]
        assert set(group) == KEYS
        assert all(group[k].dtype == np.float32 for k in KEYS)
        arrays = {k: group[k][()] for k in KEYS}
    n_train, n_eval = 9, 4  # 'train' + 'val' trials (the model saw both); the 4 test trials
    assert arrays["train_rates_heldin"].shape == (n_train, T, 6)
    assert arrays["train_rates_heldout"].shape == (n_train, T, 3)
    assert arrays["eval_rates_heldin"].shape == (n_eval, T, 6)
    assert arrays["eval_rates_heldout"].shape == (n_eval, T, 3)
    assert arrays["eval_rates_heldin_forward"].shape == (n_eval, T_FP, 6)
    assert arrays["eval_rates_heldout_forward"].shape == (n_eval, T_FP, 3)
    # trials in NWB table order, train and val merged; forward bins follow the window
    train_rows = [i for i, s in enumerate(TRAIN_SPLITS) if s in ("train", "val")]
    np.testing.assert_allclose(arrays["train_rates_heldin"][:, 0, 0], train_rows, atol=1e-3)
    np.testing.assert_allclose(arrays["eval_rates_heldout"][:, 0, 0], [0, 1, 3, 4], atol=1e-3)
    np.testing.assert_allclose(
        arrays["eval_rates_heldin_forward"][0, :, 0], np.arange(T, T + T_FP) / 100, atol=1e-4
    )
    # channels: held-in first (units 0,1,3,4,6,7), then held out (units 2,5,8) in table order
    np.testing.assert_allclose(
        arrays["eval_rates_heldout"][0, 0], np.arange(6, 9) / 10000, atol=1e-6
    )


def test_without_test_trials_the_valid_trials_are_the_eval_trials(nwb_pair, tmp_path, capsys):
    session = tmp_path / "mc_maze.h5"
    convert(nwb_pair, session, "--dataset", "mc_maze", "--fp-ms", "0")
    out = fake_run(session, tmp_path / "out")
    assert main(["nlb-submission", str(out)]) == 0
    with h5py.File(out / "nlb_submission.h5", "r") as f:
        group = f["mc_maze_20"]
        assert set(group) == KEYS - {"eval_rates_heldin_forward", "eval_rates_heldout_forward"}
        np.testing.assert_allclose(
            group["train_rates_heldin"][:, 0, 0], [1, 2, 5, 6, 8, 9], atol=1e-3
        )
        np.testing.assert_allclose(group["eval_rates_heldin"][:, 0, 0], [0, 4, 7], atol=1e-3)
        assert group["eval_rates_heldout"].shape == (3, T, 3)


@pytest.mark.parametrize(
    ("convert_options", "reconstruction", "message"),
    [
        ([], "poisson", "has no 'nlb_dataset' attribute"),
        (["--dataset", "mc_maze", "--window", "-200", "400"], "poisson", "over [-200, 400) ms"),
        (["--dataset", "mc_maze", "--align", "start_time"], "poisson", "aligned on 'start_time'"),
        (["--dataset", "mc_maze", "--bin-ms", "10"], "poisson", "has 10 ms bins"),
        (["--dataset", "mc_maze"], "gamma", "model.reconstruction = 'gamma'"),
    ],
)
def test_a_run_not_made_for_nlb_is_refused_in_one_line(
    convert_options, reconstruction, message, nwb_pair, tmp_path, capsys
):
    session = tmp_path / "s.h5"
    convert(nwb_pair, session, *convert_options)
    out = fake_run(session, tmp_path / "out", reconstruction)
    capsys.readouterr()
    assert main(["nlb-submission", str(out), "-o", str(tmp_path / "sub.h5")]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "sub.h5").exists()


def test_no_run_folder_is_refused_in_one_line(tmp_path, capsys):
    assert main(["nlb-submission", str(tmp_path / "absent")]) == 2
    assert "absent: no such folder" in one_error_line(capsys.readouterr().err)
    assert main(["nlb-submission", str(tmp_path)]) == 2
    assert "no lfads_output_sess*.h5" in one_error_line(capsys.readouterr().err)


def test_a_tiny_trained_model_gives_a_submission_of_the_right_shapes(
    nwb_pair, tmp_path, monkeypatch
):
    monkeypatch.setattr("autolfads.commands.train.report_at_end", lambda *a, **k: None)
    session = tmp_path / "mc_maze_small.h5"
    convert(nwb_pair, session, "--dataset", "mc_maze_small", "--test", str(nwb_pair[1]))
    out = tmp_path / "out"
    tiny = ["model.ic_enc_dim=4", "model.ci_enc_dim=4", "model.con_dim=4", "model.co_dim=1"]
    tiny += ["model.ic_dim=4", "model.gen_dim=8", "model.fac_dim=3", "trainer.max_epochs=1"]
    tiny += ["trainer.ramp_epochs=1", "trainer.samples=2", "accel=none"]
    assert main(["train", str(session), "-o", str(out), *tiny, "--quiet"]) == 0
    assert main(["nlb-submission", str(out)]) == 0
    with h5py.File(out / "nlb_submission.h5", "r") as f:
        group = f["mc_maze_small_20"]
        assert group["train_rates_heldout"].shape == (9, T, 3)
        assert group["eval_rates_heldin_forward"].shape == (4, T_FP, 6)
        assert all(np.all(np.isfinite(group[k][()])) and np.all(group[k][()] > 0) for k in KEYS)
