"""The Poisson reconstruction loss of a training step in one C++ pass (float32 on CPU).

`fused_poisson_recon` gives the same (K,) masked mean NLL as
`masked_mean_nll(-Poisson.log_likelihood(target, params), batch)`, to float32 rounding, with the
same gradient; it returns None where it does not apply (another observation model, sample
validation, another dtype or device) and the caller runs the generic path.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from autolfads.accel.loader import load_kernels
from autolfads.model.observations import MAX_LOG, ObservationModel, Poisson
from autolfads.model.ops import LossBatch

__all__ = ["fused_poisson_recon"]


class _PoissonRecon(torch.autograd.Function):
    """(K,) masked mean Poisson NLL of log-rates (K, B, T, N, 1); the gradient is written by the
    forward pass into a buffer and scaled per worker in backward."""

    @staticmethod
    def forward(ctx, params, target, lgy, loss_mask, grad_mask, kernels: ModuleType):
        buf = torch.empty_like(params) if ctx.needs_input_grad[0] else None
        sums, counts = kernels.poisson_nll(
            params, target, lgy, loss_mask, grad_mask, buf, None, MAX_LOG
        )
        counts = counts.clamp_min(1.0)
        ctx.save_for_backward(buf, counts)
        return sums / counts

    @staticmethod
    def backward(ctx, grad_recon):
        buf, counts = ctx.saved_tensors
        scale = grad_recon / counts  # (K,)
        grad = buf * scale.view(-1, *([1] * (buf.dim() - 1)))
        return grad, None, None, None, None, None


def _applies(obs: ObservationModel, params: Tensor, batch: LossBatch) -> bool:
    """True when the fused loss computes what the generic path would for this batch."""
    if type(obs) is not Poisson or batch.sv_mask is not None or params.shape[-1] != 1:
        return False
    k, *grid, _ = params.shape  # grid: (B, T, N)
    tensors = [batch.target, batch.loss_mask]
    if batch.grad_mask is not None:
        if batch.grad_mask.dtype != torch.bool or batch.grad_mask.shape != (k, *grid):
            return False
        tensors.append(batch.grad_mask)
    if any(t.device != params.device for t in tensors) or batch.target.requires_grad:
        return False
    mask = batch.loss_mask
    return (
        batch.target.shape == tuple(grid)
        and batch.target.dtype == mask.dtype == params.dtype
        and mask.dim() == 4
        and mask.shape[0] in (1, k)
        and mask.shape[1:] == tuple(grid)
    )


def fused_poisson_recon(obs: ObservationModel, params: Tensor, batch: LossBatch) -> Tensor | None:
    """(K,) masked mean Poisson NLL of raw params (K, B, T, N, 1) in C++, or None if it does not
    apply (then use `masked_mean_nll` on `obs.log_likelihood`)."""
    if params.dtype != torch.float32 or params.device.type != "cpu":
        return None
    kernels = load_kernels()
    if kernels is None or not _applies(obs, params, batch):
        return None
    target = batch.target.contiguous()
    lgy = torch.lgamma(target + 1.0)  # (B, T, N), once for all workers
    grad_mask = batch.grad_mask.contiguous() if batch.grad_mask is not None else None
    return _PoissonRecon.apply(
        params.contiguous(), target, lgy, batch.loss_mask.contiguous(), grad_mask, kernels
    )
