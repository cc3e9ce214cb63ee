"""The clipped GRU of LFADS, K workers at once, and the bidirectional encoder built from it.

Per worker (H hidden units; x the projected input x W_x + b, split into its r, u and c parts):
    r = sigmoid(x_r + h W_hr)        u = sigmoid(x_u + h W_hu)      (update-gate bias starts at 1)
    c = tanh(x_c + (r * h) W_hc)
    h' = clip(u * h + (1 - u) * c, -clip, clip)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["gru_step", "ClippedGRUCell", "BidirectionalGRU"]


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
    n = h.shape[-1]
    ru = torch.sigmoid(x[..., : 2 * n] + torch.bmm(h, w_gate))
    r, u = ru[..., :n], ru[..., n:]
    c = torch.tanh(x[..., 2 * n :] + torch.bmm(r * h, w_cand))
    return F.hardtanh(c + u * (h - c), -clip, clip)


class ClippedGRUCell(nn.Module):
    """The LFADS GRU cell (module docstring) for K workers, its state clipped to [-clip, clip].

    The input projection (`project_input`) is separate from the step so that a sequence whose
    inputs are known is projected in one matmul before the time loop.

    Args:
        n_workers: K.  input_size: width of x (may be 0).  hidden_size: H.  clip: state bound.
    """

    def __init__(
        self, n_workers: int, input_size: int, hidden_size: int, clip: float = 5.0
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.clip = input_size, hidden_size, float(clip)
        h = hidden_size
        self.input_weight = nn.Parameter(
            torch.randn(n_workers, input_size, 3 * h) / math.sqrt(max(input_size, 1))
        )
        bias = torch.zeros(n_workers, 3 * h)
        bias[:, h : 2 * h] = 1.0  # update-gate bias
        self.bias = nn.Parameter(bias)
        self.gate_weight = nn.Parameter(torch.randn(n_workers, h, 2 * h) / math.sqrt(h))  # r, u
        self.candidate_weight = nn.Parameter(torch.randn(n_workers, h, h) / math.sqrt(h))

    def recurrent_weights(self) -> list[Tensor]:
        """The hidden-to-hidden weights (the ones L2 penalties act on)."""
        return [self.gate_weight, self.candidate_weight]

    def project_input(self, x: Tensor | None, batch_shape: tuple[int, ...]) -> Tensor:
        """x W_x + b for every step at once: x (K, B, ..., input_size) -> (K, B, ..., 3H).

        Without input (x None or input_size 0) the bias, broadcast to (K, *batch_shape, 3H).
        """
        if x is None or self.input_size == 0:
            k = self.bias.shape[0]
            view = self.bias.view(k, *([1] * len(batch_shape)), -1)
            return view.expand(k, *batch_shape, 3 * self.hidden_size)
        k = x.shape[0]
        flat = x.reshape(k, -1, self.input_size)
        out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.input_weight)
        return out.reshape(*x.shape[:-1], 3 * self.hidden_size)

    def step(self, projected_input: Tensor, h: Tensor) -> Tensor:
        """One step: projected input (K, B, 3H), state (K, B, H) -> next state (K, B, H)."""
        return gru_step(projected_input, h, self.gate_weight, self.candidate_weight, self.clip)

    def sequence(self, projected_inputs: Tensor, h0: Tensor) -> Tensor:
        """Every state over known inputs: projected inputs (K, B, T, 3H), h0 (K, B, H) -> (K, B, T, H)."""
        h, states = h0, []
        for t in range(projected_inputs.shape[2]):
            h = self.step(projected_inputs[:, :, t], h)
            states.append(h)
        return torch.stack(states, dim=2)


class BidirectionalGRU(nn.Module):
    """An encoder: a forward and a backward `ClippedGRUCell` over a sequence, as 2K cells.

    The two directions of worker k are rows 2k and 2k + 1 of one cell, so an index copy along the
    worker axis still moves whole workers.

    Args:
        n_workers: K.  input_size: width of x.  hidden_size: H per direction.  clip: state bound.

    Shapes: x (K, B, T, input_size) -> forward states (K, B, T, H), backward states (K, B, T, H)
    (backward states in time order: element t has seen x[t:]).
    """

    def __init__(
        self, n_workers: int, input_size: int, hidden_size: int, clip: float = 5.0
    ) -> None:
        super().__init__()
        self.n_workers, self.hidden_size = n_workers, hidden_size
        self.cell = ClippedGRUCell(2 * n_workers, input_size, hidden_size, clip)
        self.h0 = nn.Parameter(torch.zeros(2 * n_workers, hidden_size))

    def recurrent_weights(self) -> list[Tensor]:
        """The hidden-to-hidden weights of both directions."""
        return self.cell.recurrent_weights()

    def forward(self, x: Tensor, keep_states: bool = True) -> tuple[Tensor, Tensor]:
        """Both directions: (fwd, bwd), (K, B, T, H) each, or with keep_states False the final
        states (K, B, H) each (fwd after x[T-1], bwd after x[0])."""
        k, b, t, _ = x.shape
        h0 = self.h0.unsqueeze(1).expand(2 * k, b, self.hidden_size)
        both = torch.stack([x, x.flip(2)], dim=1).reshape(2 * k, b, t, -1)  # cells 2k, 2k + 1
        states = self.cell.sequence(self.cell.project_input(both, (b, t)), h0)
        states = states.view(k, 2, b, t, self.hidden_size)
        fwd, bwd = states[:, 0], states[:, 1].flip(2)
        if not keep_states:
            return fwd[:, :, -1], bwd[:, :, 0]
        return fwd, bwd
