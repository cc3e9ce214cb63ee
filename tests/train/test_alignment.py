"""Alignment initialisation: principal-components regression puts sessions that recorded different
neurons of one latent system into one space; matrices given in a file are used as given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import default_hps, tiny_settings, tiny_structure

from autolfads.data import SessionData
from autolfads.errors import DataError
from autolfads.model.lfads import LFADSNetwork
from autolfads.model.structure import LFADSStructure
from autolfads.train.alignment import align_network, align_sessions, apply_alignments
from autolfads.train.shard import Shard

T, D, C = 20, 3, 12  # bins, latent dimension, conditions


def _latents(seed: int = 0) -> np.ndarray:
    """(C, T, D) smooth latent trajectories, one per condition."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, T)
    phase = rng.uniform(0, 2 * np.pi, (C, 1, D))
    freq = np.array([1.0, 1.7, 2.3])
    return np.sin(freq * t[None, :, None] + phase)


def _session(
    name: str,
    z: np.ndarray,
    mixing: np.ndarray,
    offset: np.ndarray,
    trials_per_condition: int = 3,
    **extra: np.ndarray,
) -> SessionData:
    """Noise-free data x = z A + c of every condition's latents (B = C x trials, T, N)."""
    cond = np.repeat(np.arange(C), trials_per_condition)
    x = (z[cond] @ mixing + offset).astype(np.float32)
    return SessionData(
        Path(f"{name}.h5"),
        encod={"train": x, "valid": x[:C]},
        recon={"train": x, "valid": x[:C]},
        extra={"train_condition": cond, "valid_condition": cond[:C], **extra},
    )


def _sessions(n_channels=(7, 5, 9), seed: int = 0) -> tuple[list[SessionData], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    z = _latents(seed)
    mixings = [rng.standard_normal((D, n)) for n in n_channels]
    sessions = [
        _session(f"s{i}", z, a, rng.uniform(2, 4, a.shape[1])) for i, a in enumerate(mixings)
    ]
    return sessions, mixings


def _structure(channels: tuple[int, ...], **overrides) -> LFADSStructure:
    """A tiny model over sessions of `channels`, T bins, read-in width D."""
    return tiny_structure(
        encod_data_dims=channels,
        recon_data_dims=channels,
        encod_seq_len=T,
        recon_seq_len=T,
        readin_dim=D,
        **overrides,
    )


def _r2(target: np.ndarray, pred: np.ndarray) -> float:
    return 1.0 - ((target - pred) ** 2).sum() / ((target - target.mean(0)) ** 2).sum()


def test_noise_free_sessions_land_in_one_space_that_is_a_linear_map_of_the_latents():
    sessions, _ = _sessions()
    aligns = align_sessions(sessions, readin_dim=D)
    z = _latents(0).reshape(-1, D)
    shared = []
    for s, a in zip(sessions, aligns, strict=True):
        assert a.source == "conditions"
        assert a.readin_weight.shape == (s.dims.encod_data_dim, D)
        x = s.encod["train"][::3].reshape(-1, s.dims.encod_data_dim)  # one trial per condition
        shared.append(x @ a.readin_weight + a.readin_bias)
    for other in shared[1:]:  # every session's read-in gives the same point for the same state
        np.testing.assert_allclose(other, shared[0], atol=1e-2 * np.abs(shared[0]).max())
    # and that space is the latent space up to an invertible linear map
    fit, *_ = np.linalg.lstsq(np.c_[shared[0], np.ones(len(z))], z, rcond=None)
    assert _r2(z, np.c_[shared[0], np.ones(len(z))] @ fit) > 0.999
    # read-outs map the shared space back to each session's data
    for s, a, zs in zip(sessions, aligns, shared, strict=True):
        x = s.encod["train"][::3].reshape(-1, s.dims.encod_data_dim)
        back = (zs - zs.mean(0)) @ a.readout_weight + x.mean(0)
        assert _r2(x, back) > 0.99


def test_random_read_ins_do_not_share_a_space():
    """The check above can fail: independently initialised read-ins disagree."""
    sessions, _ = _sessions()
    net = LFADSNetwork(_structure((7, 5, 9)))
    outs = []
    for i, s in enumerate(sessions):
        x = torch.as_tensor(s.encod["train"][::3])[None]
        outs.append(net.readin[i](x).detach().numpy().reshape(-1, D))
    assert _r2(outs[0], outs[1]) < 0.5


def test_without_shared_conditions_each_session_uses_its_own_components():
    sessions, _ = _sessions()
    for s in sessions:
        del s.extra["train_condition"]
    aligns = align_sessions(sessions, readin_dim=D)
    assert [a.source for a in aligns] == ["trials"] * 3
    x = sessions[0].encod["train"].reshape(-1, 7)
    z = x @ aligns[0].readin_weight + aligns[0].readin_bias
    assert np.abs(z.mean(0)).max() < 0.05 and z.std(0).min() > 0.1  # centred, not collapsed


def test_file_matrices_are_used_as_given():
    sessions, _ = _sessions()
    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((5, D)).astype(np.float32)
    bias_c = rng.standard_normal(5).astype(np.float32)
    sessions[1].extra.update(alignment_matrix_cxf=matrix, alignment_bias_c=bias_c)
    structure = _structure((7, 5, 9), co_dim=0)
    shard = Shard(structure, tiny_settings(), default_hps(2))
    assert align_network(shard.net, sessions) == []
    readin = shard.net.readin[1]
    for k in range(2):
        torch.testing.assert_close(readin.weight[k], torch.as_tensor(matrix))
        torch.testing.assert_close(readin.bias[k], torch.as_tensor(-bias_c @ matrix))
    assert align_sessions(sessions, D)[1].source == "file"


def test_file_matrix_of_the_wrong_shape_is_refused_naming_the_key():
    sessions, _ = _sessions()
    sessions[0].extra["alignment_matrix_cxf"] = np.zeros((7, D + 1))
    with pytest.raises(DataError, match=r"alignment_matrix_cxf has shape \(7, 4\)"):
        align_sessions(sessions, D)


def test_poisson_read_out_starts_at_the_log_rate_slope():
    """Read-out weights are the data-unit map divided by d rate / d log-rate = the channel mean."""
    sessions, _ = _sessions()
    structure = _structure((7, 5, 9), fac_dim=4)
    net = LFADSNetwork(structure, n_workers=1)
    means = [
        torch.as_tensor(s.recon["train"].reshape(-1, s.dims.recon_data_dim).mean(0))
        for s in sessions
    ]
    for i, m in enumerate(means):
        net.init_readout_bias(i, m)
    aligns = align_sessions(sessions, D)
    apply_alignments(net, aligns, readout=True)
    for i, (a, m) in enumerate(zip(aligns, means, strict=True)):
        weight = net.readout[i].weight[0].detach()  # (F, N)
        expected = torch.as_tensor(a.readout_weight, dtype=torch.float32) / m
        torch.testing.assert_close(weight[:D], expected, rtol=1e-3, atol=1e-5)
        assert torch.all(weight[D:] == 0)  # factors beyond the shared space start unused


def test_one_session_is_left_alone_unless_it_is_new():
    sessions, _ = _sessions(n_channels=(7,))
    net = LFADSNetwork(_structure((7,)))
    before = net.readin[0].weight.detach().clone()
    align_network(net, sessions)
    assert torch.equal(net.readin[0].weight, before)
    align_network(net, sessions, new_session=True)
    assert not torch.equal(net.readin[0].weight, before)
