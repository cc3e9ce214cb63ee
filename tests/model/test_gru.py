"""Population-batched blocks checked against slow per-worker references written from their formulas,
and against torch.nn.GRUCell where the two GRU variants provably coincide."""

from __future__ import annotations

import pytest
import torch

from autolfads.model.gru import BidirectionalGRU, ClippedGRUCell
from autolfads.model.linear import BatchedLinear, per_worker
from autolfads.model.ops import REFERENCE

worker_dropout = REFERENCE.dropout


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise(module: torch.nn.Module, g: torch.Generator, scale: float = 0.7) -> None:
    """Give every parameter (biases and h0 included) distinct non-zero values."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _ref_gru_step(cell: ClippedGRUCell, row: int, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One step of the LFADS GRU for one cell row and one trial, straight from the docstring:

    r = sig(x W_xr + h W_hr + b_r), u = sig(x W_xu + h W_hu + b_u),
    c = tanh(x W_xc + (r * h) W_hc + b_c), h' = clip(u h + (1 - u) c).
    """
    H = cell.hidden_size
    wx, b = cell.input_weight[row], cell.bias[row]
    wg, wc = cell.gate_weight[row], cell.candidate_weight[row]
    r = torch.sigmoid(x @ wx[:, :H] + h @ wg[:, :H] + b[:H])
    u = torch.sigmoid(x @ wx[:, H : 2 * H] + h @ wg[:, H:] + b[H : 2 * H])
    c = torch.tanh(x @ wx[:, 2 * H :] + (r * h) @ wc + b[2 * H :])
    return torch.clamp(u * h + (1.0 - u) * c, -cell.clip, cell.clip)


def _ref_gru_run(
    cell: ClippedGRUCell, row: int, xs: torch.Tensor, h0: torch.Tensor
) -> torch.Tensor:
    """Run `_ref_gru_step` over xs (B, T, in), one trial at a time; returns states (B, T, H)."""
    out = torch.empty(xs.shape[0], xs.shape[1], cell.hidden_size, dtype=xs.dtype)
    for b in range(xs.shape[0]):
        h = h0
        for t in range(xs.shape[1]):
            h = _ref_gru_step(cell, row, xs[b, t], h)
            out[b, t] = h
    return out


# ---------------------------------------------------------------- BatchedLinear


@pytest.mark.parametrize("bias", [True, False])
def test_batched_linear_equals_separate_affine_maps(bias):
    g = _gen(0)
    K, B, T, n_in, n_out = 3, 4, 5, 6, 7
    layer = BatchedLinear(K, n_in, n_out, bias=bias).double()
    _randomise(layer, g)
    x = torch.randn(K, B, T, n_in, generator=g, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (K, B, T, n_out)
    for k in range(K):
        expected = x[k] @ layer.weight[k] + (layer.bias[k] if bias else 0.0)
        torch.testing.assert_close(y[k], expected, rtol=1e-12, atol=1e-12)


def test_batched_linear_without_middle_axes():
    g = _gen(1)
    layer = BatchedLinear(2, 3, 4).double()
    _randomise(layer, g)
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, 4)
    for k in range(2):
        torch.testing.assert_close(y[k], x[k] @ layer.weight[k] + layer.bias[k])


def test_batched_linear_default_init_scale():
    layer = BatchedLinear(4, 400, 50)
    assert layer.weight.std().item() == pytest.approx(1 / 20, rel=0.05)
    assert torch.equal(layer.bias, torch.zeros(4, 50))


# ---------------------------------------------------------------- ClippedGRUCell


def test_gru_cell_initial_update_bias_is_one():
    cell = ClippedGRUCell(2, 3, 5)
    assert torch.equal(cell.bias[:, 5:10], torch.ones(2, 5))
    assert torch.equal(cell.bias[:, :5], torch.zeros(2, 5))
    assert torch.equal(cell.bias[:, 10:], torch.zeros(2, 5))


