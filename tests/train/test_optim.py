"""PopulationAdam against torch.optim.Adam (plus torch's clip_grad_norm_) run separately per worker."""

from __future__ import annotations

import io

import pytest
import torch

from autolfads.train.optim import PopulationAdam

F64 = torch.float64
SHAPES = ((3, 4), (5,), (2,))  # per-row shapes; the second parameter has 2 rows per worker
ROWS = (1, 2, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _population(k: int, seed: int = 0, device: str = "cpu") -> list[torch.nn.Parameter]:
    g = _gen(seed)
    return [
        torch.nn.Parameter(torch.randn(k * m, *shape, generator=g, dtype=F64).to(device))
        for m, shape in zip(ROWS, SHAPES, strict=True)
    ]


def _coefs(
    k: int, scale: torch.Tensor | None = None, seed: int = 1, device: str = "cpu"
) -> list[torch.Tensor]:
    """Per-element loss coefficients; `scale` (K,) multiplies each worker's (its gradient size)."""
    g = _gen(seed)
    out = []
    for m, shape in zip(ROWS, SHAPES, strict=True):
        c = torch.randn(k * m, *shape, generator=g, dtype=F64)
        if scale is not None:
            c = c * scale.repeat_interleave(m).view(-1, *([1] * len(shape))).to(F64)
        out.append(c.to(device))
    return out


def _loss(params, coefs) -> torch.Tensor:
    """Separable across elements, so a worker's gradient only depends on its own rows."""
    return sum((c * torch.sin(p) + 0.1 * p**2).sum() for p, c in zip(params, coefs, strict=True))


def _worker_rows(tensors, k: int) -> list[torch.Tensor]:
    return [t[k * m : (k + 1) * m] for t, m in zip(tensors, ROWS, strict=True)]


def _reference_run(params, coefs, k, lr, steps, max_norm=None, betas=(0.9, 0.999), eps=1e-8):
    """Worker k alone, trained with torch.optim.Adam (and clip_grad_norm_ if max_norm)."""
    mine = [torch.nn.Parameter(t.detach().clone()) for t in _worker_rows(params, k)]
    opt = torch.optim.Adam(mine, lr=lr, betas=betas, eps=eps)
    my_coefs = _worker_rows(coefs, k)
    for _ in range(steps):
        opt.zero_grad()
        _loss(mine, my_coefs).backward()
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(mine, max_norm)
        opt.step()
    return mine, opt


def _run(opt: PopulationAdam, params, coefs, steps: int) -> list[torch.Tensor]:
    norms = []
    for _ in range(steps):
        opt.zero_grad()
        _loss(params, coefs).backward()
        norms.append(opt.step())
    return norms


def _assert_worker_equal(params, k, reference, rtol=1e-6, atol=1e-9):
    for ours, ref in zip(_worker_rows(params, k), reference, strict=True):
        torch.testing.assert_close(ours.detach(), ref.detach(), rtol=rtol, atol=atol)


# ---------------------------------------------------------------- Adam equivalence


def test_single_worker_equals_torch_adam_over_several_steps():
    params, coefs = _population(1), _coefs(1)
    lr = torch.tensor([0.05])
    opt = PopulationAdam(params, lr, max_grad_norm=1e9)
    start = [p.detach().clone() for p in params]
    _run(opt, params, coefs, steps=6)
    reference, ref_opt = _reference_run(start, coefs, 0, float(lr[0]), steps=6)
    _assert_worker_equal(params, 0, reference)
    for ours_m, ours_v, ref in zip(opt.exp_avg, opt.exp_avg_sq, reference, strict=True):
        state = ref_opt.state[ref]
        torch.testing.assert_close(ours_m, state["exp_avg"], rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(ours_v, state["exp_avg_sq"], rtol=1e-6, atol=1e-12)
    assert opt.steps.tolist() == [6.0]


def test_custom_betas_and_eps_match_torch_adam():
    params, coefs = _population(1, seed=2), _coefs(1, seed=3)
    start = [p.detach().clone() for p in params]
    lr = torch.tensor([0.01])
    opt = PopulationAdam(params, lr, max_grad_norm=1e9, betas=(0.5, 0.9), eps=1e-3)
    _run(opt, params, coefs, steps=4)
    reference, _ = _reference_run(start, coefs, 0, float(lr[0]), 4, betas=(0.5, 0.9), eps=1e-3)
    _assert_worker_equal(params, 0, reference)


def test_each_worker_follows_torch_adam_at_its_own_learning_rate(device):
    K = 3
    params, coefs = _population(K, seed=4, device=device), _coefs(K, seed=5, device=device)
    start = [p.detach().clone() for p in params]
    lr = torch.tensor([0.1, 0.01, 0.001], device=device)
    opt = PopulationAdam(params, lr, max_grad_norm=1e9)
    _run(opt, params, coefs, steps=5)
    for k in range(K):
        reference, _ = _reference_run(start, coefs, k, float(lr[k]), steps=5)
        _assert_worker_equal(params, k, reference)


def test_learning_rate_tensor_is_shared_with_the_caller():
    params, coefs = _population(2, seed=6), _coefs(2, seed=7)
    start = [p.detach().clone() for p in params]
    lr = torch.tensor([0.01, 0.01])
    opt = PopulationAdam(params, lr, max_grad_norm=1e9)
    assert opt.lr is lr
    lr[1] = 0.0  # in place: the optimiser must see it
    _run(opt, params, coefs, steps=2)
    for ours, before in zip(_worker_rows(params, 1), _worker_rows(start, 1), strict=True):
        assert torch.equal(ours.detach(), before)
    assert not torch.equal(params[0][0], start[0][0])


# ---------------------------------------------------------------- clipping, non-finite gradients


def test_gradient_norm_is_clipped_per_worker(device):
    K, max_norm = 2, 1.0
    scale = torch.tensor([100.0, 0.01])  # worker 0: huge gradient; worker 1: tiny
    params, coefs = _population(K, seed=8, device=device), _coefs(K, scale, 9, device)
    start = [p.detach().clone() for p in params]
    lr = torch.tensor([0.02, 0.02], device=device)
    opt = PopulationAdam(params, lr, max_grad_norm=max_norm)

    opt.zero_grad()
    _loss(params, coefs).backward()
    grads = [p.grad.clone() for p in params]
    expected_norms = torch.stack(
        [torch.cat([g.flatten() for g in _worker_rows(grads, k)]).norm() for k in range(K)]
    )
    norms = opt.step()
    torch.testing.assert_close(norms.double(), expected_norms, rtol=1e-6, atol=0)
    assert norms[0] > max_norm > norms[1]
    coef = max_norm / (expected_norms[0] + 1e-6)
    for m, g in zip(_worker_rows(opt.exp_avg, 0), _worker_rows(grads, 0), strict=True):
        torch.testing.assert_close(m, 0.1 * g * coef, rtol=1e-6, atol=1e-12)  # clipped
    for m, g in zip(_worker_rows(opt.exp_avg, 1), _worker_rows(grads, 1), strict=True):
        torch.testing.assert_close(m, 0.1 * g, rtol=1e-6, atol=1e-15)  # untouched

    _run(opt, params, coefs, steps=4)
    for k in range(K):
        reference, _ = _reference_run(start, coefs, k, 0.02, steps=5, max_norm=max_norm)
        _assert_worker_equal(params, k, reference)


def test_grad_norms_sum_both_rows_of_a_worker():
    params = _population(2, seed=10)
    opt = PopulationAdam(params, torch.ones(2))
    for p in params:
        p.grad = torch.zeros_like(p)
    params[1].grad[1] = 3.0  # worker 0, second row: 5 entries of 3
    params[1].grad[2] = 4.0  # worker 1, first row
    # worker 0: 5 entries of 3 -> sqrt(45); worker 1: 5 entries of 4 -> sqrt(80)
    torch.testing.assert_close(opt.grad_norms(), torch.tensor([45.0**0.5, 80.0**0.5]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_worker_with_non_finite_gradient_skips_the_step_and_others_still_update(bad, device):
    K = 3
    params, coefs = _population(K, seed=11, device=device), _coefs(K, seed=12, device=device)
    start = [p.detach().clone() for p in params]
    lr = torch.tensor([0.01, 0.01, 0.01], device=device)
    opt = PopulationAdam(params, lr, max_grad_norm=1e9)

    opt.zero_grad()
    _loss(params, coefs).backward()
    params[1].grad[3, 0] = bad  # worker 1, its second row
    norms = opt.step()
    assert torch.isfinite(norms[[0, 2]]).all() and not torch.isfinite(norms[1])
    for ours, before in zip(_worker_rows(params, 1), _worker_rows(start, 1), strict=True):
        assert torch.equal(ours.detach(), before)
    for m, v in zip(_worker_rows(opt.exp_avg, 1), _worker_rows(opt.exp_avg_sq, 1), strict=True):
        assert torch.equal(m, torch.zeros_like(m)) and torch.equal(v, torch.zeros_like(v))
    assert opt.steps.tolist() == [1.0, 0.0, 1.0]
    for k in (0, 2):
        reference, _ = _reference_run(start, coefs, k, 0.01, steps=1)
        _assert_worker_equal(params, k, reference)

    # the skipped worker's next good step is an ordinary first Adam step
    _run(opt, params, coefs, steps=1)
    reference, _ = _reference_run(start, coefs, 1, 0.01, steps=1)
    _assert_worker_equal(params, 1, reference)


def test_parameters_without_gradient_are_left_alone():
    params = _population(2, seed=13)
    frozen = params[2].detach().clone()
    opt = PopulationAdam(params, torch.tensor([0.1, 0.1]))
    opt.zero_grad()
    (params[0].sin().sum() + params[1].sum()).backward()
    assert params[2].grad is None
    opt.step()
    assert torch.equal(params[2].detach(), frozen)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


# ---------------------------------------------------------------- copies and persistence


def test_copy_worker_copies_moments_steps_and_learning_rate():
    K = 3
    params, coefs = _population(K, seed=14), _coefs(K, seed=15)
    lr = torch.tensor([0.03, 0.02, 0.01])
    opt = PopulationAdam(params, lr, max_grad_norm=1e9)
    _run(opt, params, coefs, steps=3)
    opt.steps[2] = 1.0  # make the step counts differ too
    before_1 = [t.clone() for s in (opt.exp_avg, opt.exp_avg_sq) for t in _worker_rows(s, 1)]

    opt.copy_worker(torch.tensor([0]), torch.tensor([2]))
    for state in (opt.exp_avg, opt.exp_avg_sq):
        for src, dst in zip(_worker_rows(state, 0), _worker_rows(state, 2), strict=True):
            assert torch.equal(src, dst)
    assert opt.steps.tolist() == [3.0, 3.0, 3.0] and lr.tolist() == pytest.approx(
        [0.03, 0.02, 0.03]
    )
    after_1 = [t for s in (opt.exp_avg, opt.exp_avg_sq) for t in _worker_rows(s, 1)]
    for a, b in zip(after_1, before_1, strict=True):
        assert torch.equal(a, b)

    # with the weights copied as well, the two workers now move identically
    with torch.no_grad():
        for p, c, m in zip(params, coefs, ROWS, strict=True):
            p[2 * m : 3 * m] = p[0:m]
            c[2 * m : 3 * m] = c[0:m]
    _run(opt, params, coefs, steps=2)
    for a, b in zip(_worker_rows(params, 0), _worker_rows(params, 2), strict=True):
        assert torch.equal(a, b)


def test_state_dict_round_trip_continues_identically():
    K = 2
    params, coefs = _population(K, seed=16), _coefs(K, seed=17)
    opt = PopulationAdam(params, torch.tensor([0.05, 0.01]), max_grad_norm=5.0)
    _run(opt, params, coefs, steps=3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    clone_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    clone = PopulationAdam(clone_params, torch.tensor([9.0, 9.0]), max_grad_norm=5.0)
    clone.load_state_dict(state)
    assert clone.lr.tolist() == pytest.approx([0.05, 0.01])
    _run(opt, params, coefs, steps=2)
    _run(clone, clone_params, coefs, steps=2)
    for a, b in zip(params, clone_params, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- C++ step


@pytest.mark.parametrize("bad_worker", [None, 1])
def test_the_cpp_step_equals_the_pytorch_step_in_float32(bad_worker):
    """With the C++ ops, float32 CPU parameters take the one-pass C++ step; it must agree with
    the PyTorch step: per-worker learning rates, clipping, and a worker whose gradient is NaN."""
    from helpers import CPP

    from autolfads.model.ops import REFERENCE

    if CPP is None:
        pytest.skip("C++ operations switched off or unavailable: the PyTorch step is tested alone")
    k = 3
    runs = []
    for ops in (CPP, REFERENCE):
        params = [torch.nn.Parameter(p.detach().float()) for p in _population(k)]
        coefs = [c.float() for c in _coefs(k, scale=torch.tensor([1.0, 30.0, 0.5]))]
        lr = torch.tensor([1e-2, 3e-3, 2e-2])
        opt = PopulationAdam(params, lr, max_grad_norm=5.0, ops=ops)
        for step in range(4):
            opt.zero_grad()
            _loss(params, coefs).backward()
            if bad_worker is not None and step == 2:
                params[0].grad[bad_worker, 0, 0] = float("nan")
            opt.step()
        runs.append([*params, *opt.exp_avg, *opt.exp_avg_sq, opt.steps])
    for a, e in zip(*runs, strict=True):
        torch.testing.assert_close(a.detach(), e.detach(), rtol=1e-4, atol=1e-6)
