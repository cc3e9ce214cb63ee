"""`autolfads run` with parallel shards on a local Ray: the same outputs and best score as inline,
and a run whose actor is killed mid-run still completes with the uninterrupted result."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import TINY_DATA, TINY_MODEL

from autolfads.cli import main
from autolfads.data.synthetic import simulate_to_file

ray = pytest.importorskip("ray")
from autolfads.pbt import ray_backend  # noqa: E402

TINY = [
    *TINY_MODEL,
    "pbt.num_workers=4",
    "pbt.workers_per_shard=2",
    "pbt.burn_in_period=1",
    "pbt.perturbation_interval=1",
    "pbt.max_generations=3",
]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=TINY_DATA)
    return path


def run(data, out, *extra):
    return main(["run", str(data), "-o", str(out), "--quiet", *TINY, *extra])


@pytest.fixture(scope="module")
def inline_run(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("inline") / "out"
    assert run(data_file, out, "pbt.backend=inline") == 0
    return out


def _same_run(a, b):
    for name in ("fitlog.csv", "pbt_history.csv"):
        left, right = pd.read_csv(a / name), pd.read_csv(b / name)
        assert list(left.columns) == list(right.columns), name
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-6)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def test_two_ray_shards_give_the_inline_outputs_and_best_score(data_file, inline_run, tmp_path):
    out = tmp_path / "ray"
    assert run(data_file, out, "pbt.backend=ray") == 0
    _same_run(inline_run, out)


def test_a_killed_actor_mid_run_still_gives_the_complete_result(
    data_file, inline_run, tmp_path, monkeypatch
):
    original = ray_backend.RayBackend.call_all
    calls = {"train_epochs": 0}

    def kill_once(self, method, args):
        if method == "train_epochs":
            calls["train_epochs"] += 1
            if calls["train_epochs"] == 2:  # during generation 1
                ray.kill(self.actors[1], no_restart=True)
        return original(self, method, args)

    monkeypatch.setattr(ray_backend.RayBackend, "call_all", kill_once)
    out = tmp_path / "ray_killed"
    assert run(data_file, out, "pbt.backend=ray") == 0
    assert calls["train_epochs"] == 4  # generation 1 was redone after the restart
    _same_run(inline_run, out)
