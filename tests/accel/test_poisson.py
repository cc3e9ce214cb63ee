"""The C++ Poisson reconstruction loss against the generic path (`masked_mean_nll` of
`Poisson.log_likelihood`): values, gradients, and where it steps aside."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import CPP, needs_cpp

from autolfads.accel.poisson import fused_poisson_recon
from autolfads.model.observations import MAX_LOG, Gaussian, Poisson
from autolfads.model.ops import REFERENCE
from autolfads.train.augment import PreparedBatch
from autolfads.train.objective import masked_mean_nll

needs_kernels = needs_cpp

K, B, T, N = 3, 4, 50, 45  # K * B * T * N spans several of the kernel's blocks of 8192


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _case(
    grad_mask: bool, per_worker_mask: bool, sbtt: bool, seed: int = 0
) -> tuple[torch.Tensor, PreparedBatch]:
    """Log-rates (K, B, T, N, 1) with clamped entries (above, and exactly at, MAX_LOG) and a batch."""
    g = _gen(seed)
    params = 1.5 * torch.randn(K, B, T, N, 1, generator=g) - 0.5
    params[0, 0, 0, :3, 0] = torch.tensor([MAX_LOG + 3.0, MAX_LOG, 25.0])
    target = torch.poisson(torch.full((B, T, N), 2.0), generator=g)
    mask_shape = (K if per_worker_mask else 1, B, T, N)
    loss_mask = torch.ones(mask_shape)
    if sbtt:  # unobserved entries, one worker with nothing observed at all
        loss_mask = (torch.rand(mask_shape, generator=g) > 0.3).float()
        loss_mask[0, 0, 0, 1] = 0.0
        if per_worker_mask:
            loss_mask[2] = 0.0
    gm = torch.rand(K, B, T, N, generator=g) < 0.4 if grad_mask else None
    x = torch.zeros(K, B, T, N)
    return params, PreparedBatch(x, target, loss_mask, gm, None)


def _recon_and_grad(recon_fn, params: torch.Tensor, probe: torch.Tensor):
    leaf = params.detach().clone().requires_grad_()
    recon = recon_fn(leaf)
    (recon * probe).sum().backward()
    return recon.detach(), leaf.grad[..., 0]


def _generic(batch: PreparedBatch):
    return lambda p: masked_mean_nll(-Poisson(K, N).log_likelihood(batch.target, p), batch)


@needs_kernels
@pytest.mark.parametrize("grad_mask", [False, True])
@pytest.mark.parametrize(("per_worker_mask", "sbtt"), [(False, False), (False, True), (True, True)])
def test_fused_poisson_loss_matches_the_generic_path(grad_mask, per_worker_mask, sbtt):
    params, batch = _case(grad_mask, per_worker_mask, sbtt)
    probe = torch.tensor([1.0, -2.0, 0.5])  # a different incoming gradient per worker
    recon, grad = _recon_and_grad(
        lambda p: fused_poisson_recon(Poisson(K, N), p, batch), params, probe
    )
    ref, ref_grad = _recon_and_grad(_generic(batch), params, probe)
    torch.testing.assert_close(recon, ref, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-9)
    assert (grad[0, 0, 0, 0] == 0).all() and (grad[0, 0, 0, 2] == 0).all()  # clamped: no gradient
    assert bool(ref_grad.ne(0).any())
    if grad_mask:
        assert (grad[~batch.grad_mask] == 0).all()
    if sbtt:
        assert (grad * (batch.loss_mask == 0) == 0).all()
    if per_worker_mask and sbtt:  # nothing observed: 0, not NaN, and no gradient
        assert recon[2] == 0 and (grad[2] == 0).all()


@needs_kernels
def test_fused_poisson_loss_is_accurate_against_float64():
    params, batch = _case(grad_mask=True, per_worker_mask=False, sbtt=True, seed=1)
    params[0, 0, 0, :3] = 0.0  # without the huge clamped rates, the float32 error is visible
    probe = torch.ones(K)
    recon, grad = _recon_and_grad(
        lambda p: fused_poisson_recon(Poisson(K, N), p, batch), params, probe
    )
    batch64 = dataclasses.replace(
        batch, target=batch.target.double(), loss_mask=batch.loss_mask.double()
    )
    ref, ref_grad = _recon_and_grad(_generic(batch64), params.double(), probe.double())
    torch.testing.assert_close(recon.double(), ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-10)


@needs_kernels
def test_fused_poisson_loss_is_used_for_float32_poisson_only():
    params, batch = _case(grad_mask=True, per_worker_mask=False, sbtt=False)
    recon = fused_poisson_recon(Poisson(K, N), params.requires_grad_(), batch)
    assert recon is not None and "PoissonRecon" in type(recon.grad_fn).__name__
    batch64 = dataclasses.replace(
        batch, target=batch.target.double(), loss_mask=batch.loss_mask.double()
    )
    assert fused_poisson_recon(Poisson(K, N), params.double(), batch64) is None
    assert fused_poisson_recon(Gaussian(K, N), params.expand(*params.shape[:-1], 2), batch) is None
    sv = dataclasses.replace(batch, sv_mask=torch.zeros(B, T, N))
    assert fused_poisson_recon(Poisson(K, N), params, sv) is None
    per_worker_target = dataclasses.replace(batch, target=batch.target.expand(K, B, T, N))
    assert fused_poisson_recon(Poisson(K, N), params, per_worker_target) is None


@needs_kernels
def test_the_cpp_ops_take_the_loss_and_the_reference_leaves_it_to_the_generic_path():
    params, batch = _case(grad_mask=True, per_worker_mask=False, sbtt=True)
    assert REFERENCE.poisson_recon(Poisson(K, N), params, batch) is None
    assert CPP.poisson_recon(Poisson(K, N), params, batch) is not None
