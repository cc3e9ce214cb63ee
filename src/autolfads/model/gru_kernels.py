"""The clipped-GRU recurrence with hand-written backward passes (fewer, larger ops than autograd's).

Notation (per worker k, batch rows b; H hidden units):
    a = x_ru + h W_g                 (x_ru: the r/u part of the projected input; W_g: (H, 2H))
    [r, u] = sigmoid(a)
    c = tanh(x_c + (r * h) W_c)      (W_c: (H, H))
    h' = hardtanh(c + u (h - c), -clip, clip)

`gru_step` is one step (used where the input of a step depends on the previous step: controller and
generator); `gru_sequence` runs a whole sequence whose inputs are known in advance (encoders): its forward
loop builds no autograd graph and its backward computes the weight gradients with one matmul over all
steps. `gru_step_reference` is the plain autograd form, kept as the oracle for tests.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["gru_step", "gru_sequence", "gru_step_reference"]


def gru_step_reference(x: Tensor, h: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float) -> Tensor:
    """One step by autograd. x (K, B, 3H), h (K, B, H), w_gate (K, H, 2H), w_cand (K, H, H)."""
    n = h.shape[-1]
    ru = torch.sigmoid(x[..., : 2 * n] + torch.bmm(h, w_gate))
    r, u = ru[..., :n], ru[..., n:]
    c = torch.tanh(x[..., 2 * n :] + torch.bmm(r * h, w_cand))
    return F.hardtanh(c + u * (h - c), -clip, clip)


def _forward(x: Tensor, h: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float):
    n = h.shape[-1]
    ru = torch.sigmoid(torch.baddbmm(x[..., : 2 * n], h, w_gate))
    r, u = ru[..., :n], ru[..., n:]
    rh = r * h
    c = torch.tanh(torch.baddbmm(x[..., 2 * n :], rh, w_cand))
    pre = torch.lerp(c, h, u)  # c + u (h - c)
    inside = pre.abs() < clip
    return pre.clamp(-clip, clip), ru, rh, c, inside


def _backward_step(g_out, h, ru, rh, c, inside, w_gate_t, w_cand_t):
    """Gradients of one step: (g_x (K, B, 3H) = [g wrt the r/u pre-activations, g wrt the candidate's],
    g_h (K, B, H)). Written into one buffer to avoid concatenations."""
    n = h.shape[-1]
    r, u = ru[..., :n], ru[..., n:]
    g = torch.where(inside, g_out, 0.0)
    g_x = torch.empty(*h.shape[:-1], 3 * n, dtype=h.dtype, device=h.device)
    g_ru_pre, g_c_pre = g_x[..., : 2 * n], g_x[..., 2 * n :]
    torch.mul(g * (1 - u), 1 - c * c, out=g_c_pre)
    g_rh = torch.bmm(g_c_pre, w_cand_t)
    torch.mul(g_rh, h, out=g_x[..., :n])
    torch.mul(g, h - c, out=g_x[..., n : 2 * n])
    g_ru_pre.mul_(ru * (1 - ru))
    g_h = torch.baddbmm(torch.addcmul(g * u, g_rh, r), g_ru_pre, w_gate_t)
    return g_x, g_h


class _GRUStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, w_gate, w_cand, clip):  # type: ignore[override]
        out, ru, rh, c, inside = _forward(x, h, w_gate, w_cand, clip)
        ctx.save_for_backward(h, ru, rh, c, inside, w_gate, w_cand)
        return out

    @staticmethod
    def backward(ctx, g_out):  # type: ignore[override]
        h, ru, rh, c, inside, w_gate, w_cand = ctx.saved_tensors
        g_x, g_h = _backward_step(
            g_out, h, ru, rh, c, inside, w_gate.transpose(1, 2), w_cand.transpose(1, 2)
        )
        n = h.shape[-1]
        g_ru_pre, g_c_pre = g_x[..., : 2 * n], g_x[..., 2 * n :]
        g_w_gate = torch.bmm(h.transpose(1, 2), g_ru_pre)
        g_w_cand = torch.bmm(rh.transpose(1, 2), g_c_pre)
        return g_x, g_h, g_w_gate, g_w_cand, None


def gru_step(x: Tensor, h: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float) -> Tensor:
    """One clipped-GRU step.

    Args:
        x: (K, B, 3H) projected input (input weights and bias already applied).
        h: (K, B, H) previous state.
        w_gate: (K, H, 2H) recurrent weights of the reset and update gates.
        w_cand: (K, H, H) recurrent weights of the candidate.
        clip: state bound.
    Returns:
        (K, B, H) next state.
    """
    return _GRUStep.apply(x, h, w_gate, w_cand, float(clip))


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xs, h0, w_gate, w_cand, clip):  # type: ignore[override]
        h = h0
        hs, rus, rhs, cs, ins = [], [], [], [], []
        for x in xs.unbind(2):
            hs.append(h)
            h, ru, rh, c, inside = _forward(x, h, w_gate, w_cand, clip)
            rus.append(ru)
            rhs.append(rh)
            cs.append(c)
            ins.append(inside)
        states = torch.stack(hs[1:] + [h], dim=2)  # (K, B, T, H)
        ctx.save_for_backward(
            torch.stack(hs, 2),
            torch.stack(rus, 2),
            torch.stack(rhs, 2),
            torch.stack(cs, 2),
            torch.stack(ins, 2),
            w_gate,
            w_cand,
        )
        return states

    @staticmethod
    def backward(ctx, g_states):  # type: ignore[override]
        h_prev, ru, rh, c, inside, w_gate, w_cand = ctx.saved_tensors
        k, b, t, n = h_prev.shape
        w_gate_t, w_cand_t = w_gate.transpose(1, 2), w_cand.transpose(1, 2)
        g_xs = [None] * t
        carry = torch.zeros_like(h_prev[:, :, 0])
        for i in range(t - 1, -1, -1):
            g_xs[i], carry = _backward_step(
                g_states[:, :, i] + carry,
                h_prev[:, :, i],
                ru[:, :, i],
                rh[:, :, i],
                c[:, :, i],
                inside[:, :, i],
                w_gate_t,
                w_cand_t,
            )
        g_xs = torch.stack(g_xs, dim=2)  # (K, B, T, 3H)
        g_ru_pre, g_c_pre = g_xs[..., : 2 * n], g_xs[..., 2 * n :]
        flat = (k, b * t)
        g_w_gate = torch.bmm(
            h_prev.reshape(*flat, n).transpose(1, 2), g_ru_pre.reshape(*flat, 2 * n)
        )
        g_w_cand = torch.bmm(rh.reshape(*flat, n).transpose(1, 2), g_c_pre.reshape(*flat, n))
        return g_xs, carry, g_w_gate, g_w_cand, None


def gru_sequence(xs: Tensor, h0: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float) -> Tensor:
    """All states of a clipped GRU over a sequence whose projected inputs are known in advance.

    Args:
        xs: (K, B, T, 3H) projected inputs.
        h0: (K, B, H) initial state.
        w_gate, w_cand, clip: as in `gru_step`.
    Returns:
        (K, B, T, H) states after each step.
    """
    return _GRUSequence.apply(xs, h0, w_gate, w_cand, float(clip))
