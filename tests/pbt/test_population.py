"""Tests of the population plumbing: shard planning, exploit copies across an inline backend, and
a run without an output folder (`autolfads.fit`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_DATA, TINY_MODEL, default_hps, tiny_settings, tiny_structure

import autolfads.pbt.population as population_module
from autolfads.commands.workflow import prepare_sessions
from autolfads.config import load_config
from autolfads.data import read_sessions
from autolfads.data.synthetic import simulate_to_file
from autolfads.pbt.backends import InlineBackend
from autolfads.pbt.population import (
    SHARD_MEMORY_BUDGET,
    _Population,
    activation_bytes_per_worker,
    default_workers_per_shard,
    plan_shards,
    run_pbt,
)
from autolfads.pbt.runner import ShardLost, ShardRunner, ShardSpec

N_WORKERS = 4


# ----------------------------------------------------------------------------- plan_shards


@pytest.mark.parametrize("n_workers", [1, 4, 5, 16])
@pytest.mark.parametrize("per_shard", [1, 2, 3, 4, 100])
def test_plan_shards_covers_every_worker_once_in_order(n_workers, per_shard):
    shards = plan_shards(n_workers, per_shard)
    flat = [w for ids in shards for w in ids]
    assert flat == list(range(n_workers))
    assert all(1 <= len(ids) <= per_shard for ids in shards)
    assert len(shards) == -(-n_workers // min(per_shard, n_workers))  # ceil
    assert all(len(ids) == len(shards[0]) for ids in shards[:-1])  # only the last may be short


def test_plan_shards_examples():
    assert plan_shards(5, 2) == [(0, 1), (2, 3), (4,)]
    assert plan_shards(3, 1) == [(0,), (1,), (2,)]
    assert plan_shards(3, 8) == [(0, 1, 2)]
    assert plan_shards(3, 0) == [(0,), (1,), (2,)]  # a non-positive size means one per shard


def test_default_workers_per_shard_batches_every_worker_within_the_memory_budget():
    medium = tiny_structure(
        encod_data_dims=(50,),
        recon_data_dims=(50,),
        encod_seq_len=100,
        recon_seq_len=100,
        ic_enc_dim=64,
        ci_enc_dim=32,
        con_dim=32,
        ic_dim=64,
        gen_dim=100,
        fac_dim=20,
    )
    assert default_workers_per_shard(medium, batch_size=100, n_workers=16) == 16
    large = tiny_structure(
        encod_data_dims=(100,),
        recon_data_dims=(100,),
        encod_seq_len=140,
        recon_seq_len=140,
        ic_enc_dim=128,
        ci_enc_dim=64,
        con_dim=64,
        ic_dim=128,
        gen_dim=200,
        fac_dim=40,
    )
    per_shard = default_workers_per_shard(large, batch_size=256, n_workers=16)
    assert 1 <= per_shard < 16
    assert per_shard * activation_bytes_per_worker(large, 256) <= SHARD_MEMORY_BUDGET
    assert default_workers_per_shard(large, batch_size=256, n_workers=1) == 1


# ----------------------------------------------------------------------------- exploit copies


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=TINY_DATA)
    return read_sessions([Path(path)], batch_size=8)


def trained_population(sessions, per_shard: int) -> _Population:
    """4 workers with different HPs, trained an epoch so weights and Adam moments differ."""
    structure = tiny_structure(
        encod_data_dims=(8,), recon_data_dims=(8,), encod_seq_len=12, recon_seq_len=12
    )
    settings = tiny_settings(batch_size=8, ramp_epochs=1)
    table = {k: np.asarray(v) for k, v in default_hps(N_WORKERS).items()}
    table["lr_init"] = np.array([1e-2, 3e-3, 1e-3, 5e-2])
    table["kl_ic_scale"] = np.array([1e-3, 2e-3, 3e-3, 4e-3])
    shards = plan_shards(N_WORKERS, per_shard)
    specs = [
        ShardSpec(ids, {k: v[list(ids)] for k, v in table.items()}, structure, settings, seed=i)
        for i, ids in enumerate(shards)
    ]
    population = _Population(InlineBackend(specs, sessions), shards)
    population.backend.call_all("train_epochs", [(0, 1)] * len(shards))
    return population


@pytest.fixture(scope="module", params=[1, 2, 4], ids=lambda n: f"per_shard={n}")
def trained(request, sessions):
    """(population, its shards' saved states): restore the states to undo a test's copies."""
    population = trained_population(sessions, request.param)
    n_shards = len(population.shards)
    return population, population.backend.call_all("state_dict", [()] * n_shards)


def fresh(trained) -> _Population:
    population, saved = trained
    population.backend.call_all("load_state_dict", [(s,) for s in saved])
    return population


def assert_same_worker(a: dict, b: dict) -> None:
    for part in ("params", "buffers"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), f"{part} {name}"
    for part in ("exp_avg", "exp_avg_sq"):
        assert len(a[part]) == len(b[part])
        assert all(torch.equal(x, y) for x, y in zip(a[part], b[part], strict=True)), part
    assert torch.equal(a["steps"], b["steps"])
    assert a["hps"] == b["hps"]


def assert_distinct_workers(states: list[dict]) -> None:
    """The test is only meaningful if every worker differs from every other beforehand."""
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            assert states[i]["hps"]["lr_init"] != states[j]["hps"]["lr_init"]
            assert states[i]["hps"]["kl_ic_scale"] != states[j]["hps"]["kl_ic_scale"]
            first = next(iter(states[i]["params"]))
            assert not torch.equal(states[i]["params"][first], states[j]["params"][first])
            assert not torch.equal(states[i]["exp_avg"][0], states[j]["exp_avg"][0])


COPIES = {
    "one": [0, 0, 2, 3],  # within a shard for per_shard >= 2
    "cross": [2, 1, 2, 3],  # across shards for per_shard <= 2
    "swaps": [1, 0, 3, 2],
    "chain": [1, 2, 2, 0],  # 0 <- 1 <- 2, and 3 <- 0 while 0 itself copies
    "all": [3, 3, 3, 3],
}


@pytest.mark.parametrize("pattern", list(COPIES))
def test_apply_copies_gives_each_worker_its_source_pre_copy_state(trained, pattern):
    population = fresh(trained)
    sources = COPIES[pattern]
    before = [population.worker_state(w) for w in range(N_WORKERS)]
    assert_distinct_workers(before)
    population.apply_copies(np.array(sources))
    for w, src in enumerate(sources):
        assert_same_worker(population.worker_state(w), before[src])


@pytest.mark.parametrize("pattern", ["swaps", "chain"])
def test_apply_copies_within_a_shard_copies_everything_but_the_learning_rate(trained, pattern):
    """What does hold within a shard today: weights, Adam state and every HP but lr_init."""
    population = fresh(trained)
    sources = COPIES[pattern]
    before = [population.worker_state(w) for w in range(N_WORKERS)]
    population.apply_copies(np.array(sources))
    for w, src in enumerate(sources):
        after, want = population.worker_state(w), before[src]
        for name in after["params"]:
            assert torch.equal(after["params"][name], want["params"][name])
        assert all(
            torch.equal(x, y) for x, y in zip(after["exp_avg"], want["exp_avg"], strict=True)
        )
        assert torch.equal(after["steps"], want["steps"])
        assert {k: v for k, v in after["hps"].items() if k != "lr_init"} == {
            k: v for k, v in want["hps"].items() if k != "lr_init"
        }


def test_hp_table_and_set_hps_follow_global_worker_order(trained):
    population = fresh(trained)
    table = population.hp_table()
    np.testing.assert_allclose(table["lr_init"], [1e-2, 3e-3, 1e-3, 5e-2], rtol=1e-6)
    table["kl_ic_scale"] = np.array([4e-4, 3e-4, 2e-4, 1e-4])
    population.set_hps(table)
    for w in range(N_WORKERS):
        hps = population.worker_state(w)["hps"]
        assert hps["kl_ic_scale"] == pytest.approx(table["kl_ic_scale"][w], rel=1e-6)


# ----------------------------------------------------------------------------- without a folder


class LosesAShardOnce(InlineBackend):
    """An inline backend whose shard 1 is lost once, in the second generation's training."""

    def __init__(self, specs, sessions) -> None:
        super().__init__(specs, sessions)
        self.specs, self.sessions, self.trainings = specs, sessions, 0

    def call_all(self, method, args):
        if method == "train_epochs":
            self.trainings += 1
            if self.trainings == 2:
                raise ShardLost(1, "shard 1 (workers 1-1) died")
        return super().call_all(method, args)

    def restart(self, shard: int) -> None:
        self.runners[shard] = ShardRunner(self.specs[shard], self.sessions)


def test_without_a_folder_nothing_is_written_and_a_lost_shard_is_redone_from_memory(
    sessions, tmp_path, monkeypatch
):
    cfg = load_config(
        None,
        [
            *TINY_MODEL,
            "trainer.max_epochs=3",
            "pbt.backend=inline",
            "pbt.num_workers=2",
            "pbt.workers_per_shard=1",
            "pbt.burn_in_period=1",
            "pbt.perturbation_interval=1",
        ],
    )
    prepare_sessions(sessions, cfg, quiet=True)
    monkeypatch.chdir(tmp_path)
    plain = run_pbt(cfg, sessions, None, quiet=True)
    made: list[LosesAShardOnce] = []

    def flaky(name, specs, sessions, **kwargs):
        made.append(LosesAShardOnce(specs, sessions))
        return made[-1]

    monkeypatch.setattr(population_module, "make_backend", flaky)
    lost = run_pbt(cfg, sessions, None, quiet=True)
    assert made[0].trainings == 4  # three generations, the second one twice
    pd.testing.assert_frame_equal(lost.fitlog, plain.fitlog)
    assert list(tmp_path.iterdir()) == []
