"""The controller and the generator it drives, stepped together (the reference recurrence).

Per step t (K workers, B trials; C controller units, G generator units, U inferred inputs):

    con_in_t = e_t W_ci + b_ci + d_{t-1} W_fb     e_t: lagged encoder states; d: dropped-out
                                                 generator state, W_fb = W_fac W_fc (factors fed back)
    c_t      = GRU_con(con_in_t, c_{t-1})
    raw_t    = c_t W_co + b_co                   (2U): posterior mean and log-variance of u_t
    u_t      = mean_t + eps_t * exp(logvar_t / 2) (logvar clamped to [-20, 20]; no eps: the mean)
    gen_in_t = x^gen_t + u_t W_ug                 x^gen: external inputs projected, with the bias
    g_t      = GRU_gen(gen_in_t, g_{t-1})
    d_t      = g_t * m_{t+1}                      m: dropout masks (d_{-1} = g_init * m_0)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from autolfads.model.gru import gru_step

__all__ = ["LoopWeights", "controlled_generator", "LOGVAR_BOUND"]

LOGVAR_BOUND = 20.0


@dataclass
class LoopWeights:
    """The weights of the controller-generator recurrence, each with a leading worker axis K."""

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
        return tuple(getattr(self, f.name) for f in fields(self))


def _sample(raw: Tensor, noise: Tensor | None) -> Tensor:
    """u = mean + noise * std from raw (K, B, 2U) = [mean, log-variance]; the mean without noise."""
    n = raw.shape[-1] // 2
    mean = raw[..., :n]
    if noise is None:
        return mean
    return mean + noise * torch.exp(0.5 * raw[..., n:].clamp(-LOGVAR_BOUND, LOGVAR_BOUND))


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
    """Run the controller and the generator together over T steps (module docstring).

    Args:
        con_x: (K, B / S, T, 3C) projected controller inputs (bias included), or with
            `con_projection` the controller's input itself (K, B / S, T, n); one row per trial:
            with S samples, trial b drives rows b S ... b S + S - 1.
        gen_x: (K, B, T, 3G) projected generator inputs, or (K, 1, 1, 3G) shared by all rows/steps.
        gen_init: (K, B, G) initial generator state.  con_h0: (K, B, C) initial controller state.
        weights: the recurrence's weights.
        masks: (K, B, T + 1, G) dropout masks of the generator state (scaled), or None.
        noise: (K, B, T, U) standard normal draws for the inferred inputs, or None (the means).
        clip: state bound of both GRUs.  samples: S posterior samples per trial.
        con_projection: the controller's input weights (K, n, 3C) and bias (K, 3C), or None when
            con_x is already projected.
    Returns:
        gen_states (K, B, T, G), con_states (K, B, T, C), co_raw (K, B, T, 2U) posterior means and
        log-variances, co_sample (K, B, T, U) inferred inputs, dropped (K, B, T, G) the states fed
        to the factors, d_t = g_t m_{t+1} (gen_states itself without masks).
    """
    w = weights
    if con_projection is not None:
        weight, bias = con_projection
        con_x = torch.einsum("kbtn,knm->kbtm", con_x, weight) + bias[:, None, None]
    con_x = con_x.repeat_interleave(samples, dim=1) if samples > 1 else con_x
    gen_x = gen_x.expand(*gen_init.shape[:2], con_x.shape[2], gen_x.shape[-1])
    d = gen_init * masks[:, :, 0] if masks is not None else gen_init
    g, c = gen_init, con_h0
    gens, cons, raws, us, ds = [], [], [], [], []
    for t in range(con_x.shape[2]):
        c = gru_step(con_x[:, :, t] + torch.bmm(d, w.feedback), c, w.con_gate, w.con_cand, clip)
        raw = torch.baddbmm(w.co_bias.unsqueeze(1), c, w.co_weight)
        u = _sample(raw, noise[:, :, t] if noise is not None else None)
        g = gru_step(gen_x[:, :, t] + torch.bmm(u, w.co_to_gen), g, w.gen_gate, w.gen_cand, clip)
        d = g * masks[:, :, t + 1] if masks is not None else g
        for seq, value in zip((gens, cons, raws, us, ds), (g, c, raw, u, d), strict=True):
            seq.append(value)
    return tuple(torch.stack(x, dim=2) for x in (gens, cons, raws, us, ds))  # type: ignore[return-value]
