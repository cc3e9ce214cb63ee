"""The controller-generator recurrence of LFADS as one autograd node with a hand-written backward.

Per step t (K workers, B trials; C controller units, G generator units, U inferred inputs):

    con_in_t = x^con_t + d_{t-1} W_fb              d_{t-1}: dropped-out generator state, W_fb (G, 3C);
                                                   x^con_t = e_t W_ci + b_ci from the encoder's e_t
    c_t      = GRU_con(con_in_t, c_{t-1})
    raw_t    = c_t W_co + b_co                    (2U): posterior mean and log-variance of u_t
    u_t      = mean_t + eps_t * exp(logvar_t / 2)  (logvar clamped to [-20, 20]; eps_t = 0: the mean)
    gen_in_t = x^gen_t + u_t W_ug                  W_ug (U, 3G)
    g_t      = GRU_gen(gen_in_t, g_{t-1})
    d_t      = g_t * m_{t+1}                       m: dropout masks (d_{-1} = g_init * m_0)

d_t also feeds the factors, so the loop returns it (the dropout of the states costs no extra pass).

Autograd would record ~30 nodes per step and replay them one by one; here the forward loop records
nothing and the backward loop runs the per-step chain rule by hand. For float32 on the CPU both
loops run whole in C++ on the same tapes (`controlled_forward` / `controlled_backward` of
`autolfads.model.fused`): the forward projects each step's controller input itself (given
`con_projection`), and the backward adds each step's share of every weight gradient while the
step's rows are in cache (no per-step input gradients are stored for a later pass). `_python_forward` / `_python_backward` are
the PyTorch path (CUDA, float64, no compiler): x^con projected before the loop, every weight
gradient one matmul over all T steps after it.
`controlled_generator_reference` is the same recurrence in plain autograd, kept as the oracle for
tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from autolfads.model.fused import kernels_for
from autolfads.model.gru_kernels import (
    GRUTape,
    gru_step_reference,
    last_dim_contiguous,
    time_sum,
)

__all__ = ["LoopWeights", "controlled_generator", "controlled_generator_reference", "project_steps"]

LOGVAR_BOUND = 20.0


@dataclass
class LoopWeights:
    """The weights the recurrence uses, each with a leading worker axis K."""

    feedback: Tensor  # (K, G, 3C) dropped generator state -> controller input
    con_gate: Tensor  # (K, C, 2C) controller recurrent weights of the reset/update gates
    con_cand: Tensor  # (K, C, C) controller recurrent weights of the candidate
    co_weight: Tensor  # (K, C, 2U) controller state -> posterior mean and log-variance of u
    co_bias: Tensor  # (K, 2U)
    co_to_gen: Tensor  # (K, U, 3G) inferred input -> generator input
    gen_gate: Tensor  # (K, G, 2G)
    gen_cand: Tensor  # (K, G, G)

    def as_tuple(self) -> tuple[Tensor, ...]:
        """The weights in declaration order."""
        return (
            self.feedback,
            self.con_gate,
            self.con_cand,
            self.co_weight,
            self.co_bias,
            self.co_to_gen,
            self.gen_gate,
            self.gen_cand,
        )


def _sample(raw: Tensor, noise: Tensor | None) -> Tensor:
    """u = mean + noise * std from raw (K, B, 2U) = [mean, log-variance]; the mean when noise is None."""
    n = raw.shape[-1] // 2
    mean = raw[..., :n]
    if noise is None:
        return mean
    std = torch.exp(0.5 * raw[..., n:].clamp(-LOGVAR_BOUND, LOGVAR_BOUND))
    return torch.addcmul(mean, noise, std)


def _or_empty(x: Tensor | None) -> Tensor:
    """x (last dim contiguous), or an empty tensor for None: how the C++ loops are told "absent"."""
    return last_dim_contiguous(x) if x is not None else torch.empty(0)


def _python_forward(con, gen, raw, us, std, dropped, con_x, gen_x, masks, noise, weights) -> None:
    """The recurrence step by step with ATen ops (the path without the C++ kernels)."""
    fb, con_gate, con_cand, co_w, co_b, co_to_gen, gen_gate, gen_cand = weights
    steps, n_u = con_x.shape[2], us.shape[-1]
    co_b = co_b.unsqueeze(1)
    for t in range(steps):
        con_in = torch.baddbmm(con_x[:, :, t], dropped[:, t], fb)
        c = con.step(t, con_in, con_gate, con_cand)
        torch.baddbmm(co_b, c, co_w, out=raw[:, t])
        if std is not None:
            slot = std[:, t if std.shape[1] == steps else 0]
            lv = torch.clamp(raw[:, t, :, n_u:], -LOGVAR_BOUND, LOGVAR_BOUND, out=slot)
            torch.addcmul(raw[:, t, :, :n_u], noise[:, :, t], lv.mul_(0.5).exp_(), out=us[:, t])
        else:
            us[:, t] = raw[:, t, :, :n_u]
        gen_in = torch.baddbmm(gen_x[:, :, t], us[:, t], co_to_gen)
        g = gen.step(t, gen_in, gen_gate, gen_cand)
        if masks is not None:
            torch.mul(g, masks[:, :, t + 1], out=dropped[:, t + 1])


def _python_backward(con, gen, raw, us, std, masks, noise, weights, grads, outs):
    """The recurrence's chain rule step by step with ATen ops; fills outs, returns the carries."""
    fb, con_gate, con_cand, co_w, co_b, co_to_gen, gen_gate, gen_cand = weights
    g_gen_x, g_con_x, g_raws = outs
    k, steps, b, n_u = us.shape
    widths = (gen.n, gen.n, con.n, 2 * n_u, n_u)  # of g_gen, g_dropped, g_con, g_raw, g_u
    g_gen, g_dropped, g_con, g_raw, g_u = (  # absent gradients are zeros here
        g if g is not None else g_gen_x.new_zeros(k, b, steps, n)
        for g, n in zip(grads, widths, strict=True)
    )
    if masks is not None:
        g_gen = g_gen + g_dropped * masks[:, :, 1:]
    else:
        g_gen = g_gen + g_dropped

    def t_(w: Tensor) -> Tensor:
        return w.transpose(1, 2)

    coef_logvar = None
    if std is not None:  # d u / d logvar = noise * std / 2 inside the clamp
        lv = raw[..., n_u:]
        in_range = (lv >= -LOGVAR_BOUND) & (lv <= LOGVAR_BOUND)
        coef_logvar = 0.5 * noise.transpose(1, 2) * std * in_range
    carry_g = g_gen.new_zeros(k, b, gen.n)
    carry_c = g_gen.new_zeros(k, b, con.n)
    for t in range(steps - 1, -1, -1):
        g_g_prev = gen.backward_step(
            t, carry_g + g_gen[:, :, t], g_gen_x[:, t], t_(gen_gate), t_(gen_cand)
        )
        grad_raw = g_raws[:, t]
        grad_u = torch.baddbmm(g_u[:, :, t], g_gen_x[:, t], t_(co_to_gen), out=grad_raw[..., :n_u])
        if coef_logvar is not None:
            torch.mul(grad_u, coef_logvar[:, t], out=grad_raw[..., n_u:])
        grad_raw += g_raw[:, :, t]
        grad_c = torch.baddbmm(g_con[:, :, t], grad_raw, t_(co_w)).add_(carry_c)
        carry_c = con.backward_step(t, grad_c, g_con_x[:, t], t_(con_gate), t_(con_cand))
        grad_d = torch.bmm(g_con_x[:, t], t_(fb))  # gradient wrt dropped[t] = g_{t-1} m_t
        if masks is not None:
            grad_d.mul_(masks[:, :, t])
        carry_g = g_g_prev.add_(grad_d)
    return carry_g, carry_c


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
        if gen.kernels is not None:  # the whole loop in C++
            gen.kernels.controlled_forward(
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
        else:
            con_x = con_x.repeat_interleave(samples, dim=1) if samples > 1 else con_x
            _python_forward(con, gen, raw, us, std, dropped, con_x, gen_x, masks, noise, weights)
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
        if gen.kernels is not None:  # the whole loop in C++, weight gradients summed inside it
            carry_g, carry_c, *partials = gen.kernels.controlled_backward(
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
        else:
            g_gen_x = g_gen_x if g_gen_x is not None else us.new_empty(k, steps, b, 3 * gen.n)
            g_raws = us.new_zeros(k, steps, b, 2 * n_u)  # the PyTorch path relies on the zeros
            carry_g, carry_c = _python_backward(
                con,
                gen,
                raw,
                us,
                std,
                masks,
                noise,
                weights,
                (g_gen, g_dropped, g_con, g_raw, g_u),
                (g_gen_x, g_con_x, g_raws),
            )
            # [u_t, 1]^T d/d(gen_in_t) summed over steps and rows, as the C++ loop returns it
            us_and_one = torch.cat([us, us.new_ones(()).expand(*us.shape[:-1], 1)], dim=-1)
            sums = time_sum(us_and_one, g_gen_x)
            g_con_gate, g_con_cand = con.weight_grads(g_con_x)
            g_gen_gate, g_gen_cand = gen.weight_grads(g_gen_x)
            g_fb = time_sum(dropped[:, :steps], g_con_x)
            g_co_w = time_sum(con.states[:, 1:], g_raws)
            g_co_b = g_raws.sum(dim=(1, 2))
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
    """Run the controller and the generator together over T steps (see the module docstring).

    Args:
        con_x: (K, B / samples, T, 3C) projected controller inputs (encoder part, bias included),
            or with `con_projection` the controller's input itself, (K, B / samples, T, n); one
            row per trial: with S samples, trial b drives rows b S ... b S + S - 1.
        gen_x: (K, B, T, 3G) projected generator inputs (external inputs and bias), or (K, 1, 1, 3G)
            when they are the same for every trial and step (the bias alone: its gradient is then
            summed inside the loop, not over a (K, B, T, 3G) gradient afterwards).
        gen_init: (K, B, G) initial generator state g_{-1}.
        con_h0: (K, B, C) initial controller state.
        weights: the recurrence's weights.
        masks: (K, B, T + 1, G) dropout masks of the generator state (already scaled), or None.
        noise: (K, B, T, U) standard normal draws for the inferred inputs, or None to use the means.
        clip: state bound of both GRUs.
        samples: S posterior samples per trial.
        con_projection: the controller's input weights (K, n, 3C) and bias (K, 3C), or None when
            con_x is already projected. The C++ loop projects each step's rows itself (no
            (K, B, T, 3C) projection or gradient is stored); the PyTorch path, and posterior
            sampling without gradients (one projection per trial for its S samples), project
            first.
    Returns:
        gen_states (K, B, T, G), con_states (K, B, T, C), co_raw (K, B, T, 2U) posterior means and
        log-variances, co_sample (K, B, T, U) inferred inputs fed to the generator, dropped
        (K, B, T, G) the dropped-out states d_t = g_t m_{t+1} (gen_states itself without masks).
    """
    tensors = (con_x, gen_x, gen_init, con_h0, *weights.as_tuple(), *(con_projection or ()))
    if samples > 1 and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        con_x, samples = con_x.repeat_interleave(samples, dim=1), 1  # the backward maps rows 1:1
    con_w = con_b = None
    if con_projection is not None:
        if kernels_for(gen_init) is None or samples > 1:
            # projected once per trial, not once per sample (posterior sampling); the PyTorch path
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


def controlled_generator_reference(
    con_x: Tensor,
    gen_x: Tensor,
    gen_init: Tensor,
    con_h0: Tensor,
    weights: LoopWeights,
    masks: Tensor | None,
    noise: Tensor | None,
    clip: float,
    con_projection: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`controlled_generator` step by step in plain autograd (the test oracle)."""
    w = weights
    if con_projection is not None:
        weight, bias = con_projection
        con_x = torch.einsum("kbtn,knm->kbtm", con_x, weight) + bias[:, None, None]
    gen_x = gen_x.expand(*gen_init.shape[:2], con_x.shape[2], gen_x.shape[-1])
    d = gen_init * masks[:, :, 0] if masks is not None else gen_init
    g, c = gen_init, con_h0
    gens, cons, raws, us, ds = [], [], [], [], []
    for t in range(con_x.shape[2]):
        c = gru_step_reference(
            con_x[:, :, t] + torch.bmm(d, w.feedback), c, w.con_gate, w.con_cand, clip
        )
        raw = torch.bmm(c, w.co_weight) + w.co_bias.unsqueeze(1)
        u = _sample(raw, noise[:, :, t] if noise is not None else None)
        g = gru_step_reference(
            gen_x[:, :, t] + torch.bmm(u, w.co_to_gen), g, w.gen_gate, w.gen_cand, clip
        )
        d = g * masks[:, :, t + 1] if masks is not None else g
        gens.append(g)
        cons.append(c)
        raws.append(raw)
        us.append(u)
        ds.append(d)
    return tuple(torch.stack(x, dim=2) for x in (gens, cons, raws, us, ds))  # type: ignore[return-value]
