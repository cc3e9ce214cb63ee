"""prepare_batch: unobserved entries (SBTT), coordinated dropout and sample validation, checked on the
encoder input, the masks, and the gradient that the reconstruction loss sends to the read-out."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import CPP, needs_cpp, poisson_counts, tiny_structure, torch_threads
from torch import distributions as D

from autolfads.data.tensors import encoder_input
from autolfads.model.lfads import LFADSNetwork
from autolfads.model.observations import Poisson
from autolfads.train.augment import coordinated_dropout, prepare_batch
from autolfads.train.objective import lfads_loss, masked_mean_nll

B, T_ENC, N_ENC = 6, 8, 5


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


T_REC, N_REC = 10, 7  # two forward-prediction steps, two held-out channels


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(seed: int = 0, nan_frac: float = 0.0):
    """Positive counts (so a zero at the input means 'dropped'), encod = recon's first block."""
    recon = poisson_counts((B, T_REC, N_REC), rate=2.0, seed=seed) + 1.0
    if nan_frac:
        nan = torch.rand(recon.shape, generator=_gen(seed + 100)) < nan_frac
        recon[nan] = float("nan")
    encod = recon[:, :T_ENC, :N_ENC].clone()
    return encod, recon


def _encoder_visible() -> torch.Tensor:
    """(T_REC, N_REC) bool: True on the entries the encoder sees."""
    visible = torch.zeros(T_REC, N_REC, dtype=torch.bool)
    visible[:T_ENC, :N_ENC] = True
    return visible