@pytest.mark.parametrize("clip", [100.0, 0.3])
def test_gru_cell_step_matches_docstring_formulas(clip):
    g = _gen(2)
    K, B, n_in, H = 3, 4, 5, 6
    cell = ClippedGRUCell(K, n_in, H, clip=clip).double()
    _randomise(cell, g, scale=0.8)
    x = 3.0 * torch.randn(K, B, n_in, generator=g, dtype=torch.float64)
    h = torch.randn(K, B, H, generator=g, dtype=torch.float64).clamp(-clip, clip)
    h_new = cell.step(cell.project_input(x, (B,)), h)
    for k in range(K):
        for b in range(B):
            expected = _ref_gru_step(cell, k, x[k, b], h[k, b])
            torch.testing.assert_close(h_new[k, b], expected, rtol=1e-12, atol=1e-12)
    assert h_new.abs().max() <= clip
    if clip < 1:  # tight clip: some states sit exactly on the bound
        assert (h_new.abs() == clip).any()


def test_gru_cell_state_stays_clipped_over_many_steps():
    g = _gen(3)
    cell = ClippedGRUCell(2, 3, 4, clip=0.25)
    _randomise(cell, g, scale=3.0)
    h = torch.zeros(2, 5, 4)
    xs = cell.project_input(5 * torch.randn(2, 5, 20, 3, generator=g), (5, 20))
    for x_t in xs.unbind(2):
        h = cell.step(x_t, h)
        assert h.abs().max() <= 0.25


def test_gru_cell_equals_torch_grucell_when_reset_gate_is_saturated_open():
    """With r = 1 the two places of the reset gate agree; torch.nn.GRUCell is then an oracle."""
    g = _gen(4)
    n_in, H, B = 4, 5, 6
    cell = ClippedGRUCell(1, n_in, H, clip=1e6).double()
    _randomise(cell, g)
    with torch.no_grad():
        cell.bias[0, :H] = 60.0  # sigmoid(60 + small) == 1.0 exactly in float64
    ref = torch.nn.GRUCell(n_in, H).double()
    with torch.no_grad():
        w_hr, w_hu = cell.gate_weight[0].split(H, dim=-1)
        ref.weight_ih.copy_(cell.input_weight[0].T)  # torch rows [r, z, n] = our columns [r, u, c]
        ref.bias_ih.copy_(cell.bias[0])
        ref.weight_hh.copy_(torch.cat([w_hr, w_hu, cell.candidate_weight[0]], dim=-1).T)
        ref.bias_hh.zero_()
    x = torch.randn(B, n_in, generator=g, dtype=torch.float64)
    h = torch.randn(B, H, generator=g, dtype=torch.float64)
    ours = cell.step(cell.project_input(x[None], (B,)), h[None])[0]
    torch.testing.assert_close(ours, ref(x, h), rtol=1e-12, atol=1e-12)

    # With a working reset gate the LFADS cell (reset before the product) is a different function.
    with torch.no_grad():
        cell.bias[0, :H] = 0.0
        ref.bias_ih[:H] = 0.0
    ours = cell.step(cell.project_input(x[None], (B,)), h[None])[0]
    assert (ours - ref(x, h)).abs().max() > 1e-3


def test_gru_cell_project_input_without_input_is_bias():
    g = _gen(5)
    cell = ClippedGRUCell(2, 0, 3)
    _randomise(cell, g)
    proj = cell.project_input(None, (4, 7))
    assert proj.shape == (2, 4, 7, 9)
    torch.testing.assert_close(proj, cell.bias[:, None, None, :].expand(2, 4, 7, 9))


def test_gru_cell_project_input_matches_affine_map():
    g = _gen(6)
    cell = ClippedGRUCell(2, 3, 4).double()
    _randomise(cell, g)
    x = torch.randn(2, 5, 6, 3, generator=g, dtype=torch.float64)
    proj = cell.project_input(x, (5, 6))
    for k in range(2):
        torch.testing.assert_close(proj[k], x[k] @ cell.input_weight[k] + cell.bias[k])


# ---------------------------------------------------------------- BidirectionalGRU


def _bidirectional(K: int, n_in: int, H: int, seed: int) -> BidirectionalGRU:
    gru = BidirectionalGRU(K, n_in, H, clip=5.0).double()
    _randomise(gru, _gen(seed))
    return gru


