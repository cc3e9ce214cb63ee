"""Tests of the Ray backend on a private local Ray (2 CPUs, started once for the module): same
results as the inline backend, exact worker moves across actors, and recovery from a killed actor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_DATA, default_hps, tiny_settings, tiny_structure

from autolfads.data import read_sessions
from autolfads.data.synthetic import simulate_to_file
from autolfads.errors import ConfigError
from autolfads.pbt import backends
from autolfads.pbt.backends import (
    InlineBackend,
    ShardLost,
    auto_plan,
    make_backend,
    ray_address,
)
from autolfads.pbt.population import _Population, plan_shards
from autolfads.pbt.runner import ShardSpec

ray = pytest.importorskip("ray")
from autolfads.pbt.ray_backend import RayBackend, start_ray, stop_ray  # noqa: E402

N_WORKERS = 4
PER_SHARD = 2
BOGUS_ADDRESS = "not-a-ray-address"  # ray.init fails at once on it, were it ever used


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray with 2 CPUs, started by `start_ray` while $RAY_ADDRESS is bogus."""
    was_running = ray.is_initialized()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ADDRESS", BOGUS_ADDRESS)
        try:
            started = start_ray(None, num_cpus=2)
        except Exception as error:
            if BOGUS_ADDRESS in str(error):
                pytest.fail(f"start_ray(None) tried to join $RAY_ADDRESS: {error}")
            pytest.skip(f"Ray cannot start on this machine: {error}")
    yield {"started": started, "was_running": was_running}
    if started:
        stop_ray()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=TINY_DATA)
    return read_sessions([Path(path)], batch_size=8)


def shard_specs(n_workers: int = N_WORKERS, per_shard: int = PER_SHARD) -> list[ShardSpec]:
    """Workers with distinct learning rates and KL weights, `per_shard` per shard."""
    structure = tiny_structure(
        encod_data_dims=(8,), recon_data_dims=(8,), encod_seq_len=12, recon_seq_len=12
    )
    settings = tiny_settings(batch_size=8, ramp_epochs=1)
    table = {k: np.asarray(v) for k, v in default_hps(n_workers).items()}
    table["lr_init"] = np.geomspace(1e-3, 5e-2, n_workers)
    table["kl_ic_scale"] = np.linspace(1e-3, 4e-3, n_workers)
    return [
        ShardSpec(ids, {k: v[list(ids)] for k, v in table.items()}, structure, settings, seed=7 + i)
        for i, ids in enumerate(plan_shards(n_workers, per_shard))
    ]


@pytest.fixture(scope="module")
def backends_pair(local_ray, sessions):
    """(ray backend, inline backend, initial shard states), both built from the same specs."""
    specs = shard_specs()
    on_ray = RayBackend(specs, sessions, cpus_per_shard=1)
    inline = InlineBackend(specs, sessions)
    initial = inline.call_all("state_dict", [()] * len(specs))
    initial_on_ray = on_ray.call_all("state_dict", [()] * len(specs))
    yield on_ray, inline, initial, initial_on_ray
    on_ray.shutdown()


def restore(backend, states) -> None:
    backend.call_all("load_state_dict", [(s,) for s in states])


