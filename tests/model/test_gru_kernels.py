"""The hand-written GRU backward passes against autograd on the plain formulas."""

import pytest
import torch

from autolfads.model.gru_kernels import gru_sequence, gru_step, gru_step_reference, time_sum

K, B, T, H = 2, 3, 6, 4


def _inputs(seed: int, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_()

    return r(K, B, 3 * H), r(K, B, H), r(K, H, 2 * H), r(K, H, H), r(K, B, T, 3 * H)


@pytest.mark.parametrize("clip", [0.7, 5.0])
def test_step_matches_autograd_reference(clip):
    x, h, wg, wc, _ = _inputs(0)
    out = gru_step(x, h, wg, wc, clip)
    ref = gru_step_reference(x, h, wg, wc, clip)
    assert torch.allclose(out, ref, atol=1e-12)
    if clip < 1:  # some states must actually be clipped for the test to mean something
        assert (ref.abs() == clip).any()
    g_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, h, wg, wc), g_out)
    ref_grads = torch.autograd.grad(ref, (x, h, wg, wc), g_out)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_step_gradcheck():
    x, h, wg, wc, _ = _inputs(1)
    assert torch.autograd.gradcheck(lambda *a: gru_step(*a, 1.5), (x, h, wg, wc))


@pytest.mark.parametrize("clip", [0.7, 5.0])
def test_sequence_matches_step_by_step_reference(clip):
    _, h, wg, wc, xs = _inputs(2)

    def reference(xs, h, wg, wc):
        states = []
        for x in xs.unbind(2):
            h = gru_step_reference(x, h, wg, wc, clip)
            states.append(h)
        return torch.stack(states, 2)

    out = gru_sequence(xs, h, wg, wc, clip)
    ref = reference(xs, h, wg, wc)
    assert torch.allclose(out, ref, atol=1e-12)
    g_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (xs, h, wg, wc), g_out)
    ref_grads = torch.autograd.grad(ref, (xs, h, wg, wc), g_out)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_sequence_gradcheck():
    _, h, wg, wc, xs = _inputs(3)
    assert torch.autograd.gradcheck(lambda *a: gru_sequence(*a, 1.5), (xs, h, wg, wc))


@pytest.mark.parametrize("k", [1, 3])
def test_time_sum_matches_einsum_on_strided_slices(k):
    a = torch.randn(k, 8, 5, 4, dtype=torch.float64)[:, :-1]  # states[:, :-1], as the tapes pass
    b = torch.randn(k, 7, 5, 9, dtype=torch.float64)[..., 2:8]  # a slice of the gate gradients
    expected = torch.einsum("ktbi,ktbj->kij", a, b)
    torch.testing.assert_close(time_sum(a, b), expected)
