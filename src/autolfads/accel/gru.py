"""The clipped-GRU recurrences of the encoders (and the generator without controller) in C++.

`GRUTape` holds a run's buffers, time-major; the C++ loops (csrc/gru_loops.cpp) write them in the
forward and read them in the backward, which adds each step's share of the weight gradients
while its rows are in cache. Same values as `autolfads.model.gru` (the reference) to float32
rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolfads.accel.loader import load_kernels

__all__ = [
    "GRUTape",
    "gru_sequence",
    "bidirectional_sequence",
    "cell_inputs",
    "last_dim_contiguous",
]


def last_dim_contiguous(x: Tensor) -> Tensor:
    """x itself if its last dim is contiguous (what the C++ loops read), else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


class GRUTape:
    """The buffers of a clipped-GRU run (K cells, T steps, B rows, H units), worker-major then
    time-major: `states` (K, T + 1, B, H) with states[:, 0] = h0, gate values `ru` (K, T, B, 2H),
    candidates `cand` (K, T, B, H), and `rh` (K, 1, B, H), scratch of the backward (which
    recomputes r * h). A state at +-clip marks a clipped step. With keep=False (no backward) the
    per-step values live in one reused slot. Cells running backward in time (`bidirectional_sequence`)
    keep their tapes in time order: h0 at states[:, T], the state after step t at states[:, t].
    """

    def __init__(self, h0: Tensor, steps: int, clip: float, keep: bool = True) -> None:
        k, b, n = h0.shape
        self.clip, self.n = clip, n
        self.states = h0.new_empty(k, steps + 1, b, n)
        self.states[:, 0] = h0
        slots = steps if keep else 1
        self.ru = h0.new_empty(k, slots, b, 2 * n)
        self.rh = h0.new_empty(k, 1, b, n)
        self.cand = h0.new_empty(k, slots, b, n)

    def buffers(self) -> list[Tensor]:
        """[states, ru, rh, cand]: the tape as the C++ loops take it."""
        return [self.states, self.ru, self.rh, self.cand]


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xs, h0, w_gate, w_cand, clip):  # type: ignore[override]
        tape = GRUTape(h0, xs.shape[2], clip, keep=any(ctx.needs_input_grad))
        load_kernels().gru_sequence_forward(
            last_dim_contiguous(xs), torch.empty(0), w_gate, w_cand, clip, *tape.buffers(), False
        )
        ctx.tape = tape
        ctx.save_for_backward(w_gate, w_cand)
        return tape.states[:, 1:].transpose(1, 2)  # (K, B, T, H)

    @staticmethod
    def backward(ctx, g_states):  # type: ignore[override]
        tape: GRUTape = ctx.tape
        w_gate, w_cand = ctx.saved_tensors
        k, steps, b, n = tape.cand.shape
        g_xs = g_states.new_empty(k, steps, b, 3 * n)
        empty = torch.empty(0)
        carry, g_w_gate, g_w_cand, _ = load_kernels().gru_sequence_backward(
            last_dim_contiguous(g_states),
            *(empty, empty, empty),
            w_gate,
            w_cand,
            tape.clip,
            *tape.buffers(),
            g_xs,
            empty,
            False,
        )
        return g_xs.transpose(1, 2), carry, g_w_gate.sum(dim=1), g_w_cand.sum(dim=1), None


def gru_sequence(xs: Tensor, h0: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float) -> Tensor:
    """`ClippedGRUCell.sequence` in C++: projected inputs xs (K, B, T, 3H), h0 (K, B, H),
    w_gate (K, H, 2H), w_cand (K, H, H) -> states (K, B, T, H) (a view of time-major storage)."""
    return _GRUSequence.apply(xs, h0, w_gate, w_cand, float(clip))


