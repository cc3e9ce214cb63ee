"""A new session onto a trained model (`autolfads.train.transfer`, `Shard(frozen=...)`): only the
new session's read-in, read-out and observation model train, on the C++ and the reference
operations; every other weight stays bit-identical to the checkpoint's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from helpers import (
    default_hps,
    needs_cpp,
    rotating_poisson_session,
    tiny_settings,
    tiny_structure,
    torch_threads,
)

from autolfads.outputs.checkpoint import LFADS
from autolfads.train.shard import Shard
from autolfads.train.transfer import SESSION_PARTS, Transfer


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _source(**structure) -> Transfer:
    """A tiny model (6 channels, no read-in) trained for one epoch, as a checkpoint would hold it."""
    shard = Shard(tiny_structure(**structure), tiny_settings(), default_hps(1), seed=0)
    data = [rotating_poisson_session(n_train=32, n_valid=16, T=8, N=6, seed=0)[0]]
    shard.init_readout_biases(data)
    shard.train_epoch(data, 0)
    hps = {name: float(v[0]) for name, v in shard.hp_table().items()}
    return Transfer(Path("base.ckpt"), LFADS(shard.net, hps, session_names=["base"]))


def _new_session_shard(source: Transfer, n_channels: int, k: int = 1, **kwargs) -> Shard:
    structure = dataclasses.replace(
        source.structure,
        encod_data_dims=(n_channels,),
        recon_data_dims=(n_channels,),
        readin_dim=source.structure.encoder_input_dim,
    )
    # penalties on the frozen recurrent weights and a clipping bound every step reaches
    hps = default_hps(k, l2_gen_scale=1.0, l2_con_scale=1.0, l2_ic_enc_scale=1.0, dropout_rate=0.1)
    return Shard(
        structure,
        tiny_settings(max_grad_norm=0.05),
        hps,
        seed=3,
        frozen=source.frozen_weights(),
        **kwargs,
    )


def _session_part(name: str) -> bool:
    return name.split(".")[0] in SESSION_PARTS


def _check_trained_apart(source: Transfer, shard: Shard, epochs: int = 2) -> None:
    data = [rotating_poisson_session(n_train=32, n_valid=16, T=8, N=5, seed=1)[0]]
    shard.init_readout_biases(data)
    start = {name: p.detach().clone() for name, p in shard.net.named_parameters()}
    for epoch in range(epochs):
        shard.train_epoch(data, epoch)
    params = dict(shard.net.named_parameters())
    trainable = {name for name in params if _session_part(name)}
    assert set(shard.trainable) == trainable
    assert {id(p) for p in shard.optimizer.params} == {id(params[n]) for n in trainable}
    state = shard.net.state_dict()
    frozen = source.frozen_weights()
    assert set(frozen) == {name for name in state if not _session_part(name)}
    for name, value in frozen.items():
        assert torch.equal(state[name], value), name
        if name in params:
            assert params[name].grad is None and not params[name].requires_grad, name
    for name in trainable:
        assert not torch.equal(params[name], start[name]), f"{name} did not train"


@pytest.mark.parametrize("accel", ["none", pytest.param("cpp", marks=needs_cpp)])
def test_only_the_new_sessions_read_in_and_read_out_train(accel):
    source = _source()
    shard = _new_session_shard(source, n_channels=5, accel=accel)
    assert shard.net.ops.name == accel
    assert shard.net.readin is not None  # the checkpoint had none: 5 channels -> its 6 inputs
    assert shard.net.readin[0].weight.shape == (1, 5, 6)
    _check_trained_apart(source, shard)


def test_the_zero_inflated_gammas_scales_of_the_new_session_train_too():
    source = _source(reconstruction="zig")
    shard = _new_session_shard(source, n_channels=5, accel="none")
    assert "observation.0.log_scale" in shard.trainable
    _check_trained_apart(source, shard, epochs=1)


def test_every_worker_starts_from_the_frozen_weights():
    source = _source()
    shard = _new_session_shard(source, n_channels=5, k=2, accel="none")
    state = shard.net.state_dict()
    for name, value in source.frozen_weights().items():
        t = state[name]
        if value.dim() == 0:
            assert torch.equal(t, value)
            continue
        rows = t.view(2, t.shape[0] // 2, *t.shape[1:])
        assert torch.equal(rows[0], value) and torch.equal(rows[1], value), name


def test_frozen_weights_the_network_lacks_or_of_another_shape_are_refused():
    structure = tiny_structure()
    with pytest.raises(ValueError, match="does not have"):
        Shard(structure, tiny_settings(), default_hps(1), frozen={"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="generator.gate_weight"):
        bad = {"generator.gate_weight": torch.zeros(1, 3, 3)}
        Shard(structure, tiny_settings(), default_hps(1), frozen=bad)
