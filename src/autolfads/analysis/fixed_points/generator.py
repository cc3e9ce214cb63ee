"""The trained generator as a one-step map F(g) = GRU_gen(g, u), with its closed-form Jacobian.

Shape legend: K workers, M states, G generator size, U inferred inputs, E external inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolfads.model.gru import gru_step
from autolfads.model.lfads import LFADSNetwork
from autolfads.outputs.checkpoint import LFADS

__all__ = ["GeneratorMap", "generator_step"]


def generator_step(
    model: LFADS | LFADSNetwork, worker: int = 0, inputs: Tensor | None = None
) -> GeneratorMap:
    """The trained generator's one-step map F(g) = GRU_gen(g, u) with a constant input u.

    Args:
        model: a loaded `LFADS` checkpoint or an `LFADSNetwork` (K workers).
        worker: which of the K workers (0 for a checkpoint).
        inputs: (U + E,) the constant generator input: inferred inputs first, then external
            inputs; zeros when None.
    Returns:
        A `GeneratorMap`: called on states (M, G) it gives the next states (M, G) in their dtype
        and on their device; `.jacobian(states)` gives dF/dg in closed form. The weights are
        copied (detached): optimising states never touches the model.
    """
    network = model.network if isinstance(model, LFADS) else model
    if not 0 <= worker < network.n_workers:
        raise ValueError(f"`worker` must be in [0, {network.n_workers}), got {worker}")
    cell = network.generator
    return GeneratorMap(
        drive=_generator_drive(network, worker, inputs),
        w_gate=cell.gate_weight[worker].detach().clone(),
        w_cand=cell.candidate_weight[worker].detach().clone(),
        clip=cell.clip,
    )


class GeneratorMap:
    """F(g) for one clipped-GRU generator with a fixed projected input, and its exact Jacobian.

    Args:
        drive: (3G,) the projected input x W_x + b (constant over steps).
        w_gate: (G, 2G) recurrent weights of the reset and update gates.
        w_cand: (G, G) recurrent weights of the candidate.
        clip: state bound.
    """

    def __init__(self, drive: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float) -> None:
        self.drive, self.w_gate, self.w_cand, self.clip = drive, w_gate, w_cand, float(clip)

    def __call__(self, h: Tensor) -> Tensor:
        """Next states (M, G) of states h (M, G), in h's dtype and on its device."""
        x = self.drive.to(h).expand(1, h.shape[0], self.drive.shape[0])  # (1, M, 3G)
        w_gate, w_cand = self.w_gate.to(h)[None], self.w_cand.to(h)[None]
        return gru_step(x, h[None], w_gate, w_cand, self.clip)[0]

    def jacobian(self, h: Tensor) -> Tensor:
        """dF/dg at states h (M, G): (M, G, G), [m, j, i] = dF_j / dg_i (closed form, no autograd).

        With r, u the gates, c the candidate and p = c + u (g - c) before clipping:
        dF_j/dg_i = [|p_j| < clip] ((1 - u_j) dc_j/dg_i + u_j delta_ij + (g_j - c_j) du_j/dg_i),
        dc_j/dg_i = (1 - c_j^2) sum_k W_c[k, j] (r_k delta_ki + g_k r_k (1 - r_k) W_r[i, k]),
        du_j/dg_i = u_j (1 - u_j) W_u[i, j].
        """
        n = h.shape[-1]
        x, w_gate, w_cand = self.drive.to(h), self.w_gate.to(h), self.w_cand.to(h)
        ru = torch.sigmoid(x[: 2 * n] + h @ w_gate)  # (M, 2G)
        r, u = ru[:, :n], ru[:, n:]
        c = torch.tanh(x[2 * n :] + (r * h) @ w_cand)  # (M, G)
        inside = ((c + u * (h - c)).abs() < self.clip).to(h)
        # d(r * g)_k / dg_i as (M, k, i), then through W_c and tanh
        d_rh = torch.diag_embed(r) + (h * r * (1 - r)).unsqueeze(-1) * w_gate[:, :n].T
        d_c = (1 - c * c).unsqueeze(-1) * (w_cand.T @ d_rh)  # (M, G, G)
        d_u = (u * (1 - u)).unsqueeze(-1) * w_gate[:, n:].T  # (M, G, G)
        jac = (1 - u).unsqueeze(-1) * d_c + torch.diag_embed(u) + (h - c).unsqueeze(-1) * d_u
        return inside.unsqueeze(-1) * jac


def _generator_drive(network: LFADSNetwork, worker: int, inputs: Tensor | None) -> Tensor:
    """(3G,) projected constant input: bias + u W_co + e W_ext for inputs [u (U), e (E)]."""
    s, cell = network.structure, network.generator
    n_co = s.co_dim if s.use_controller else 0
    width = n_co + s.ext_input_dim
    drive = cell.bias[worker].detach().clone()
    if inputs is None:
        return drive
    inputs = torch.as_tensor(inputs)
    if inputs.shape != (width,):
        raise ValueError(
            f"`inputs` must have shape ({width},) (co_dim {n_co} + ext_input_dim "
            f"{s.ext_input_dim}), got {tuple(inputs.shape)}"
        )
    inputs = inputs.detach().to(drive)
    if n_co:
        drive = drive + inputs[:n_co] @ network.co_to_gen.weight[worker].detach()
    if s.ext_input_dim:
        drive = drive + inputs[n_co:] @ cell.input_weight[worker].detach()
    return drive
