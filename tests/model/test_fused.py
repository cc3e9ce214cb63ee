"""The C++ GRU kernels (float32, CPU) against the float64 autograd reference, and the fallback when
they cannot be built or are switched off."""

import logging

import pytest
import torch

from autolfads.model import fused
from autolfads.model.generator_loop import (
    LoopWeights,
    controlled_generator,
    controlled_generator_reference,
)
from autolfads.model.gru_kernels import GRUTape, gru_sequence, gru_step_reference

needs_kernels = pytest.mark.skipif(
    fused.load_kernels() is None, reason="no C++ toolchain here: the PyTorch path is tested alone"
)


def _float32_leaves(leaves):
    return [t.detach().float().requires_grad_() for t in leaves]


def _grads(outputs, leaves, probes):
    total = sum((o * p.to(o.dtype)).sum() for o, p in zip(outputs, probes, strict=True))
    return torch.autograd.grad(total, leaves)


@needs_kernels
def test_float32_cpu_tapes_use_the_kernels_and_float64_does_not():
    assert GRUTape(torch.zeros(1, 2, 3), 4, 5.0).kernels is not None
    assert GRUTape(torch.zeros(1, 2, 3, dtype=torch.float64), 4, 5.0).kernels is None


@needs_kernels
@pytest.mark.parametrize("clip", [1.0, 5.0])
def test_sequence_matches_the_float64_reference(clip):
    gen = torch.Generator().manual_seed(0)
    k, b, t, h = 2, 5, 9, 6

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    xs, h0, wg, wc = r(k, b, t, 3 * h), r(k, b, h), r(k, h, 2 * h, scale=0.8), r(k, h, h, scale=0.8)
    states, hs = [], h0
    for step in range(t):
        hs = gru_step_reference(xs[:, :, step], hs, wg, wc, clip)
        states.append(hs)
    ref = torch.stack(states, dim=2)
    if clip == 1.0:
        assert bool((ref.abs() >= clip).any())  # the clipped branch is exercised
    leaves32 = _float32_leaves([xs, h0, wg, wc])
    out = gru_sequence(*leaves32, clip)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    probe = [torch.randn(ref.shape, generator=gen, dtype=torch.float64)]
    grads64 = _grads([ref], [xs, h0, wg, wc], probe)
    for a, e in zip(_grads([out], leaves32, probe), grads64, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5)


@needs_kernels
def test_controlled_generator_matches_the_float64_reference():
    gen = torch.Generator().manual_seed(0)
    k, b, t, c, g, u = 2, 4, 8, 4, 5, 2

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    shapes = [(g, 3 * c), (c, 2 * c), (c, c), (c, 2 * u), (2 * u,), (u, 3 * g), (g, 2 * g), (g, g)]
    weights = LoopWeights(*[r(k, *shape, scale=0.5) for shape in shapes])
    inputs = [r(k, b, t, 3 * c), r(k, b, t, 3 * g), r(k, b, g, scale=2.0), r(k, b, c)]
    masks = (torch.rand(k, b, t + 1, g, generator=gen, dtype=torch.float64) > 0.3) / 0.7
    noise = torch.randn(k, b, t, u, generator=gen, dtype=torch.float64)
    clip = 1.5
    ref = controlled_generator_reference(*inputs, weights, masks, noise, clip)
    assert any(bool((o.abs() >= clip).any()) for o in ref[:2])
    leaves64 = [*inputs, *weights.as_tuple()]
    leaves32 = _float32_leaves(leaves64)
    inputs32, weights32 = leaves32[:4], LoopWeights(*leaves32[4:])
    out = controlled_generator(*inputs32, weights32, masks.float(), noise.float(), clip)
    for a, e in zip(out, ref, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5)
    gen = torch.Generator().manual_seed(2)
    probes = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in ref]
    for a, e in zip(_grads(out, leaves32, probes), _grads(ref, leaves64, probes), strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("AUTOLFADS_FUSED", "0")
    assert fused.load_kernels() is None  # nothing is built, not even by a driver warming up
    assert fused.kernels_for(torch.zeros(2)) is None
    assert GRUTape(torch.zeros(1, 2, 3), 4, 5.0).kernels is None


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, caplog):
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(fused, "_state", {"module": None, "failure": None})
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(fused, "_already_built", lambda name: True)
    with caplog.at_level(logging.WARNING, logger="autolfads"):
        assert fused.load_kernels() is None
        assert fused.load_kernels() is None  # tried once, remembered
        tape = GRUTape(torch.zeros(1, 2, 3), 4, 5.0)
    assert tape.kernels is None and tape.pre is not None
    assert [r.getMessage() for r in caplog.records] == [
        "C++ GRU kernels unavailable, using the PyTorch path "
        "(Ninja is required to load C++ extensions)"
    ]
