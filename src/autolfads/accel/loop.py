"""The controller-generator recurrence (`autolfads.model.controller`) in C++, as one autograd node.

Autograd would record ~30 nodes per step and replay them one by one; here the forward loop
(`controlled_forward` of csrc/gru_loops.cpp) records nothing: it writes time-major tapes
(`GRUTape`) and projects each step's controller input itself, and the backward loop
(`controlled_backward`) runs the chain rule of each step by hand, adding the step's share of every
weight gradient while its rows are in cache. Same values and gradients as the reference to float32
rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolfads.accel.gru import GRUTape, last_dim_contiguous
from autolfads.accel.loader import load_kernels
from autolfads.model.controller import LoopWeights

__all__ = ["controlled_generator", "project_steps"]


def _or_empty(x: Tensor | None) -> Tensor:
    """x (last dim contiguous), or an empty tensor for None: how the C++ loops are told "absent"."""
    return last_dim_contiguous(x) if x is not None else torch.empty(0)


class _ControlledGenerator(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, con_x, gen_x, gen_init, con_h0, masks, noise, clip, samples, con_w, con_b, *weights
    ):  # type: ignore[override]
        # con_w, con_b: the controller's input weights when the C++ loop projects con_x itself
        fb, con_gate, con_cand, co_w, co_b, co_to_gen, gen_gate, gen_cand = weights
        steps, n_u = con_x.shape[2], co_w.shape[-1] // 2
        k, b, _ = gen_init.shape
        ctx.gen_x_shared = gen_x.shape[1:3] == (1, 1)  # one input row for all trials and steps
        gen_x = gen_x.expand(k, b, steps, gen_x.shape[-1])
        keep = any(ctx.needs_input_grad)  # record the per-step values for a backward
        con, gen = GRUTape(con_h0, steps, clip, keep), GRUTape(gen_init, steps, clip, keep)
        raw = gen_init.new_empty(k, steps, b, 2 * n_u)  # tapes are (K, T, B, .), as GRUTape's
        us = gen_init.new_empty(k, steps, b, n_u)
        std = gen_init.new_empty(k, steps if keep else 1, b, n_u) if noise is not None else None
        if masks is not None:  # dropped-out generator states fed back: dropped[t] = g_{t-1} m_t
            # (masks only exist in training; inference feeds the states themselves)
            dropped = gen_init.new_empty(k, steps + 1, b, gen_init.shape[-1])
            torch.mul(gen_init, masks[:, :, 0], out=dropped[:, 0])
        else:
            dropped = gen.states
        # the whole loop in C++
        load_kernels().controlled_forward(
            last_dim_contiguous(con_x),
            _or_empty(con_w),
            _or_empty(con_b),
            samples,
            last_dim_contiguous(gen_x),
            _or_empty(masks),
            _or_empty(noise),
            clip,
            list(weights),
            con.buffers(),
            gen.buffers(),
            raw,
            us,
            _or_empty(std),
            dropped if masks is not None else _or_empty(None),
        )
        ctx.tapes = (con, gen, raw, us, std, dropped)
        ctx.projects = con_w is not None
        ctx.save_for_backward(
            masks if masks is not None else torch.empty(0),
            noise if noise is not None else torch.empty(0),
            *((con_x, con_w, con_b) if ctx.projects else ()),
            *weights,
        )
        ctx.has_masks = masks is not None
        ctx.set_materialize_grads(False)  # unused outputs send None, not zeros

        def batch_major(x: Tensor) -> Tensor:
            return x.transpose(1, 2)

        return (
            batch_major(gen.states[:, 1:]),
            batch_major(con.states[:, 1:]),
            batch_major(raw),
            batch_major(us),
            batch_major(dropped[:, 1:]) if masks is not None else gen_init.new_empty(0),
        )

    @staticmethod
    def backward(ctx, g_gen, g_con, g_raw, g_u, g_dropped):  # type: ignore[override]
        con, gen, raw, us, std, dropped = ctx.tapes
        masks, noise, *weights = ctx.saved_tensors
        con_x = con_w = con_b = None
        if ctx.projects:
            con_x, con_w, con_b, *weights = weights
        masks = masks if ctx.has_masks else None
        noise = noise if std is not None else None  # saved as an empty tensor when absent
        k, steps, b, n_u = us.shape
        # d/d(gen_x) per row and step is needed only when gen_x is not one shared row
        g_gen_x = None if ctx.gen_x_shared else us.new_empty(k, steps, b, 3 * gen.n)
        # with the projection in the loop, d/d(con_x) is of the controller's input itself
        g_con_x = None if ctx.projects else us.new_empty(k, steps, b, 3 * con.n)
        g_con_in = None
        if ctx.projects and ctx.needs_input_grad[0]:
            g_con_in = us.new_empty(k, steps, b, con_x.shape[-1])
        # the whole loop in C++, weight gradients summed inside it
        carry_g, carry_c, *partials = load_kernels().controlled_backward(
            *(_or_empty(g) for g in (g_gen, g_dropped, g_con, g_raw, g_u)),
            _or_empty(masks),
            _or_empty(noise),
            con.clip,
            list(weights),
            con.buffers(),
            gen.buffers(),
            raw,
            us,
            _or_empty(std),
            dropped,
            _or_empty(con_x),
            _or_empty(con_w),
            _or_empty(con_b),
            _or_empty(g_gen_x),
            _or_empty(g_con_x),
            _or_empty(g_con_in),
        )
        # each a sum over the loop's row blocks
        (g_fb, g_con_gate, g_con_cand, g_co_w, g_co_b, sums, g_gen_gate, g_gen_cand) = (
            p.sum(dim=1) for p in partials[:8]
        )
        g_co_b = g_co_b.squeeze(1)
        g_con_w, g_con_b = partials[8].sum(dim=1), partials[9].sum(dim=(1, 2))
        if ctx.gen_x_shared:
            g_gen_input = sums[:, n_u].view(k, 1, 1, -1)
        else:
            g_gen_input = g_gen_x.transpose(1, 2)
        grads_w = (
            g_fb,
            g_con_gate,
            g_con_cand,
            g_co_w,
            g_co_b,
            sums[:, :n_u],
            g_gen_gate,
            g_gen_cand,
        )
        if ctx.projects:
            g_con_input = g_con_in.transpose(1, 2) if g_con_in is not None else None
            g_con_w = g_con_w if ctx.needs_input_grad[8] else None
            g_con_b = g_con_b if ctx.needs_input_grad[9] else None
        else:
            g_con_input, g_con_w, g_con_b = g_con_x.transpose(1, 2), None, None
        return (
            g_con_input,
            g_gen_input,
            carry_g,
            carry_c,
            None,
            None,
            None,
            None,
            g_con_w,
            g_con_b,
            *grads_w,
        )


def controlled_generator(
    con_x: Tensor,
    gen_x: Tensor,
    gen_init: Tensor,
    con_h0: Tensor,
    weights: LoopWeights,
    masks: Tensor | None,
    noise: Tensor | None,
    clip: float,
    samples: int = 1,
    con_projection: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`autolfads.model.controller.controlled_generator` (same arguments and results) in C++.

    A gen_x of one (K, 1, 1, 3G) row shared by all trials and steps (the bias alone) has its
    gradient summed inside the loop. (Pass that row, not an expanded view of it: slicing the row
    back out of the view would send the gradient through a full-size zero buffer.) With
    `con_projection` the loop
    projects each step's rows itself, except for posterior sampling (S > 1, no gradients), where
    the input is projected once per trial for its S samples. The results are views of time-major
    (K, T, B, .) storage.
    """
    tensors = (con_x, gen_x, gen_init, con_h0, *weights.as_tuple(), *(con_projection or ()))
    if samples > 1 and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        con_x, samples = con_x.repeat_interleave(samples, dim=1), 1  # the backward maps rows 1:1
    con_w = con_b = None
    if con_projection is not None:
        if samples > 1:  # projected once per trial, not once per sample (posterior sampling)
            con_x = project_steps(con_x, *con_projection)
        else:
            con_w, con_b = con_projection
    gen_states, con_states, co_raw, co_sample, dropped = _ControlledGenerator.apply(
        con_x,
        gen_x,
        gen_init,
        con_h0,
        masks,
        noise,
        float(clip),
        int(samples),
        con_w,
        con_b,
        *weights.as_tuple(),
    )
    dropped = dropped if masks is not None else gen_states
    return gen_states, con_states, co_raw, co_sample, dropped


def project_steps(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x W + b for every row and step: x (K, B, T, n), weight (K, n, m), bias (K, m) -> (K, B, T, m).

    Projected in x's storage order: a batch-major view of time-major storage (as the controller's
    input) gives the same view of a time-major result, without copies.
    """
    k, b, steps, n = x.shape
    if x.transpose(1, 2).is_contiguous():
        flat = x.transpose(1, 2).reshape(k, steps * b, n)
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight)
        return out.view(k, steps, b, -1).transpose(1, 2)
    out = torch.baddbmm(bias.unsqueeze(1), x.reshape(k, b * steps, n), weight)
    return out.view(k, b, steps, -1)
