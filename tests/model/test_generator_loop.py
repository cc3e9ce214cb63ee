"""The fused controller-generator loop against its plain-autograd reference."""

import pytest
import torch

from autolfads.model.generator_loop import (
    LoopWeights,
    controlled_generator,
    controlled_generator_reference,
    project_steps,
)


def _problem(k=2, b=3, t=7, c=4, g=5, u=2, with_masks=True, with_noise=True, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    weights = LoopWeights(
        feedback=r(k, g, 3 * c, scale=0.5),
        con_gate=r(k, c, 2 * c, scale=0.5),
        con_cand=r(k, c, c, scale=0.5),
        co_weight=r(k, c, 2 * u, scale=0.5),
        co_bias=r(k, 2 * u, scale=0.5),
        co_to_gen=r(k, u, 3 * g, scale=0.5),
        gen_gate=r(k, g, 2 * g, scale=0.5),
        gen_cand=r(k, g, g, scale=0.5),
    )
    masks = None
    if with_masks:
        masks = (torch.rand(k, b, t + 1, g, generator=gen, dtype=torch.float64) > 0.3) / 0.7
    noise = torch.randn(k, b, t, u, generator=gen, dtype=torch.float64) if with_noise else None
    inputs = (r(k, b, t, 3 * c), r(k, b, t, 3 * g), r(k, b, g, scale=2.0), r(k, b, c))
    return inputs, weights, masks, noise


def _leaves(inputs, weights):
    return [*inputs, *weights.as_tuple()]


@pytest.mark.parametrize("with_masks", [True, False])
@pytest.mark.parametrize("with_noise", [True, False])
def test_outputs_and_gradients_match_autograd(with_masks, with_noise):
    inputs, weights, masks, noise = _problem(with_masks=with_masks, with_noise=with_noise)
    clip = 1.5  # small enough that some states hit the clip
    fused = controlled_generator(*inputs, weights, masks, noise, clip)
    ref = controlled_generator_reference(*inputs, weights, masks, noise, clip)
    assert any(bool((o.abs() >= clip).any()) for o in fused[:2])
    gen = torch.Generator().manual_seed(1)
    probes = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in ref]
    for a, e in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    leaves = _leaves(inputs, weights)
    g_fused = torch.autograd.grad(
        sum((o * p).sum() for o, p in zip(fused, probes, strict=True)), leaves
    )
    g_ref = torch.autograd.grad(
        sum((o * p).sum() for o, p in zip(ref, probes, strict=True)), leaves
    )
    for a, e in zip(g_fused, g_ref, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_gradcheck_through_every_output():
    inputs, weights, masks, noise = _problem(k=1, b=2, t=3, c=2, g=3, u=1)

    def f(*leaves):
        w = LoopWeights(*leaves[4:])
        return controlled_generator(*leaves[:4], w, masks, noise, 1.5)

    assert torch.autograd.gradcheck(f, tuple(_leaves(inputs, weights)))


def test_runs_without_gradients_and_matches():
    inputs, weights, masks, noise = _problem()
    with torch.no_grad():
        fused = controlled_generator(*inputs, weights, masks, noise, 5.0)
        ref = controlled_generator_reference(*inputs, weights, masks, noise, 5.0)
    for a, e in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, e)


def test_gradients_when_only_some_outputs_are_used():
    """Unused outputs send no gradient (None): the dropped states and the samples alone."""
    inputs, weights, masks, noise = _problem()
    leaves = _leaves(inputs, weights)
    fused = controlled_generator(*inputs, weights, masks, noise, 1.5)
    ref = controlled_generator_reference(*inputs, weights, masks, noise, 1.5)
    gen = torch.Generator().manual_seed(2)
    probes = [torch.randn(ref[i].shape, generator=gen, dtype=torch.float64) for i in (3, 4)]
    g_fused = torch.autograd.grad(
        (fused[3] * probes[0]).sum() + (fused[4] * probes[1]).sum(), leaves
    )
    g_ref = torch.autograd.grad((ref[3] * probes[0]).sum() + (ref[4] * probes[1]).sum(), leaves)
    for a, e in zip(g_fused, g_ref, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: the C++ loop if built
def test_an_input_shared_by_all_trials_and_steps_gets_its_summed_gradient(dtype):
    inputs, weights, masks, noise = _problem(b=4, t=6)
    con_x, full_gen_x, gen_init, con_h0 = inputs
    row = full_gen_x[:, :1, :1].detach().clone().requires_grad_()  # (K, 1, 1, 3G): a bias
    leaves = [con_x, row, gen_init, con_h0, *weights.as_tuple()]
    ref = controlled_generator_reference(
        con_x, row.expand_as(full_gen_x), gen_init, con_h0, weights, masks, noise, 1.5
    )
    cast = [x.detach().to(dtype).requires_grad_() for x in leaves]
    out = controlled_generator(
        *cast[:4], LoopWeights(*cast[4:]), masks.to(dtype), noise.to(dtype), 1.5
    )
    gen = torch.Generator().manual_seed(1)
    probes = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in ref]
    g_ref = torch.autograd.grad(
        sum((o * p).sum() for o, p in zip(ref, probes, strict=True)), leaves
    )
    loss = sum((o * p.to(dtype)).sum() for o, p in zip(out, probes, strict=True))
    g_out = torch.autograd.grad(loss, cast)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert g_out[1].shape == row.shape
    for a, e in zip([*out, *g_out], [*ref, *g_ref], strict=True):
        torch.testing.assert_close(a.double(), e, rtol=tol, atol=tol)


@pytest.mark.parametrize("time_major", [True, False])
def test_project_steps_is_the_affine_map_of_every_row_and_step(time_major):
    gen = torch.Generator().manual_seed(4)
    k, b, t, n, m = 2, 3, 5, 4, 6
    x = torch.randn(k, t, b, n, generator=gen).transpose(1, 2) if time_major else None
    x = x if x is not None else torch.randn(k, b, t, n, generator=gen)
    weight, bias = torch.randn(k, n, m, generator=gen), torch.randn(k, m, generator=gen)
    out = project_steps(x, weight, bias)
    expected = torch.einsum("kbtn,knm->kbtm", x, weight) + bias[:, None, None]
    torch.testing.assert_close(out, expected)
    # the result keeps the input's storage order (time-major in, time-major out)
    assert out.transpose(1, 2).is_contiguous() == time_major


def test_a_controller_input_projected_by_the_loop_matches_autograd():
    """con_projection on the PyTorch path (float64): projected before the loop, same gradients."""
    inputs, weights, masks, noise = _problem()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    con_w = (torch.randn(2, 5, 12, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()
    con_b = torch.randn(2, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    args = (x, *inputs[1:], weights, masks, noise, 1.5)
    fused = controlled_generator(*args, con_projection=(con_w, con_b))
    ref = controlled_generator_reference(*args, con_projection=(con_w, con_b))
    probes = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in ref]
    leaves = [x, con_w, con_b, *_leaves(inputs[1:], weights)]
    grads = [
        torch.autograd.grad(sum((o * p).sum() for o, p in zip(out, probes, strict=True)), leaves)
        for out in (fused, ref)
    ]
    for a, e in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    for a, e in zip(*grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)
