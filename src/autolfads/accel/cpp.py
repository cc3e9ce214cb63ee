"""`CppOps`: the reference operations of `autolfads.model.ops` taken over by the C++ kernels.

Float32 on the CPU only (`autolfads.accel.choose_ops` checks). Random numbers: one seed drawn from
the given torch generator, then a counter-based hash in C++ (in parallel; torch's CPU generator is
sequential) - same distributions as the reference's, other numbers. The recurrences store their
states time-major, (K, T, B, .), and return (K, B, T, .) views of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolfads.accel import gru, loop
from autolfads.accel.loader import load_kernels
from autolfads.accel.poisson import fused_poisson_recon
from autolfads.model.ops import LossBatch, Ops

__all__ = ["CppOps", "draw_seed"]


def draw_seed(generator: torch.Generator | None = None) -> int:
    """One seed for the C++ kernels' counter-based random numbers, drawn from `generator`."""
    return int(torch.randint(2**62, (1,), generator=generator))


def _rate(rate: Tensor, like: Tensor) -> Tensor:
    return rate.detach().to(like.dtype).contiguous()


class CppOps(Ops):
    """The C++ kernels of csrc/ behind the `Ops` interface."""

    name = "cpp"

    def uniform(self, like: Tensor, generator=None) -> Tensor:
        out = torch.empty(like.shape, dtype=like.dtype)
        load_kernels().uniform_fill(out, draw_seed(generator))
        return out

    def dropout_mask(self, like: Tensor, rate: Tensor, generator=None) -> Tensor:
        # keeps where `uniform` (same seed) is below 1 - rate_k, one pass
        out = torch.empty(like.shape, dtype=like.dtype)
        load_kernels().dropout_mask(out, _rate(rate, like), draw_seed(generator))
        return out

    def state_masks(self, shape, like: Tensor, rate: Tensor, generator=None) -> Tensor:
        k, b, t, n = shape  # stored time-major, as the loop reads them
        return self.dropout_mask(like.new_empty(k, t, b, n), rate, generator).transpose(1, 2)

    def step_noise(self, shape, like: Tensor, generator=None) -> Tensor:
        k, b, t, n = shape  # drawn time-major, as the loop reads them
        return self.normal((k, t, b, n), like, generator).transpose(1, 2)

    def encoders(self, x, ic_encoder, ci_encoder):
        cells = gru.cell_inputs(x)  # read by both encoders

        def run(encoder, final_only: bool) -> tuple[Tensor, Tensor]:
            k, b = x.shape[:2]
            cell = encoder.cell
            return gru.bidirectional_sequence(
                cells,
                torch.cat([cell.input_weight, cell.bias.unsqueeze(1)], dim=1),
                encoder.h0.unsqueeze(1).expand(2 * k, b, encoder.hidden_size),
                cell.gate_weight,
                cell.candidate_weight,
                cell.clip,
                final_only=final_only,
            )

        ic_fwd, ic_bwd = run(ic_encoder, True)
        if ci_encoder is None:
            return ic_fwd, ic_bwd, None, None
        return (ic_fwd, ic_bwd, *run(ci_encoder, False))

    def lagged_dropout(self, fwd, bwd, lag, total_steps, rate, training, generator=None):
        # one pass each way: no zero-filled copy, no stored mask (the backward makes it again
        # from its seed); the mask is `dropout_mask` of the (K, B, T_rec, 2H) result, same seed
        seed = draw_seed(generator) if training else 0
        args = (fwd, bwd, int(lag), int(total_steps), _rate(rate, fwd), seed, training)
        return _LaggedDropout.apply(*args)

    def generator(self, cell, gen_x: Tensor, gen_init: Tensor) -> Tensor:
        return gru.gru_sequence(gen_x, gen_init, cell.gate_weight, cell.candidate_weight, cell.clip)

    def controlled_generator(self, *args, **kwargs):
        return loop.controlled_generator(*args, **kwargs)

    def poisson_recon(self, obs, params: Tensor, batch: LossBatch) -> Tensor | None:
        return fused_poisson_recon(obs, params, batch)

    def coordinated_dropout(self, x: Tensor, cd_rate: Tensor, recon_shape, generator=None):
        if not (x.shape[0] == 1 or x.stride(0) == 0):  # one pass when every worker reads x[0]
            return None
        t_rec, n_rec = recon_shape[-2], recon_shape[-1]
        rate, seed = _rate(cd_rate, x), draw_seed(generator)
        return load_kernels().cd_masks(x[0].contiguous(), rate, seed, t_rec, n_rec)

    def adam_step(self, p, grad, exp_avg, exp_avg_sq, coef, beta1, beta2, eps) -> bool:
        if not (p.is_contiguous() and grad.is_contiguous()):
            return False
        load_kernels().adam_step(p, grad, exp_avg, exp_avg_sq, coef, beta1, beta2, eps)
        return True


class _LaggedDropout(torch.autograd.Function):
    """`Ops.lagged_dropout` in C++: the mask is made again from the seed in the backward."""

    @staticmethod
    def forward(ctx, fwd, bwd, lag, total_steps, rate, seed, training):  # type: ignore[override]
        k, b, _, h = fwd.shape
        out = fwd.new_empty(k, total_steps, b, 2 * h)
        load_kernels().lag_dropout_forward(
            gru.last_dim_contiguous(fwd),
            gru.last_dim_contiguous(bwd),
            lag,
            rate,
            seed,
            training,
            out,
        )
        ctx.lag, ctx.seed, ctx.training = lag, seed, training
        ctx.enc_shape = fwd.shape
        ctx.save_for_backward(rate)
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, g_out):  # type: ignore[override]
        (rate,) = ctx.saved_tensors
        g_fwd = g_out.new_empty(ctx.enc_shape)
        g_bwd = g_out.new_empty(ctx.enc_shape)
        load_kernels().lag_dropout_backward(
            gru.last_dim_contiguous(g_out), ctx.lag, rate, ctx.seed, ctx.training, g_fwd, g_bwd
        )
        return g_fwd, g_bwd, None, None, None, None, None
