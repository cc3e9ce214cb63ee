"""The clipped-GRU recurrence with hand-written backward passes (fewer, larger ops than autograd's).

Notation (per worker k, batch rows b; H hidden units):
    a = x_ru + h W_g                 (x_ru: the r/u part of the projected input; W_g: (H, 2H))
    [r, u] = sigmoid(a)
    c = tanh(x_c + (r * h) W_c)      (W_c: (H, H))
    h' = hardtanh(c + u (h - c), -clip, clip)

`GRUTape` records a run time-major and does the chain rule of one step by hand; `gru_sequence` uses it
for a whole sequence whose inputs are known in advance (encoders): its forward loop builds no autograd
graph and its backward computes the weight gradients with one matmul over all steps (in the C++
loops, step by step inside the backward loop, from cache-warm rows). `gru_step` is a
sequence of one step (`ClippedGRUCell.step`); the controller-generator loop drives two tapes itself
(`generator_loop.py`). `gru_step_reference` is the plain autograd form, kept as the oracle for tests.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from autolfads.model.fused import kernels_for

_aten = torch.ops.aten

__all__ = [
    "gru_step",
    "gru_sequence",
    "bidirectional_sequence",
    "gru_step_reference",
    "GRUTape",
    "time_sum",
    "last_dim_contiguous",
]


def gru_step_reference(x: Tensor, h: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float) -> Tensor:
    """One step by autograd. x (K, B, 3H), h (K, B, H), w_gate (K, H, 2H), w_cand (K, H, H)."""
    n = h.shape[-1]
    ru = torch.sigmoid(x[..., : 2 * n] + torch.bmm(h, w_gate))
    r, u = ru[..., :n], ru[..., n:]
    c = torch.tanh(x[..., 2 * n :] + torch.bmm(r * h, w_cand))
    return F.hardtanh(c + u * (h - c), -clip, clip)


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
    return gru_sequence(x.unsqueeze(2), h, w_gate, w_cand, clip)[:, :, 0]


class GRUTape:
    """A clipped-GRU run recorded for a hand-written backward, without autograd.

    Buffers (K workers, T steps, B rows, H units; worker-major, then time-major, so that a worker's
    steps x rows are one matrix for the weight gradients), written in place by `step`:
    `states` (K, T + 1, B, H) with states[:, 0] = h0, `ru` (K, T, B, 2H) gate values, `rh`
    (K, T, B, H) reset-gated states, `cand` (K, T, B, H) candidates, `pre` (K, T, B, H) states
    before clipping (with keep=False, for inference, only `states` spans T: the others are one
    reused slot). In `bidirectional_sequence` the backward-direction cells run from the last step
    to the first and keep their tapes in time order: h0 at states[:, T], the state after step t at
    states[:, t].
    `backward_step` runs the chain rule of one step on these cached values.

    `step` / `backward_step` are the PyTorch path. For float32 on CPU, when the C++ kernels of
    `autolfads.model.fused` can be built, whole loops run in C++ on the same buffers instead
    (`run_sequence` here, `controlled_generator` in generator_loop.py); there is no `pre` buffer
    then (a state at +-clip marks a clipped step), and `rh` is one reused slot (their backward
    recomputes r * h from the step's cache-warm rows).
    """

    def __init__(self, h0: Tensor, steps: int, clip: float, keep: bool = True) -> None:
        k, b, n = h0.shape
        self.clip, self.n = clip, n
        self.states = h0.new_empty(k, steps + 1, b, n)
        self.states[:, 0] = h0
        # Without a backward (keep=False) the per-step values live in one reused, cache-warm slot.
        slots = steps if keep else 1
        self.slot = (lambda t: t) if keep else (lambda t: 0)
        self.kernels = kernels_for(h0)
        self.ru = h0.new_empty(k, slots, b, 2 * n)
        # the C++ loops recompute r * h in the backward: one reused slot is their scratch
        self.rh = h0.new_empty(k, slots if self.kernels is None else 1, b, n)
        self.cand = h0.new_empty(k, slots, b, n)
        self.pre = h0.new_empty(k, slots, b, n) if self.kernels is None else None

    def buffers(self) -> list[Tensor]:
        """[states, ru, rh, cand]: the tape as the C++ loops take it."""
        return [self.states, self.ru, self.rh, self.cand]

    def run_sequence(self, xs: Tensor, w_gate: Tensor, w_cand: Tensor) -> None:
        """Every step over projected inputs xs (K, B, T, 3H) known in advance."""
        if self.kernels is not None:
            self.kernels.gru_sequence_forward(
                last_dim_contiguous(xs),
                torch.empty(0),
                w_gate,
                w_cand,
                self.clip,
                *self.buffers(),
                False,
            )
            return
        for t in range(self.states.shape[1] - 1):
            self.step(t, xs[:, :, t], w_gate, w_cand)

    def run_sequence_backward(
        self, g_states: Tensor, w_gate: Tensor, w_cand: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """From d/d(states) (K, B, T, H): d/d(projected inputs) (K, T, B, 3H), d/dh0 (K, B, H) and
        the gradients of w_gate and w_cand."""
        k, steps, b, n = self.cand.shape
        g_xs = g_states.new_empty(k, steps, b, 3 * n)
        if self.kernels is not None:  # weight gradients summed inside the loop
            carry, g_w_gate, g_w_cand, _ = self.kernels.gru_sequence_backward(
                last_dim_contiguous(g_states),
                torch.empty(0),
                torch.empty(0),
                torch.empty(0),
                w_gate,
                w_cand,
                self.clip,
                *self.buffers(),
                g_xs,
                torch.empty(0),
                False,
            )
            return g_xs, carry, g_w_gate.sum(dim=1), g_w_cand.sum(dim=1)
        w_gate_t, w_cand_t = w_gate.transpose(1, 2), w_cand.transpose(1, 2)
        carry = g_states.new_zeros(k, b, n)
        for t in range(steps - 1, -1, -1):
            carry = self.backward_step(t, g_states[:, :, t] + carry, g_xs[:, t], w_gate_t, w_cand_t)
        return g_xs, carry, *self.weight_grads(g_xs)

    def step(self, t: int, x: Tensor, w_gate: Tensor, w_cand: Tensor) -> Tensor:
        """State after step t from the projected input x (K, B, 3H); returns states[:, t + 1]."""
        n, h, i = self.n, self.states[:, t], self.slot(t)
        ru = torch.baddbmm(x[..., : 2 * n], h, w_gate, out=self.ru[:, i]).sigmoid_()
        rh = torch.mul(ru[..., :n], h, out=self.rh[:, i])
        c = torch.baddbmm(x[..., 2 * n :], rh, w_cand, out=self.cand[:, i]).tanh_()
        pre = torch.lerp(c, h, ru[..., n:], out=self.pre[:, i])  # c + u (h - c)
        return torch.clamp(pre, -self.clip, self.clip, out=self.states[:, t + 1])

    def backward_step(
        self, t: int, g: Tensor, g_x: Tensor, w_gate_t: Tensor, w_cand_t: Tensor
    ) -> Tensor:
        """Write the gradient wrt step t's projected input into g_x (K, B, 3H); return d/dh_{t-1}.

        g: (K, B, H) gradient wrt states[:, t + 1].  w_gate_t, w_cand_t: transposed recurrent weights.
        Uses ATen's fused derivative kernels (one pass each) on the step's cached values:
        d/d(candidate pre-act.) = g (1 - u)(1 - c^2);  d/d(update pre-act.) = g (h - c) u (1 - u);
        d/d(reset pre-act.) = (g_c W_c^T) h r (1 - r);  d/dh = g u + (g_c W_c^T) r + g_ru W_g^T
        (g zero where the state was clipped).
        """
        n, h, c = self.n, self.states[:, t], self.cand[:, t]
        r, u = self.ru[:, t, :, :n], self.ru[:, t, :, n:]
        g = _aten.hardtanh_backward(g, self.pre[:, t], -self.clip, self.clip)
        g_ru, g_c = g_x[..., : 2 * n], g_x[..., 2 * n :]
        _aten.tanh_backward.grad_input(torch.addcmul(g, g, u, value=-1.0), c, grad_input=g_c)
        g_rh = torch.bmm(g_c, w_cand_t)
        _aten.sigmoid_backward.grad_input(g_rh * h, r, grad_input=g_x[..., :n])
        _aten.sigmoid_backward.grad_input(g * (h - c), u, grad_input=g_x[..., n : 2 * n])
        g_h = torch.mul(g, u).addcmul_(g_rh, r)
        return g_h.baddbmm_(g_ru, w_gate_t)

    def weight_grads(self, g_xs: Tensor) -> tuple[Tensor, Tensor]:
        """Gradients of (w_gate, w_cand) from every step's input gradient g_xs (K, T, B, 3H)."""
        n = self.n
        g_w_gate = time_sum(self.states[:, :-1], g_xs[..., : 2 * n])
        g_w_cand = time_sum(self.rh, g_xs[..., 2 * n :])
        return g_w_gate, g_w_cand


def last_dim_contiguous(x: Tensor) -> Tensor:
    """x itself if its last dim is contiguous (what the C++ loops read), else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def time_sum(a: Tensor, b: Tensor) -> Tensor:
    """sum over steps and rows of a^T b: a (K, T, B, I), b (K, T, B, J) -> (K, I, J).

    One matmul per worker over its (T B) rows, read in place from the tapes (a worker's steps x
    rows are one strided matrix in the worker-major layout; einsum, or bmm across workers whose
    batch stride is not uniform, would copy them first).
    """
    k, steps, rows, n_in = a.shape
    out = a.new_empty(k, n_in, b.shape[-1])
    for w in range(k):
        torch.mm(a[w].reshape(steps * rows, n_in).T, b[w].reshape(steps * rows, -1), out=out[w])
    return out


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xs, h0, w_gate, w_cand, clip):  # type: ignore[override]
        steps = xs.shape[2]
        tape = GRUTape(h0, steps, clip, keep=any(ctx.needs_input_grad))
        tape.run_sequence(xs, w_gate, w_cand)
        ctx.tape = tape
        ctx.save_for_backward(w_gate, w_cand)
        return tape.states[:, 1:].transpose(1, 2)  # (K, B, T, H)

    @staticmethod
    def backward(ctx, g_states):  # type: ignore[override]
        tape: GRUTape = ctx.tape
        w_gate, w_cand = ctx.saved_tensors
        g_xs, carry, g_w_gate, g_w_cand = tape.run_sequence_backward(g_states, w_gate, w_cand)
        return g_xs.transpose(1, 2), carry, g_w_gate, g_w_cand, None


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


class _BidirectionalSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, w_in, h0, w_gate, w_cand, clip, final_only):  # type: ignore[override]
        cells, b, n = h0.shape
        steps = inputs.shape[1] // b
        tape = GRUTape(h0, steps, clip, keep=any(ctx.needs_input_grad))
        both = tape.states.view(cells // 2, 2, steps + 1, b, n)
        both[:, 1, steps] = h0.view(cells // 2, 2, b, n)[:, 1]  # reverse cells start at slot T
        tape.kernels.gru_sequence_forward(inputs, w_in, w_gate, w_cand, clip, *tape.buffers(), True)
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
        cells, steps, b, n = tape.cand.shape
        if ctx.final_only:  # (K, B, 1, H): the C++ loop adds them at each cell's last step only
            g_fwd, g_bwd = g_fwd.unsqueeze(2), g_bwd.unsqueeze(2)
        # the weight gradients are summed inside the C++ loop, the inputs' (if needed) written
        # per cell there: no (2K, T, B, 3H) gradient of the projected inputs is stored
        g_cells = inputs.new_empty(cells, *inputs.shape[1:]) if ctx.needs_input_grad[0] else None
        carry, g_w_gate, g_w_cand, g_w_in = tape.kernels.gru_sequence_backward(
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
    """Both directions of K bidirectional clipped GRUs over unflipped, time-major inputs (C++).

    Cells 2k and 2k + 1 are worker k's forward and backward directions; both read their inputs in
    time order, the backward cell from the last step to the first. Each step's input projection
    x_t W_in runs inside the loop (no (2K, T, B, 3H) projection is stored).

    Args:
        inputs: (K, T B, n) worker k's inputs, read by both of its cells, time-major (rows
            t B ... t B + B - 1 are step t), contiguous; a column of ones makes the bias a row of
            w_in (see `cell_inputs`).
        w_in: (2K, n, 3H) input weights (bias row included).
        h0: (2K, B, H) initial states.
        w_gate: (2K, H, 2H), w_cand: (2K, H, H) recurrent weights.
        clip: state bound.
        final_only: return only the final states (K, B, H) each: fwd after x[T - 1], bwd after
            x[0] (their gradients then reach the loop at those steps alone: no (K, B, T, H)
            zeros to fill and read).
    Returns:
        fwd (K, B, T, H): state after x[:t + 1];  bwd (K, B, T, H): state after x[t:] (time order).
    Raises:
        RuntimeError: without the C++ kernels (float32 on CPU only).
    """
    if kernels_for(inputs) is None:
        raise RuntimeError("bidirectional_sequence needs the C++ kernels (float32 on CPU)")
    return _BidirectionalSequence.apply(
        inputs.contiguous(), w_in.contiguous(), h0, w_gate, w_cand, float(clip), bool(final_only)
    )
