"""Shard: per-worker hyperparameters, worker copies inside and across shards, checkpoint round trips,
determinism, and a tiny model that learns a rotating latent from Poisson counts."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers import (
    default_hps,
    rotating_poisson_session,
    session_on,
    tiny_settings,
    tiny_structure,
    torch_threads,
)

from autolfads.train.shard import HP_NAMES, Shard


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data():
    session, _ = rotating_poisson_session(n_train=32, n_valid=16, T=8, N=6, seed=0)
    return [session]


def _shard(k: int = 2, seed: int = 0, device: str = "cpu", **hp_overrides) -> Shard:
    hps = default_hps(k, **{"dropout_rate": 0.1, "cd_rate": 0.2, **hp_overrides})
    return Shard(tiny_structure(), tiny_settings(), hps, device=device, seed=seed)


def _distinct_hps(k: int) -> dict[str, list[float]]:
    """Every HP differs between workers."""
    return {name: [0.01 * (i + 1) * (j + 1) for i in range(k)] for j, name in enumerate(HP_NAMES)}


def _trained(data, k: int, seed: int, epochs: int, device: str = "cpu") -> Shard:
    shard = Shard(tiny_structure(), tiny_settings(), _distinct_hps(k), device=device, seed=seed)
    shard.init_readout_biases(data)
    for epoch in range(epochs):
        shard.train_epoch(data, epoch)
    return shard


def _rows(t: torch.Tensor, k: int, n: int) -> torch.Tensor:
    return t.view(n, t.shape[0] // n, *t.shape[1:])[k]


def _per_worker_tensors(shard: Shard) -> dict[str, torch.Tensor]:
    """Every tensor with a worker axis: weights, per-worker buffers, Adam moments."""
    out = {f"param:{n}": p for n, p in shard.net.named_parameters()}
    out.update({f"buffer:{n}": b for n, b in shard.net.named_buffers() if b.dim() > 0})
    out.update({f"exp_avg:{i}": t for i, t in enumerate(shard.optimizer.exp_avg)})
    out.update({f"exp_avg_sq:{i}": t for i, t in enumerate(shard.optimizer.exp_avg_sq)})
    return out


def _assert_metrics_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---------------------------------------------------------------- hyperparameters


def test_missing_hyperparameter_is_an_error():
    hps = default_hps(2)
    del hps["kl_co_scale"]
    with pytest.raises(ValueError, match="kl_co_scale"):
        Shard(tiny_structure(), tiny_settings(), hps)


def test_set_hps_changes_values_in_place():
    shard = _shard(2)
    lr, kl = shard.hps["lr_init"], shard.hps["kl_ic_scale"]
    assert shard.optimizer.lr is lr
    shard.set_hps({"lr_init": [0.5, 0.25], "kl_ic_scale": np.array([1.0, 2.0])})
    assert shard.hps["lr_init"] is lr and shard.optimizer.lr is lr
    assert shard.hps["kl_ic_scale"] is kl
    assert lr.tolist() == [0.5, 0.25] and kl.tolist() == [1.0, 2.0]
    table = shard.hp_table()
    assert set(table) == set(HP_NAMES)
    np.testing.assert_allclose(table["lr_init"], [0.5, 0.25])
    table["lr_init"][0] = 9.0  # a copy: changing it changes nothing
    assert lr.tolist() == [0.5, 0.25]
    with pytest.raises(KeyError, match="nope"):
        shard.set_hps({"nope": [1.0, 1.0]})


def test_set_hps_reaches_the_observation_model():
    hps = default_hps(2, gamma_prior=[1.0, 1.5])
    shard = Shard(tiny_structure(reconstruction="zig"), tiny_settings(), hps)
    assert shard.net.observation[0].gamma_prior.tolist() == [1.0, 1.5]
    shard.set_hps({"gamma_prior": [2.0, 3.0]})
    assert shard.net.observation[0].gamma_prior.tolist() == [2.0, 3.0]


@pytest.mark.parametrize("from_data", [True, False])
def test_zig_scales_start_from_each_channels_training_events(from_data):
    session, _ = rotating_poisson_session(T=8, N=6)  # counts: events of 1, 2, ... above s_min
    structure = tiny_structure(reconstruction="zig", gamma_scale_from_data=from_data)
    shard = Shard(structure, tiny_settings(), default_hps(2, gamma_prior=2.0))
    shard.init_readout_biases([session])
    obs = shard.net.observation[0]
    targets = session.recon["train"].flatten(0, 1)
    reference = obs.moment_scales(targets)
    assert not torch.allclose(reference, torch.ones(6))
    # from data: the workers' prior (2) x each channel's estimate; else the structure's 1.0
    start = 2.0 * reference.expand(2, 6) if from_data else torch.ones(2, 6)
    torch.testing.assert_close(obs.log_scale.detach().exp(), start)
    # the read-out's bias is set after the scales: each channel's mean is its data mean
    mean = obs.mean(shard.net.readout[0].bias.view(2, 1, 1, 6, 2))[:, 0, 0]
    torch.testing.assert_close(mean, targets.mean(0).expand(2, 6), rtol=1e-4, atol=1e-5)


def test_worker_with_zero_learning_rate_keeps_its_weights(data, device):
    data = [session_on(d, device) for d in data]
    shard = _shard(2, device=device, lr_init=[0.01, 0.0])
    before = {n: p.detach().clone() for n, p in shard.net.named_parameters()}
    shard.train_epoch(data, 0)
    moved = False
    for name, p in shard.net.named_parameters():
        assert torch.equal(_rows(p.detach(), 1, 2), _rows(before[name], 1, 2)), name
        moved |= not torch.equal(_rows(p.detach(), 0, 2), _rows(before[name], 0, 2))
    assert moved


def test_epoch_metrics_have_one_value_per_worker(data, device):
    data = [session_on(d, device) for d in data]
    shard = _shard(3, device=device)
    train = shard.train_epoch(data, 0)
    valid = shard.evaluate(data, 0)
    parts = {"loss", "recon", "kl/ic", "kl/co", "l2"}
    assert set(train) == {f"train/{p}" for p in parts}
    assert set(valid) == {f"valid/{p}" for p in parts}
    for value in [*train.values(), *valid.values()]:
        assert value.shape == (3,) and np.isfinite(value).all()


def test_init_readout_biases_start_at_log_channel_means(data):
    shard = _shard(2)
    shard.init_readout_biases(data)
    mean = data[0].recon["train"].mean(dim=(0, 1))
    torch.testing.assert_close(shard.net.readout[0].bias, mean.log().expand(2, -1))


# ---------------------------------------------------------------- worker copies


def test_copy_workers_makes_exact_copies_and_leaves_others_alone(data, device):
    shard = _trained([session_on(d, device) for d in data], k=3, seed=1, epochs=2, device=device)
    before = {n: t.detach().clone() for n, t in _per_worker_tensors(shard).items()}
    steps_before = shard.optimizer.steps.clone()
    shard.optimizer.steps[0] += 5  # distinct step counts
    shard.copy_workers([0], [2])
    for name, t in _per_worker_tensors(shard).items():
        assert torch.equal(_rows(t, 2, 3), _rows(t, 0, 3)), name
        for k in (0, 1):
            assert torch.equal(_rows(t, k, 3), _rows(before[name], k, 3)), name
    assert shard.optimizer.steps[2] == steps_before[0] + 5
    for name, value in shard.hps.items():
        assert value[2] == value[0] and value[1] == pytest.approx(_distinct_hps(3)[name][1])
    assert shard.optimizer.lr is shard.hps["lr_init"]


def test_worker_state_moves_a_worker_to_another_shard(data, device):
    source = _trained(data, k=2, seed=2, epochs=2)  # a CPU shard's worker goes to `device`
    target = _trained([session_on(d, device) for d in data], k=3, seed=3, epochs=1, device=device)
    before = {n: t.detach().clone() for n, t in _per_worker_tensors(target).items()}
    buffer = io.BytesIO()
    torch.save(source.worker_state(1), buffer)
    buffer.seek(0)
    target.load_worker_state(2, torch.load(buffer, weights_only=True))
    src_tensors = _per_worker_tensors(source)
    for name, t in _per_worker_tensors(target).items():
        assert torch.equal(_rows(t, 2, 3).cpu(), _rows(src_tensors[name], 1, 2)), name
        for k in (0, 1):
            assert torch.equal(_rows(t, k, 3), _rows(before[name], k, 3)), name
    assert target.optimizer.steps[2].cpu() == source.optimizer.steps[1]
    for name in HP_NAMES:
        assert target.hps[name][2].cpu() == source.hps[name][1], name


# ---------------------------------------------------------------- persistence and determinism


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_dict_round_trip_continues_identically(data, device):
    data = [session_on(d, device) for d in data]
    original = _trained(data, k=2, seed=4, epochs=2, device=device)
    state = _round_trip(original.state_dict())  # also checks weights_only loading
    hps = default_hps(2, lr_init=0.5)
    restored = Shard(tiny_structure(), tiny_settings(), hps, device=device, seed=99)
    restored.load_state_dict(state)
    assert restored.optimizer.lr is restored.hps["lr_init"]
    for name in HP_NAMES:
        assert torch.equal(restored.hps[name], original.hps[name]), name
    for epoch in (2, 3):
        expected = {**original.train_epoch(data, epoch), **original.evaluate(data, epoch)}
        resumed = {**restored.train_epoch(data, epoch), **restored.evaluate(data, epoch)}
        _assert_metrics_equal(resumed, expected)
    restored_weights = restored.net.state_dict()
    for name, value in original.net.state_dict().items():
        assert torch.equal(value, restored_weights[name]), name


def test_resumed_shard_repeats_the_uninterrupted_run(data):
    original = _trained(data, k=2, seed=5, epochs=2)
    state = _round_trip(original.state_dict())
    expected = original.train_epoch(data, 2)
    # a new process resuming from the checkpoint: builds the shard the same way, then loads
    restored = Shard(tiny_structure(), tiny_settings(), _distinct_hps(2), seed=5)
    restored.load_state_dict(state)
    _assert_metrics_equal(restored.train_epoch(data, 2), expected)


def test_same_seed_gives_identical_losses(data, device):
    data = [session_on(d, device) for d in data]
    runs = []
    for _ in range(2):
        shard = _trained(data, k=2, seed=6, epochs=2, device=device)
        runs.append({**shard.train_epoch(data, 2), **shard.evaluate(data, 2)})
    _assert_metrics_equal(runs[0], runs[1])
    other = _trained(data, k=2, seed=7, epochs=2, device=device).train_epoch(data, 2)
    assert not np.array_equal(other["train/loss"], runs[0]["train/loss"])


def test_interleaved_shards_with_the_same_seed_give_identical_losses(data):
    a = Shard(tiny_structure(), tiny_settings(), _distinct_hps(2), seed=8)
    b = Shard(tiny_structure(), tiny_settings(), _distinct_hps(2), seed=8)
    for epoch in range(2):
        metrics_a = a.train_epoch(data, epoch)
        metrics_b = b.train_epoch(data, epoch)
        _assert_metrics_equal(metrics_a, metrics_b)


def test_training_does_not_depend_on_the_global_rng(data):
    runs = []
    for global_seed in (0, 1):
        shard = Shard(tiny_structure(), tiny_settings(), _distinct_hps(2), seed=9)
        torch.manual_seed(global_seed)
        runs.append({**shard.train_epoch(data, 0), **shard.evaluate(data, 0)})
    _assert_metrics_equal(runs[0], runs[1])


# ---------------------------------------------------------------- learning


def test_tiny_model_learns_a_rotating_latent(device):
    session, _ = rotating_poisson_session(n_train=48, n_valid=32, T=12, N=8, seed=0)
    session = session_on(session, device)
    s = tiny_structure(
        encod_data_dims=(8,), recon_data_dims=(8,), encod_seq_len=12, recon_seq_len=12, gen_dim=16
    )
    shard = Shard(s, tiny_settings(), default_hps(1, lr_init=0.02), device=device, seed=0)
    shard.init_readout_biases([session])
    history = [shard.train_epoch([session], epoch) for epoch in range(30)]
    valid = shard.evaluate([session], 29)

    first, last = history[0]["train/recon"][0], history[-1]["train/recon"][0]
    assert last < 0.8 * first
    counts = session.recon["valid"]
    mean_rate = session.recon["train"].mean(dim=(0, 1))  # constant per-neuron rate model
    null_nll = -torch.distributions.Poisson(mean_rate.expand_as(counts)).log_prob(counts).mean()
    assert valid["valid/recon"][0] < float(null_nll) - 0.25


def test_read_only_arrays_as_ray_delivers_them_become_tensors_without_a_warning(tmp_path):
    # Ray's object store hands actors read-only NumPy arrays; pytest turns torch's "not writable"
    # warning into an error (pyproject filterwarnings), so this fails if a table or data is shared
    from autolfads.data import SessionData
    from autolfads.data.tensors import to_tensors

    hps = {name: np.array(values) for name, values in default_hps(2).items()}
    for values in hps.values():
        values.setflags(write=False)
    shard = Shard(tiny_structure(), tiny_settings(), hps)
    shard.set_hps(hps)
    assert torch.equal(shard.hps["lr_init"], torch.tensor(hps["lr_init"], dtype=torch.float32))
    arrays = {s: np.ones((4, 8, 6), dtype=np.float32) for s in ("train", "valid")}
    for array in arrays.values():
        array.setflags(write=False)
    session = SessionData(tmp_path / "x.h5", encod=arrays, recon=arrays)
    (tensors,) = to_tensors([session], "cpu")
    tensors.encod["train"][0, 0, 0] = 5.0  # a copy: the read-only array is untouched
    assert arrays["train"][0, 0, 0] == 1.0