class _BidirectionalSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, w_in, h0, w_gate, w_cand, clip, final_only):  # type: ignore[override]
        cells, b, n = h0.shape
        steps = inputs.shape[1] // b
        tape = GRUTape(h0, steps, clip, keep=any(ctx.needs_input_grad))
        both = tape.states.view(cells // 2, 2, steps + 1, b, n)
        both[:, 1, steps] = h0.view(cells // 2, 2, b, n)[:, 1]  # reverse cells start at slot T
        load_kernels().gru_sequence_forward(
            inputs, w_in, w_gate, w_cand, clip, *tape.buffers(), True
        )
        ctx.tape = tape
        ctx.save_for_backward(inputs, w_in, w_gate, w_cand)
        ctx.final_only = final_only
        if final_only:  # after x[T - 1] (slot T), and after x[0] (slot 0) for the reverse cells
            return both[:, 0, steps], both[:, 1, 0]
        return both[:, 0, 1:].transpose(1, 2), both[:, 1, :-1].transpose(1, 2)

    @staticmethod
    def backward(ctx, g_fwd, g_bwd):  # type: ignore[override]
        tape: GRUTape = ctx.tape
        inputs, w_in, w_gate, w_cand = ctx.saved_tensors
        cells = tape.cand.shape[0]
        if ctx.final_only:  # (K, B, 1, H): the C++ loop adds them at each cell's last step only
            g_fwd, g_bwd = g_fwd.unsqueeze(2), g_bwd.unsqueeze(2)
        # weight gradients are summed inside the loop, the inputs' (if needed) written per cell
        g_cells = inputs.new_empty(cells, *inputs.shape[1:]) if ctx.needs_input_grad[0] else None
        carry, g_w_gate, g_w_cand, g_w_in = load_kernels().gru_sequence_backward(
            last_dim_contiguous(g_fwd),
            last_dim_contiguous(g_bwd),
            inputs,
            w_in,
            w_gate,
            w_cand,
            tape.clip,
            *tape.buffers(),
            torch.empty(0),
            g_cells if g_cells is not None else torch.empty(0),
            True,
        )
        g_w_gate, g_w_cand, g_w_in = (p.sum(dim=1) for p in (g_w_gate, g_w_cand, g_w_in))
        g_inputs = None  # a worker's inputs feed both its cells
        if g_cells is not None:
            g_inputs = g_cells.view(cells // 2, 2, *inputs.shape[1:]).sum(dim=1)
        return g_inputs, g_w_in, carry, g_w_gate, g_w_cand, None, None


def bidirectional_sequence(
    inputs: Tensor,
    w_in: Tensor,
    h0: Tensor,
    w_gate: Tensor,
    w_cand: Tensor,
    clip: float,
    final_only: bool = False,
) -> tuple[Tensor, Tensor]:
    """Both directions of K bidirectional clipped GRUs over unflipped, time-major inputs.

    Cells 2k and 2k + 1 are worker k's forward and backward directions; both read the inputs in
    time order (the backward cell from the last step to the first) and project each step inside
    the loop (no (2K, T, B, 3H) projection is stored).

    Args:
        inputs: (K, T B, n) `cell_inputs(x)`.  w_in: (2K, n, 3H) input weights, bias as last row.
        h0: (2K, B, H).  w_gate: (2K, H, 2H), w_cand: (2K, H, H).  clip: state bound.
        final_only: return only the final states (K, B, H) each: fwd after x[T - 1], bwd after x[0].
    Returns:
        fwd (K, B, T, H): state after x[:t + 1];  bwd (K, B, T, H): state after x[t:] (time order).
    """
    return _BidirectionalSequence.apply(
        inputs.contiguous(), w_in.contiguous(), h0, w_gate, w_cand, float(clip), bool(final_only)
    )


def cell_inputs(x: Tensor) -> Tensor:
    """The encoders' input as the C++ loop reads it, in one copy.

    (K, B, T, n) -> (K, T B, n + 1): worker k's input time-major, read by both of its cells
    (2k and 2k + 1), with a column of ones so that each cell's bias is a row of its input weight.
    """
    k, b, t, n_in = x.shape
    out = x.new_empty(k, t, b, n_in + 1)
    out[..., :n_in] = x.transpose(1, 2)
    out[..., n_in] = 1.0
    return out.view(k, t * b, n_in + 1)
