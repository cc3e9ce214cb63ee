"""The reference operations on `device` compute what they compute on the CPU.

Random numbers are the one thing a device does differently (each has its own generator), so these
tests give the network operations whose random numbers are drawn on the CPU from their own
generator and then moved (`HostRandomOps`): a training-mode forward pass with dropout, coordinated
dropout and posterior samples, its loss and gradients, a shard's training epochs and the posterior
average then match between the CPU and `device` to rounding. On the CPU (the default `--device`)
they compare the CPU with itself, which checks the tests; `python -m pytest -m device --device cuda`
runs them on a GPU (bench/gpu_check.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    default_hps,
    loosen,
    poisson_counts,
    rotating_poisson_session,
    session_on,
    tiny_settings,
    tiny_structure,
)

import autolfads.accel
from autolfads.model.lfads import LFADSNetwork
from autolfads.model.ops import Ops
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.posterior import session_posterior
from autolfads.train.augment import prepare_batch
from autolfads.train.objective import lfads_loss
from autolfads.train.shard import Shard

K, B = 2, 6


class HostRandomOps(Ops):
    """The reference operations, with every random number drawn on the CPU from one seeded
    generator (the generator passed in is ignored) and then moved to the device."""

    def __init__(self, seed: int) -> None:
        self.host = torch.Generator().manual_seed(seed)

    def uniform(self, like, generator=None):
        return torch.rand(like.shape, generator=self.host, dtype=like.dtype).to(like.device)

    def normal(self, shape, like, generator=None):
        return torch.randn(shape, generator=self.host, dtype=like.dtype).to(like.device)


def _network(device: str, seed: int = 0) -> LFADSNetwork:
    """A float64 K-worker network with the same weights on every device."""
    torch.manual_seed(seed)
    net = LFADSNetwork(tiny_structure(ext_input_dim=1), K).double()
    net.ops = HostRandomOps(seed)
    return net.to(device)


def _forward_and_grads(device: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    net = _network(device).train()
    data = poisson_counts((B, 8, 6), seed=1).double()
    data[0, 2, 3] = float("nan")  # an unobserved entry
    ext = torch.linspace(-1, 1, B * 8, dtype=torch.float64).reshape(B, 8, 1)
    data, ext = data.to(device), ext.to(device)
    cd = torch.tensor([0.3, 0.0], device=device)
    batch = prepare_batch(data, data, K, cd_rate=cd, ops=net.ops)
    rate = torch.tensor([0.2, 0.1], device=device)
    out = net(batch.encod_input, 0, ext, rate, sample=True)
    hps = {n: torch.tensor(v, device=device) for n, v in default_hps(K, kl_ic_scale=0.1).items()}
    loss, parts = lfads_loss(net, out, batch, 0, hps, ramp=0.5, loss_scale=10.0)
    loss.sum().backward()
    values = {**out.as_dict(), **{f"part:{k}": v for k, v in parts.items()}, "loss": loss}
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    return values, grads


def test_training_forward_loss_and_gradients_match_the_cpu(device):
    ref_values, ref_grads = _forward_and_grads("cpu")
    values, grads = _forward_and_grads(device)
    tol = loosen(device)
    assert set(grads) == set(ref_grads)
    for name, ref in [*ref_values.items(), *ref_grads.items()]:
        got = values[name] if name in values else grads[name]
        assert got.device.type == torch.device(device).type, name
        torch.testing.assert_close(got.cpu(), ref, rtol=1e-9 * tol, atol=1e-10 * tol, msg=name)


def _shard_run(device: str, epochs: int = 2) -> tuple[list[dict[str, np.ndarray]], Shard]:
    session, _ = rotating_poisson_session(n_train=32, n_valid=16, T=8, N=6, seed=0)
    data = [session_on(session, device)]
    hps = default_hps(K, dropout_rate=[0.1, 0.2], cd_rate=[0.3, 0.0])
    shard = Shard(tiny_structure(), tiny_settings(), hps, device, seed=3, accel=HostRandomOps(3))
    shard.init_readout_biases(data)
    history = []
    for epoch in range(epochs):
        history.append({**shard.train_epoch(data, epoch), **shard.evaluate(data, epoch)})
    return history, shard


def test_shard_training_epochs_match_the_cpu(device):
    """float32, every part of a step: shuffling, coordinated dropout, dropout, samples, Adam."""
    ref_history, ref = _shard_run("cpu")
    history, shard = _shard_run(device)
    assert next(shard.net.parameters()).device.type == torch.device(device).type
    # float32 rounding grows over the steps; and where a gradient is rounding noise, Adam's first
    # steps (about lr * sign(gradient)) may go either way: weights get a loose bound
    rtol, atol = (1e-5, 1e-6) if device == "cpu" else (5e-3, 0.05)
    for ref_metrics, metrics in zip(ref_history, history, strict=True):
        assert set(metrics) == set(ref_metrics)
        for name, value in metrics.items():
            assert value.shape == (K,) and np.isfinite(value).all(), name
            np.testing.assert_allclose(value, ref_metrics[name], rtol=rtol, err_msg=name)
    ref_params = dict(ref.net.named_parameters())
    for name, p in shard.net.named_parameters():
        torch.testing.assert_close(p.detach().cpu(), ref_params[name].detach(), rtol=0, atol=atol)


def test_posterior_average_matches_the_cpu(device):
    session, _ = rotating_poisson_session(n_train=7, n_valid=5, T=8, N=6, seed=2)
    results = []
    for where in ("cpu", device):
        net = _network(where, seed=4).float()  # the session tensors are float32
        # chunks of 3 trials x 4 samples: several chunks per split, the last one short
        results.append(session_posterior(net, session_on(session, where), 0, 4, max_rows=12))
    ref, got = results
    for split, fields in ref.items():
        for name, value in fields.items():
            assert got[split][name].shape == value.shape, (split, name)
            np.testing.assert_allclose(got[split][name], value, rtol=1e-4, atol=1e-5)


def test_a_network_for_another_device_never_builds_the_cpu_kernels(monkeypatch, tmp_path, device):
    """The C++ operations are for the CPU: a shard or a checkpoint loaded for a GPU never asks for
    them (on a fresh GPU machine that would be a compile of the extension, for nothing)."""
    if device == "cpu":
        pytest.skip("the CPU may use them")
    asked = []
    monkeypatch.setattr(autolfads.accel, "cpp_ops", lambda: asked.append(1))
    shard = Shard(tiny_structure(), tiny_settings(), default_hps(K), device, accel="auto")
    assert shard.net.ops.name == "none"
    hps = {k: v[0] for k, v in default_hps(1).items()}
    path = LFADS(LFADSNetwork(tiny_structure(), 1), hps, {}, ["s"]).save(tmp_path / "m.ckpt")
    loaded = LFADS.load_from_checkpoint(path, device=device, accel="auto")
    assert next(loaded.network.parameters()).device.type == torch.device(device).type
    assert asked == []
