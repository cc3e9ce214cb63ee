"""The LFADS training objective, per worker.

loss_k = loss_scale * ( recon_k + ramp * (kl_ic_scale_k KL_ic + kl_co_scale_k KL_co)
                        + ramp * sum_g l2_g_scale_k ||W_g||^2 / |W_g| + l2_gamma_scale * R_obs )

recon: mean negative log-likelihood per observed element. KL_ic: analytic, summed over ic_dim, mean over
trials. KL_co: one-sample estimate against the AR(1) prior, summed over time and U, mean over trials.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from autolfads.model.lfads import LFADSNetwork, LFADSOutput
from autolfads.train.augment import PreparedBatch

__all__ = ["ramp_factor", "masked_mean_nll", "l2_penalty", "lfads_loss"]


def short_warmup_note(max_epochs: int, warmup_end: int) -> str | None:
    """One line when training ends before the KL/L2 warm-up does (epoch `warmup_end`), else None."""
    if max_epochs >= warmup_end:
        return None
    return (
        f"note: trainer.max_epochs={max_epochs} ends before the KL/L2 warm-up (epoch "
        f"{warmup_end} = trainer.ramp_start + trainer.ramp_epochs): the penalties never reach "
        "their full weight"
    )


def ramp_factor(epoch: int, ramp_epochs: int, ramp_start: int = 0) -> float:
    """KL/L2 warm-up weight in [0, 1]: 0 before `ramp_start`, rising linearly over `ramp_epochs`."""
    if ramp_epochs <= 0:
        return 1.0 if epoch >= ramp_start else 0.0
    return float(min(max((epoch - ramp_start + 1) / ramp_epochs, 0.0), 1.0))


def masked_mean_nll(nll: Tensor, batch: PreparedBatch) -> Tensor:
    """Mean NLL over the counted entries, gradient only where `grad_mask` allows.

    Args:
        nll: (K, B, T, N) elementwise negative log-likelihood.
    Returns:
        (K,) per-worker mean.
    """
    if batch.grad_mask is not None:
        nll = torch.where(batch.grad_mask, nll, nll.detach())
    mask = batch.loss_mask
    total = (nll * mask).flatten(1).sum(1)
    count = mask.flatten(1).sum(1).clamp_min(1.0)
    return total / count


def l2_penalty(net: LFADSNetwork, hps: Mapping[str, Tensor]) -> Tensor:
    """Sum over groups of l2_<group>_scale * mean squared recurrent weight, per worker (K,)."""
    k = net.n_workers
    total = torch.zeros(k, device=net.factor_readout.weight.device)
    for group, weights in net.l2_groups().items():
        scale = hps.get(f"l2_{group}_scale")
        if scale is None:
            continue
        ssq = sum(_worker_sumsq(w, k) for w in weights)
        numel = sum(w[0].numel() * (w.shape[0] // k) for w in weights)
        total = total + scale * ssq / numel
    return total


def _worker_sumsq(weight: Tensor, k: int) -> Tensor:
    """Sum of squares per worker of a (K*m, ...) weight (m directions per worker)."""
    return weight.reshape(k, -1).pow(2).sum(1)


def lfads_loss(
    net: LFADSNetwork,
    out: LFADSOutput,
    batch: PreparedBatch,
    session: int,
    hps: Mapping[str, Tensor],
    ramp: float,
    loss_scale: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-worker loss (K,) and its parts (each (K,), detached) for logging."""
    obs = net.observation_model(session)
    # in C++ for Poisson on float32 CPU without sample validation; None otherwise
    recon = net.ops.poisson_recon(obs, out.params, batch)
    if recon is None:
        nll = -obs.log_likelihood(batch.target, out.params)  # (K, B, T, N)
        recon = masked_mean_nll(nll, batch)
    kl_ic = net.ic_prior.kl(out.ic_mean, out.ic_var).mean(1)
    if net.structure.use_controller:
        kl_co = net.co_prior.kl(out.co_sample, out.co_mean, out.co_var).mean(1)
    else:
        kl_co = torch.zeros_like(kl_ic)
    l2 = l2_penalty(net, hps)
    reg = obs.regularizer()
    kl = hps["kl_ic_scale"] * kl_ic + hps["kl_co_scale"] * kl_co
    l2_gamma = hps.get("l2_gamma_scale")
    extra = l2_gamma * reg if l2_gamma is not None else 0.0
    loss = loss_scale * (recon + ramp * (kl + l2) + extra)
    parts = {"loss": loss / loss_scale, "recon": recon, "kl/ic": kl_ic, "kl/co": kl_co, "l2": l2}
    if batch.sv_mask is not None:  # (the fused loss does not apply: nll is set)
        sv = batch.sv_mask.unsqueeze(0)
        parts["recon_sv"] = (nll * sv).flatten(1).sum(1) / sv.flatten(1).sum(1).clamp_min(1.0)
    return loss, {k: v.detach() for k, v in parts.items()}