def assert_same_tree(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors, arrays and numbers are exactly equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


# ----------------------------------------------------------------------------- starting Ray


def test_local_ray_is_private_and_ignores_ray_address(local_ray):
    if local_ray["was_running"]:
        pytest.skip("Ray was already running in this process")
    assert local_ray["started"]
    assert ray.cluster_resources()["CPU"] == 2
    assert BOGUS_ADDRESS not in ray.get_runtime_context().gcs_address


def test_ray_address_prefers_the_config_then_the_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address(None) == "10.0.0.1:6379"
    assert ray_address("head:6379") == "head:6379"


def test_shards_that_cannot_all_fit_are_refused_before_any_actor_starts(local_ray, sessions):
    with pytest.raises(ConfigError, match=r"pbt\.cpus_per_shard=2 x 2 shards needs 4 CPUs"):
        RayBackend(shard_specs(), sessions, cpus_per_shard=2)
    with pytest.raises(ConfigError, match=r"pbt\.gpus_per_shard=1 x 2 shards needs 2 GPUs"):
        RayBackend(shard_specs(), sessions, gpus_per_shard=1)
    assert ray.is_initialized()  # a backend that did not start Ray leaves it running


# ----------------------------------------------------------------------------- same results


def test_actors_start_in_the_same_state_as_inline_runners(backends_pair):
    on_ray, _, initial, initial_on_ray = backends_pair
    assert_same_tree(initial_on_ray, initial)
    places = list(on_ray.places.values())
    assert len({p["pid"] for p in places}) == 2  # one process per shard
    assert all(p["threads"] == 1 and p["device"] == "cpu" for p in places)  # cpus_per_shard=1


def test_training_on_ray_matches_inline_exactly(backends_pair):
    on_ray, inline, initial, _ = backends_pair
    restore(on_ray, initial)
    restore(inline, initial)
    got = on_ray.call_all("train_epochs", [(0, 2)] * 2)
    want = inline.call_all("train_epochs", [(0, 2)] * 2)
    assert_same_tree(got, want)
    assert np.isfinite(got[0][-1]["valid/recon"]).all()
    assert_same_tree(
        on_ray.call_all("state_dict", [(), ()]), inline.call_all("state_dict", [(), ()])
    )


def test_exploit_across_actors_moves_weights_and_optimiser_state_exactly(backends_pair):
    on_ray, _, initial, _ = backends_pair
    restore(on_ray, initial)
    on_ray.call_all("train_epochs", [(0, 1)] * 2)  # weights and Adam moments now differ
    population = _Population(on_ray, plan_shards(N_WORKERS, PER_SHARD))
    before = [population.worker_state(w) for w in range(N_WORKERS)]
    assert not torch.equal(before[0]["exp_avg"][0], before[2]["exp_avg"][0])
    sources = [2, 1, 2, 1]  # 0 <- 2 and 3 <- 1 cross the two actors
    population.apply_copies(np.array(sources))
    for w, src in enumerate(sources):
        assert_same_tree(population.worker_state(w), before[src], f"worker {w}")


# ----------------------------------------------------------------------------- faults


def test_a_killed_actor_is_reported_restarted_and_trains_on_like_inline(backends_pair, monkeypatch):
    on_ray, inline, initial, _ = backends_pair
    restore(on_ray, initial)
    on_ray.call_all("train_epochs", [(0, 1)] * 2)
    saved = on_ray.call_all("state_dict", [(), ()])
    ray.kill(on_ray.actors[1])

    with pytest.raises(ShardLost) as lost:
        on_ray.call_all("train_epochs", [(1, 2)] * 2)
    assert (lost.value.shard, lost.value.shards) == (1, (1,))
    assert "shard 1 (workers 2-3)" in str(lost.value) and "died" in str(lost.value)
    assert on_ray.places[1]["ip"] in str(lost.value)

    monkeypatch.setitem(on_ray.places, 1, {"node_id": "f00d", "ip": "10.9.9.9", "pid": 1})
    with pytest.raises(ShardLost, match=r"shard 1 .*node f00d \(10\.9\.9\.9\) is gone"):
        on_ray.call(1, "ping")
    monkeypatch.undo()

    on_ray.restart(1)
    restore(on_ray, saved)
    restore(inline, saved)
    got = on_ray.call_all("train_epochs", [(1, 3)] * 2)
    want = inline.call_all("train_epochs", [(1, 3)] * 2)
    assert_same_tree(got, want)


# ----------------------------------------------------------------------------- choosing a backend


def test_make_backend_auto_runs_one_shard_inline(sessions):
    backend = make_backend("auto", shard_specs(per_shard=N_WORKERS), sessions)
    assert isinstance(backend, InlineBackend)


def test_make_backend_auto_falls_back_to_inline(sessions, monkeypatch):
    monkeypatch.setattr(backends, "cpu_count", lambda: 1)
    assert isinstance(make_backend("auto", shard_specs(), sessions), InlineBackend)
    monkeypatch.undo()
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # Ray not installed
    assert isinstance(make_backend("auto", shard_specs(), sessions), InlineBackend)
    with pytest.raises(ConfigError, match="pbt.backend=ray: Ray is not installed"):
        make_backend("ray", shard_specs(), sessions)


def test_make_backend_rejects_unknown_names(sessions):
    with pytest.raises(ConfigError, match=r"pbt\.backend='threads': expected auto, inline or ray"):
        make_backend("threads", shard_specs(), sessions)


@pytest.mark.parametrize(
    ("n_workers", "device", "cpus", "gpus", "gen_dim", "plan"),
    [
        (16, "cpu", 2, 0, 10, (8, 1)),  # one shard per core, one thread each
        (16, "cpu", 3, 0, 10, (6, 1)),  # split as evenly as shards allow: 6 + 6 + 4
        (1, "cpu", 8, 0, 10, (1, 1)),  # a small model keeps one thread
        (4, "cpu", 16, 0, 128, (1, 4)),  # a larger model gets its core group
        (16, "cuda", 2, 2, 128, (8, 1)),  # one shard per GPU
        (2, "cuda:0", 2, 4, 128, (1, 1)),
    ],
)
def test_auto_plan(n_workers, device, cpus, gpus, gen_dim, plan):
    structure = tiny_structure(gen_dim=gen_dim)
    assert auto_plan(n_workers, structure, 16, device, cpus=cpus, gpus=gpus) == plan


def test_cpu_kernels_are_built_by_the_driver_before_ray_actors_start(sessions, monkeypatch):
    import autolfads.pbt.ray_backend as ray_backend_module

    calls = []
    monkeypatch.setattr(backends, "load_kernels", lambda: calls.append("load"))
    monkeypatch.setattr(ray_backend_module, "RayBackend", lambda *a, **k: calls.append("actors"))
    make_backend("inline", shard_specs(), sessions)
    assert calls == []
    make_backend("ray", shard_specs(), sessions)
    assert calls == ["load", "actors"]