def test_bidirectional_gru_directions_match_reference_runs():
    K, B, T, n_in, H = 2, 3, 6, 4, 5
    gru = _bidirectional(K, n_in, H, seed=7)
    x = torch.randn(K, B, T, n_in, generator=_gen(8), dtype=torch.float64)
    fwd, bwd = gru(x)
    assert fwd.shape == bwd.shape == (K, B, T, H)
    for k in range(K):
        # rows 2k (forward) and 2k + 1 (backward) hold worker k's two directions
        expected_fwd = _ref_gru_run(gru.cell, 2 * k, x[k], gru.h0[2 * k])
        reversed_run = _ref_gru_run(gru.cell, 2 * k + 1, x[k].flip(1), gru.h0[2 * k + 1])
        torch.testing.assert_close(fwd[k], expected_fwd, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bwd[k], reversed_run.flip(1), rtol=1e-12, atol=1e-12)


def test_bidirectional_gru_backward_state_at_t_sees_only_the_future():
    K, B, T, n_in, H = 1, 2, 6, 3, 4
    gru = _bidirectional(K, n_in, H, seed=9)
    x = torch.randn(K, B, T, n_in, generator=_gen(10), dtype=torch.float64)
    fwd, bwd = gru(x)
    x2 = x.clone()
    x2[:, :, 3] += 1.0  # change step 3 only
    fwd2, bwd2 = gru(x2)
    torch.testing.assert_close(fwd2[:, :, :3], fwd[:, :, :3])
    torch.testing.assert_close(bwd2[:, :, 4:], bwd[:, :, 4:])
    assert (fwd2[:, :, 3:] - fwd[:, :, 3:]).abs().amax(dim=(0, 1, 3)).min() > 0
    assert (bwd2[:, :, :4] - bwd[:, :, :4]).abs().amax(dim=(0, 1, 3)).min() > 0


def test_bidirectional_gru_final_states_are_ends_of_the_sequences():
    K, B, T, n_in, H = 3, 2, 5, 4, 3
    gru = _bidirectional(K, n_in, H, seed=11)
    x = torch.randn(K, B, T, n_in, generator=_gen(12), dtype=torch.float64)
    fwd, bwd = gru(x, keep_states=True)
    fin_fwd, fin_bwd = gru(x, keep_states=False)
    assert fin_fwd.shape == fin_bwd.shape == (K, B, H)
    torch.testing.assert_close(fin_fwd, fwd[:, :, -1], rtol=0, atol=0)
    torch.testing.assert_close(fin_bwd, bwd[:, :, 0], rtol=0, atol=0)


def test_bidirectional_gru_recurrent_weights_cover_both_directions():
    gru = BidirectionalGRU(3, 2, 4)
    weights = gru.recurrent_weights()
    assert [w.shape for w in weights] == [(6, 4, 8), (6, 4, 4)]
    assert all(w is gru.cell.gate_weight or w is gru.cell.candidate_weight for w in weights)


# ---------------------------------------------------------------- worker_dropout, per_worker


def test_per_worker_view_broadcasts_along_leading_axis():
    v = torch.tensor([1.0, 2.0, 3.0])
    like = torch.zeros(3, 4, 5)
    assert per_worker(v, like).shape == (3, 1, 1)
    torch.testing.assert_close((like + per_worker(v, like))[:, 2, 3], v)


def test_worker_dropout_is_identity_outside_training():
    x = torch.randn(2, 10, 5)
    assert worker_dropout(x, torch.tensor([0.5, 0.9]), training=False) is x


def test_worker_dropout_rates_are_per_worker_and_inverted():
    torch.manual_seed(0)
    x = torch.rand(3, 100, 100) + 0.5  # no exact zeros
    rate = torch.tensor([0.0, 0.25, 0.75])
    y = worker_dropout(x, rate, training=True)
    assert torch.equal(y[0], x[0])
    for k in (1, 2):
        kept = y[k] != 0
        frac_dropped = 1.0 - kept.float().mean().item()
        assert frac_dropped == pytest.approx(rate[k].item(), abs=0.02)
        torch.testing.assert_close(y[k][kept], x[k][kept] / (1.0 - rate[k]))