def _recon_grad(batch, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) masked mean Poisson NLL for random log-rates, and its gradient w.r.t. the log-rates."""
    k = batch.encod_input.shape[0]
    params = (0.5 * torch.randn(k, B, T_REC, N_REC, 1, generator=_gen(seed))).requires_grad_()
    nll = -Poisson(k, N_REC).log_likelihood(batch.target, params)
    recon = masked_mean_nll(nll, batch)
    recon.sum().backward()
    return recon.detach(), params.grad[..., 0]


# ---------------------------------------------------------------- plain, SBTT


def test_plain_batch_passes_data_through():
    encod, recon = _data()
    batch = prepare_batch(encod, recon, 3)
    assert batch.encod_input.shape == (3, B, T_ENC, N_ENC)
    for k in range(3):
        assert torch.equal(batch.encod_input[k], encod)
    assert torch.equal(batch.target, recon)
    assert torch.equal(batch.loss_mask, torch.ones(1, B, T_REC, N_REC))
    assert batch.grad_mask is None and batch.sv_mask is None


def test_nan_entries_are_zero_at_the_input_and_masked_out_of_the_loss():
    encod, recon = _data(nan_frac=0.3)
    batch = prepare_batch(encod, recon, 2, placeholder=0.5)
    nan_in, nan_out = torch.isnan(encod), torch.isnan(recon)
    assert nan_in.any() and nan_out.any()
    assert torch.isfinite(batch.encod_input).all()
    assert (batch.encod_input[:, nan_in] == 0).all()
    assert torch.equal(batch.encod_input[0][~nan_in], encod[~nan_in])
    assert (batch.target[nan_out] == 0.5).all()
    assert torch.equal(batch.loss_mask[0], (~nan_out).float())


def test_sbtt_loss_is_the_mean_over_observed_entries_only():
    encod, recon = _data(nan_frac=0.3)
    batch = prepare_batch(encod, recon, 2)
    loss, grad = _recon_grad(batch)
    log_rate = 0.5 * torch.randn(2, B, T_REC, N_REC, 1, generator=_gen(1))[..., 0]
    observed = ~torch.isnan(recon)
    oracle = -D.Poisson(log_rate.exp()).log_prob(torch.nan_to_num(recon))  # (K, B, T, N)
    expected = torch.stack([oracle[k][observed].mean() for k in range(2)])
    torch.testing.assert_close(loss, expected)
    assert (grad[:, ~observed] == 0).all()  # exactly zero, not merely small
    assert (grad[:, observed] != 0).all()


def test_sbtt_loss_does_not_depend_on_what_fills_the_unobserved_entries():
    encod, recon = _data(nan_frac=0.3)
    nan_out = torch.isnan(recon)
    loss_a, grad_a = _recon_grad(prepare_batch(encod, recon, 2, placeholder=0.0))
    loss_b, grad_b = _recon_grad(prepare_batch(encod, recon, 2, placeholder=7.0))
    batch_c = prepare_batch(encod, recon, 2)
    junk = batch_c.target.clone()
    junk[nan_out] = torch.rand(int(nan_out.sum()), generator=_gen(2)) * 50
    loss_c, grad_c = _recon_grad(dataclasses.replace(batch_c, target=junk))
    for loss, grad in ((loss_b, grad_b), (loss_c, grad_c)):
        torch.testing.assert_close(loss, loss_a, rtol=0, atol=0)
        torch.testing.assert_close(grad, grad_a, rtol=0, atol=0)


# ---------------------------------------------------------------- coordinated dropout


def test_coordinated_dropout_zeroes_and_rescales_the_input_per_worker():
    torch.manual_seed(0)
    encod = poisson_counts((40, T_ENC, N_ENC), seed=3) + 1
    recon = torch.cat([encod, torch.ones(40, T_ENC, N_REC - N_ENC)], -1)
    recon = torch.cat([recon, torch.ones(40, T_REC - T_ENC, N_REC)], 1)
    rate = torch.tensor([0.3, 0.0, 0.7])
    batch = prepare_batch(encod, recon, 3, cd_rate=rate)
    x, gm = batch.encod_input, batch.grad_mask
    assert gm is not None and gm.shape == (3, 40, T_REC, N_REC) and gm.dtype == torch.bool
    for k in range(3):
        dropped = x[k] == 0
        if rate[k] == 0:
            assert torch.equal(x[k], encod)
            assert gm[k].all()
            continue
        assert dropped.float().mean().item() == pytest.approx(rate[k].item(), abs=0.04)
        torch.testing.assert_close(x[k][~dropped], encod[~dropped] / (1 - rate[k]))
        assert torch.equal(gm[k, :, :T_ENC, :N_ENC], dropped)
        assert gm[k, :, T_ENC:, :].all() and gm[k, :, :, N_ENC:].all()


def test_coordinated_dropout_gradient_only_at_dropped_or_unseen_entries():
    torch.manual_seed(1)
    encod, recon = _data(seed=4)
    rate = torch.tensor([0.4, 0.0])
    batch = prepare_batch(encod, recon, 2, cd_rate=rate)
    loss, grad = _recon_grad(batch)
    dropped = batch.encod_input[0] == 0  # (B, T_enc, N_enc)
    assert dropped.any() and (~dropped).any()
    visible = _encoder_visible().expand(B, -1, -1)
    expected = ~visible.clone()
    expected[:, :T_ENC, :N_ENC] = dropped
    assert torch.equal(grad[0] != 0, expected)
    assert (grad[1] != 0).all()  # cd_rate 0: gradient everywhere for that worker
    # the loss value is unchanged by the gradient mask
    loss_plain, _ = _recon_grad(dataclasses.replace(batch, grad_mask=None))
    torch.testing.assert_close(loss, loss_plain, rtol=0, atol=0)


def test_coordinated_dropout_composes_with_sbtt():
    torch.manual_seed(2)
    encod, recon = _data(seed=5, nan_frac=0.25)
    batch = prepare_batch(encod, recon, 1, cd_rate=torch.tensor([0.5]))
    nan_in, observed = torch.isnan(encod), ~torch.isnan(recon)
    assert (batch.encod_input[0][nan_in] == 0).all()
    _, grad = _recon_grad(batch)
    dropped = (batch.encod_input[0] == 0) & ~nan_in
    allowed = ~_encoder_visible().expand(B, -1, -1).clone()
    allowed[:, :T_ENC, :N_ENC] = dropped
    assert torch.equal(grad[0] != 0, allowed & observed)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cd_rate": None},
        {"cd_rate": torch.zeros(2)},
        {"cd_rate": torch.tensor([0.5, 0.5]), "training": False},
    ],
)
def test_coordinated_dropout_off(kwargs):
    encod, recon = _data()
    batch = prepare_batch(encod, recon, 2, **kwargs)
    assert batch.grad_mask is None
    assert torch.equal(batch.encod_input, encod.expand(2, -1, -1, -1))


def test_coordinated_dropout_through_the_network_masks_readout_gradient():
    torch.manual_seed(3)
    s = tiny_structure(
        encod_data_dims=(N_ENC,), recon_data_dims=(N_REC,), encod_seq_len=T_ENC, recon_seq_len=T_REC
    )
    net = LFADSNetwork(s, 2).eval()
    encod, recon = _data(seed=6)
    batch = prepare_batch(encod, recon, 2, cd_rate=torch.tensor([0.3, 0.0]))
    out = net(batch.encod_input, sample=False)
    out.params.retain_grad()
    hps = {"kl_ic_scale": torch.ones(2), "kl_co_scale": torch.ones(2)}
    loss, parts = lfads_loss(net, out, batch, 0, hps, ramp=1.0, loss_scale=1.0)
    loss.sum().backward()
    grad = out.params.grad[..., 0]
    expected = ~_encoder_visible().expand(B, -1, -1).clone()
    expected[:, :T_ENC, :N_ENC] = batch.encod_input[0] == 0
    assert torch.equal(grad[0] != 0, expected)
    assert (grad[1] != 0).all()
    nll = -net.observation_model(0).log_likelihood(batch.target, out.params.detach())
    torch.testing.assert_close(parts["recon"], nll.mean(dim=(1, 2, 3)))


# ---------------------------------------------------------------- sample validation


def test_sample_validation_entries_are_hidden_and_left_out_of_the_loss():
    encod, recon = _data(seed=7, nan_frac=0.2)
    sv = torch.rand(encod.shape, generator=_gen(8)) < 0.3
    batch = prepare_batch(encod, recon, 2, sv_mask=sv)
    assert (batch.encod_input[:, sv] == 0).all()
    observed = ~torch.isnan(recon)
    sv_full = torch.zeros(B, T_REC, N_REC, dtype=torch.bool)
    sv_full[:, :T_ENC, :N_ENC] = sv
    assert torch.equal(batch.sv_mask, (sv_full & observed).float())
    assert torch.equal(batch.loss_mask[0], (observed & ~sv_full).float())
    _, grad = _recon_grad(batch)
    assert (grad[:, sv_full] == 0).all()


def test_sample_validation_with_coordinated_dropout_keeps_sv_hidden():
    torch.manual_seed(4)
    encod, recon = _data(seed=9)
    sv = torch.rand(encod.shape, generator=_gen(10)) < 0.3
    batch = prepare_batch(encod, recon, 2, cd_rate=torch.tensor([0.5, 0.2]), sv_mask=sv)
    assert (batch.encod_input[:, sv] == 0).all()
    _, grad = _recon_grad(batch)
    sv_full = torch.zeros(B, T_REC, N_REC, dtype=torch.bool)
    sv_full[:, :T_ENC, :N_ENC] = sv
    assert (grad[:, sv_full] == 0).all()


# ---------------------------------------------------------------- randomness, encoder_input


def test_coordinated_dropout_masks_come_from_the_given_generator():
    encod, recon = _data(seed=11)
    rate = torch.tensor([0.5, 0.3])
    global_state = torch.get_rng_state()
    a = prepare_batch(encod, recon, 2, cd_rate=rate, generator=_gen(5))
    b = prepare_batch(encod, recon, 2, cd_rate=rate, generator=_gen(5))
    c = prepare_batch(encod, recon, 2, cd_rate=rate, generator=_gen(6))
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is not used
    assert torch.equal(a.encod_input, b.encod_input) and torch.equal(a.grad_mask, b.grad_mask)
    assert not torch.equal(a.grad_mask, c.grad_mask)


def test_encoder_input_hides_nan_and_hidden_entries():
    encod, _ = _data(seed=12, nan_frac=0.2)
    hidden = torch.rand(encod.shape, generator=_gen(13)) < 0.2
    x = encoder_input(encod, 3, hidden)
    assert x.shape == (3, B, T_ENC, N_ENC)
    shown = ~torch.isnan(encod) & ~hidden
    for k in range(3):
        assert torch.equal(x[k][shown], encod[shown])
        assert (x[k][~shown] == 0).all()
    assert torch.equal(encoder_input(encod, 1)[0], torch.nan_to_num(encod, nan=0.0))


# ---------------------------------------------------------------- the C++ coordinated dropout

needs_kernels = needs_cpp


@needs_kernels
@pytest.mark.parametrize("recon_shape", [(B, T_ENC, N_ENC), (B, T_REC, N_REC)])
def test_coordinated_dropout_kernel_matches_the_pytorch_formula(recon_shape):
    encod, _ = _data(seed=14, nan_frac=0.1)
    rate = torch.tensor([0.3, 0.0, 0.7, 1.0])  # usual, no CD, most dropped, all dropped
    x = encoder_input(encod, 4)  # a broadcast view: the C++ pass
    x_cd, gm = coordinated_dropout(x, rate, torch.Size(recon_shape), _gen(3), CPP)
    # the same seed through the PyTorch formula (CPP.uniform gives the kernels' numbers)
    u = CPP.uniform(x.contiguous(), _gen(3))
    keep = u >= rate.view(-1, 1, 1, 1)
    expected = x * keep / (1.0 - rate).clamp_min(1e-6).view(-1, 1, 1, 1)
    dropped = torch.ones(4, *recon_shape, dtype=torch.bool)
    dropped[:, :, :T_ENC, :N_ENC] = ~keep | (rate <= 0).view(-1, 1, 1, 1)
    assert torch.equal(x_cd, expected) and torch.equal(gm, dropped)
    assert torch.equal(x_cd[1], x[1]) and gm[1].all() and (x_cd[3] == 0).all()
    # a materialised input takes the PyTorch path of the same function: the same result
    x_torch, gm_torch = coordinated_dropout(
        x.contiguous(), rate, torch.Size(recon_shape), _gen(3), CPP
    )
    assert torch.equal(x_torch, x_cd) and torch.equal(gm_torch, gm)
