"""Population-batched building blocks: every parameter has a leading worker axis K.

K workers with different weights step through one loop together; one model is K = 1. Matmuls are
batched (`torch.baddbmm`) so K small products are one kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from autolfads.model.fused import kernels_for
from autolfads.model.gru_kernels import (
    bidirectional_sequence,
    gru_sequence,
    gru_step,
    last_dim_contiguous,
)

__all__ = [
    "BatchedLinear",
    "ClippedGRUCell",
    "BidirectionalGRU",
    "cell_inputs",
    "worker_dropout",
    "lagged_dropout",
    "dropout_mask_like",
    "per_worker",
    "draw_seed",
    "uniform_like",
    "normal_like",
]


def per_worker(value: Tensor, like: Tensor) -> Tensor:
    """View a per-worker vector (K,) so it broadcasts against `like` (K, ...)."""
    return value.view(value.shape[0], *([1] * (like.dim() - 1)))


def draw_seed(generator: torch.Generator | None = None) -> int:
    """One seed for the C++ kernels' counter-based random numbers, drawn from `generator`."""
    return int(torch.randint(2**62, (1,), generator=generator))


def uniform_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """U(0, 1) noise shaped like x, drawn from `generator` (the global RNG when None).

    For float32 on the CPU with the C++ kernels, `generator` gives one seed and a counter-based
    hash in C++ makes the numbers (in parallel; torch's own CPU generator is sequential).
    """
    kernels = kernels_for(x)
    if kernels is None:
        return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype)
    kernels.uniform_fill(out, draw_seed(generator))
    return out


def normal_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N(0, 1) noise shaped like x, drawn from `generator` (the global RNG when None)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def worker_dropout(
    x: Tensor, rate: Tensor, training: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Inverted dropout with a separate rate per worker.

    Args:
        x: (K, ...) activations.
        rate: (K,) drop probability of each worker.
        training: when False, `x` is returned unchanged.
        generator: source of the dropout masks.
    """
    if not training:
        return x
    if kernels_for(x) is not None:
        return x * dropout_mask_like(x, rate, generator)
    keep = 1.0 - per_worker(rate.to(x.dtype), x)
    mask = uniform_like(x, generator) < keep
    return x * mask / keep.clamp_min(1e-6)


def _lagged(fwd: Tensor, bwd: Tensor, lag: int, total_steps: int) -> Tensor:
    """Controller input per step: forward state from t - lag, backward state from t + lag.

    The PyTorch form of `lagged_dropout`'s lag (and its reference in the tests).

    Args:
        fwd, bwd: (K, B, T_enc, H) encoder states in time order.
        lag: steps of lag (0 = none).
        total_steps: T_rec >= T_enc; steps past the encoder's end get zeros (forward prediction).
    Returns:
        (K, B, total_steps, 2H), stored time-major (a transposed view of (K, total_steps, B, 2H))
    """
    k, b, t, h = fwd.shape
    out = fwd.new_zeros(k, total_steps, b, 2 * h).transpose(1, 2)
    out[:, :, lag:t, :h] = fwd[:, :, : t - lag]
    out[:, :, : t - lag, h:] = bwd[:, :, lag:]
    return out


def lagged_dropout(
    fwd: Tensor,
    bwd: Tensor,
    lag: int,
    total_steps: int,
    rate: Tensor,
    training: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The controller's input: lagged bidirectional encoder states, with per-worker dropout.

    Step t gets the forward state of step t - lag and the backward state of step t + lag (zeros
    where those steps are outside the encoder's window, e.g. forward-prediction steps past
    T_enc), then inverted dropout at rate_k: `worker_dropout(_lagged(fwd, bwd, lag, total_steps),
    rate, training, generator)`. For float32 on the CPU with the C++ kernels it is one pass each
    way (no zero-filled copy, no stored mask: the backward draws the mask again from its seed),
    with the same random numbers and values as that composition; otherwise it is the composition.

    Args:
        fwd, bwd: (K, B, T_enc, H) encoder states in time order (views with any strides).
        lag: steps of lag, >= 0.
        total_steps: T_rec >= T_enc.
        rate: (K,) drop probability of each worker.
        training: apply dropout (and draw its seed from `generator`) when True.
        generator: source of the dropout mask.
    Returns:
        (K, B, T_rec, 2H): forward states in [..., :H], backward states in [..., H:]; on the C++
        path stored time-major (a transposed view of (K, T_rec, B, 2H)), as the recurrence reads it.
    """
    if kernels_for(fwd) is None or kernels_for(bwd) is None:
        return worker_dropout(_lagged(fwd, bwd, lag, total_steps), rate, training, generator)
    seed = draw_seed(generator) if training else 0
    rate32 = rate.detach().to(fwd.dtype).contiguous()
    return _LaggedDropout.apply(fwd, bwd, int(lag), int(total_steps), rate32, seed, training)


class _LaggedDropout(torch.autograd.Function):
    """`lagged_dropout` in C++: the mask is made again from the seed in the backward."""

    @staticmethod
    def forward(ctx, fwd, bwd, lag, total_steps, rate, seed, training):  # type: ignore[override]
        kernels = kernels_for(fwd)
        k, b, _, h = fwd.shape
        out = fwd.new_empty(k, total_steps, b, 2 * h)
        kernels.lag_dropout_forward(
            last_dim_contiguous(fwd), last_dim_contiguous(bwd), lag, rate, seed, training, out
        )
        ctx.kernels, ctx.lag, ctx.seed, ctx.training = kernels, lag, seed, training
        ctx.enc_shape = fwd.shape
        ctx.save_for_backward(rate)
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, g_out):  # type: ignore[override]
        (rate,) = ctx.saved_tensors
        g_fwd = g_out.new_empty(ctx.enc_shape)
        g_bwd = g_out.new_empty(ctx.enc_shape)
        ctx.kernels.lag_dropout_backward(
            last_dim_contiguous(g_out), ctx.lag, rate, ctx.seed, ctx.training, g_fwd, g_bwd
        )
        return g_fwd, g_bwd, None, None, None, None, None


def dropout_mask_like(x: Tensor, rate: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Inverted-dropout mask (K, ...) shaped like x: 1 / (1 - rate_k) where kept, 0 where dropped.

    Only x's shape, dtype and device are used (x may be uninitialised). With the C++ kernels
    (float32 CPU) one pass makes it from one seed of `generator`, keeping the elements whose
    `uniform_like` number is below 1 - rate_k; otherwise it is computed from `uniform_like` in
    PyTorch.

    Args:
        x: (K, ...) tensor giving the shape.  rate: (K,) drop probability of each worker.
    """
    kernels = kernels_for(x)
    if kernels is None:
        keep = 1.0 - per_worker(rate.to(x.dtype), x)
        return (uniform_like(x, generator) < keep).to(x.dtype) / keep.clamp_min(1e-6)
    out = torch.empty(x.shape, dtype=x.dtype)
    kernels.dropout_mask(out, rate.detach().to(x.dtype).contiguous(), draw_seed(generator))
    return out


class BatchedLinear(nn.Module):
    """K independent affine maps `y_k = x_k W_k + b_k`.

    Args:
        n_workers: K.
        in_features, out_features: sizes of x and y.
        bias: learn b_k when True.
        weight_std: initial N(0, std^2) weights; default 1 / sqrt(in_features).

    Shapes: x (K, ..., in_features) -> y (K, ..., out_features).
    """

    def __init__(
        self,
        n_workers: int,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_std: float | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        std = weight_std if weight_std is not None else 1.0 / math.sqrt(max(in_features, 1))
        self.weight = nn.Parameter(torch.randn(n_workers, in_features, out_features) * std)
        self.bias = nn.Parameter(torch.zeros(n_workers, out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        k, *middle, _ = x.shape
        flat = x.reshape(k, -1, self.in_features)  # (K, M, in)
        if self.bias is None:
            out = torch.bmm(flat, self.weight)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight)
        return out.reshape(k, *middle, self.out_features)


class ClippedGRUCell(nn.Module):
    """The LFADS GRU cell, K workers at once, with its state clipped to [-clip, clip].

    r = sigmoid(x W_xr + h W_hr + b_r)           (reset gate)
    u = sigmoid(x W_xu + h W_hu + b_u)           (update gate, b_u starts at 1: remember by default)
    c = tanh(x W_xc + (r * h) W_hc + b_c)        (candidate; reset applied before the recurrent product)
    h' = clip(u * h + (1 - u) * c)

    The input projection is split from the step so that a whole input sequence can be projected in one
    matmul (`project_input`) before the time loop (`step`).

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
        """x W_x + b for every step at once.

        Args:
            x: (K, B, ..., input_size), or None when input_size is 0.
            batch_shape: (B, ...) used when x is None.
        Returns:
            (K, B, ..., 3H)
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
        """One time step.

        Args:
            projected_input: (K, B, 3H) from `project_input`.
            h: (K, B, H) previous state.
        Returns:
            (K, B, H) next state.
        """
        return gru_step(projected_input, h, self.gate_weight, self.candidate_weight, self.clip)

    def sequence(self, projected_inputs: Tensor, h0: Tensor) -> Tensor:
        """Every state over a sequence whose projected inputs are all known.

        Args:
            projected_inputs: (K, B, T, 3H) from `project_input`.
            h0: (K, B, H) initial state.
        Returns:
            (K, B, T, H) the state after each step.
        """
        return gru_sequence(
            projected_inputs, h0, self.gate_weight, self.candidate_weight, self.clip
        )


def cell_inputs(x: Tensor) -> Tensor:
    """The input of a `BidirectionalGRU`'s cells on the C++ path, in one copy.

    (K, B, T, n) -> (K, T B, n + 1): worker k's input time-major, read by both of its cells
    (2k and 2k + 1), with a column of ones so that each cell's bias is a row of its input weight
    (its gradient comes with the weight's, not from a separate sum over all T B rows).
    """
    k, b, t, n_in = x.shape
    out = x.new_empty(k, t, b, n_in + 1)
    out[..., :n_in] = x.transpose(1, 2)
    out[..., n_in] = 1.0
    return out.view(k, t * b, n_in + 1)


class BidirectionalGRU(nn.Module):
    """A forward and a backward `ClippedGRUCell` over a sequence, run as one batch of 2K cells.

    The two directions of worker k are stored as rows 2k and 2k + 1 of one cell, so a plain index copy
    along the worker axis still moves whole workers.

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

    def forward(
        self, x: Tensor, keep_states: bool = True, cells: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run both directions.

        Args:
            x: (K, B, T, input_size).
            keep_states: return every step's states; otherwise only the final ones.
            cells: `cell_inputs(x)` if already made (encoders of the same input share it); used
                on the C++ path only.
        Returns:
            (fwd, bwd): (K, B, T, H) each, or (K, B, H) each (final states: fwd after x[T-1],
            bwd after x[0]) when keep_states is False.
        """
        k, b, t, _ = x.shape
        h0 = self.h0.unsqueeze(1).expand(2 * k, b, self.hidden_size)
        if kernels_for(x) is not None:
            cells = cells if cells is not None else cell_inputs(x)
            return self._both_in_cpp(h0, cells, keep_states)
        fwd, bwd = self._both_stacked(x, h0)
        if not keep_states:
            return fwd[:, :, -1], bwd[:, :, 0]
        return fwd, bwd

    def _both_in_cpp(self, h0: Tensor, cells: Tensor, keep_states: bool) -> tuple[Tensor, Tensor]:
        """The C++ path: each direction reads x in time order (the backward cell runs in reverse),
        so no flipped copy of the input or of the backward states is made, and projects each step
        inside the loop."""
        cell = self.cell
        return bidirectional_sequence(
            cells,
            torch.cat([cell.input_weight, cell.bias.unsqueeze(1)], dim=1),
            h0,
            cell.gate_weight,
            cell.candidate_weight,
            cell.clip,
            final_only=not keep_states,
        )

    def _both_stacked(self, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        """The PyTorch path: the input and its time-reversal as 2K cells of one GRU sequence."""
        k, b, t, _ = x.shape
        # Projected time-major, (2K, T, B, 3H), the layout of the recurrence's tapes, so that the
        # input gradients come back in place: no transposing copies of (T, B, 3H) blocks.
        x_tm = x.transpose(1, 2)
        both = torch.stack([x_tm, x_tm.flip(1)], dim=1).reshape(2 * k, t, b, -1)
        projected = self.cell.project_input(both, (t, b)).transpose(1, 2)  # (2K, B, T, 3H) view
        states = self.cell.sequence(projected, h0).reshape(k, 2, b, t, self.hidden_size)
        return states[:, 0], states[:, 1].flip(2)
