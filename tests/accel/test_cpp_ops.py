"""The C++ operations (float32, CPU) against the float64 reference of `autolfads.model`, outputs
and every gradient, dropout and sampling on (both given the same masks and noise, or the C++
random numbers fed to the reference formula); and the choice when they cannot be built or are
switched off."""

import copy
import logging

import pytest
import torch
from helpers import CPP, needs_cpp

from autolfads.accel import accel_setting, accelerate, choose_ops, loader
from autolfads.accel.gru import gru_sequence
from autolfads.accel.loop import controlled_generator
from autolfads.model.controller import LoopWeights
from autolfads.model.controller import controlled_generator as controlled_generator_reference
from autolfads.model.gru import BidirectionalGRU
from autolfads.model.gru import gru_step as gru_step_reference
from autolfads.model.ops import REFERENCE, lagged

needs_kernels = needs_cpp


def _float32_leaves(leaves):
    return [t.detach().float().requires_grad_() for t in leaves]


def _grads(outputs, leaves, probes):
    total = sum((o * p.to(o.dtype)).sum() for o, p in zip(outputs, probes, strict=True))
    return torch.autograd.grad(total, leaves)


def test_the_kernels_build_wherever_a_compiler_and_ninja_exist():
    """Otherwise every test marked needs_kernels would skip quietly after a broken edit."""
    import os
    import shutil

    from torch.utils.cpp_extension import is_ninja_available

    if not (shutil.which(os.environ.get("CXX", "c++")) and is_ninja_available()):
        pytest.skip("no C++ compiler or ninja here")
    if accel_setting() == "none":
        pytest.skip("switched off by AUTOLFADS_ACCEL")
    assert loader.load_kernels() is not None, loader.load_failure()


@needs_kernels
@pytest.mark.parametrize(("clip", "k", "b"), [(1.0, 2, 5), (5.0, 2, 5), (1.0, 1, 300)])
def test_sequence_matches_the_float64_reference(clip, k, b):
    gen = torch.Generator().manual_seed(0)
    t, h = 9, 6

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


def _assert_float32_run_matches(out, ref, leaves32, leaves64):
    """Outputs of a float32 C++ run equal the float64 reference's to 1e-5, and so do the gradients
    of a random probe of them wrt every leaf (1e-4 relative, 1e-5 absolute)."""
    for a, e in zip(out, ref, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5)
    gen = torch.Generator().manual_seed(2)
    probes = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in ref]
    for a, e in zip(_grads(out, leaves32, probes), _grads(ref, leaves64, probes), strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5)


def _loop_case(k, b, t, c=4, g=5, u=2, seed=0):
    """Float64 leaves of a controller-generator run: inputs, weights, masks, noise."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    shapes = [(g, 3 * c), (c, 2 * c), (c, c), (c, 2 * u), (2 * u,), (u, 3 * g), (g, 2 * g), (g, g)]
    weights = LoopWeights(*[r(k, *shape, scale=0.5) for shape in shapes])
    inputs = [r(k, b, t, 3 * c), r(k, b, t, 3 * g), r(k, b, g, scale=2.0), r(k, b, c)]
    masks = (torch.rand(k, b, t + 1, g, generator=gen, dtype=torch.float64) > 0.3) / 0.7
    noise = torch.randn(k, b, t, u, generator=gen, dtype=torch.float64)
    return inputs, weights, masks, noise


@needs_kernels
@pytest.mark.parametrize(
    ("clip", "k", "b", "keep_states"), [(0.5, 2, 5, True), (5.0, 1, 300, False)]
)
def test_bidirectional_encoder_matches_the_float64_reference(clip, k, b, keep_states):
    """The C++ encoders (inputs projected step by step in the loop, reverse cells) against the
    float64 reference, gradients wrt the input included."""
    gen = torch.Generator().manual_seed(3)
    t, n_in, h = 7, 4, 5
    ref = BidirectionalGRU(k, n_in, h, clip=clip).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.8)
    fast = copy.deepcopy(ref).float()
    x = torch.randn(k, b, t, n_in, generator=gen, dtype=torch.float64, requires_grad=True)
    x32 = x.detach().float().requires_grad_()
    expected = ref(x, keep_states)
    actual = CPP.encoders(x32, fast, fast)[2:] if keep_states else CPP.encoders(x32, fast, None)[:2]
    if clip == 0.5:
        assert bool((expected[0].abs() >= clip).any())  # the clipped branch is exercised
    probes = [torch.randn(e.shape, generator=gen, dtype=torch.float64) for e in expected]
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5)
    grads64 = _grads(expected, [x, *ref.parameters()], probes)
    grads32 = _grads(actual, [x32, *fast.parameters()], probes)
    for a, e in zip(grads32, grads64, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4)


@needs_kernels
@pytest.mark.parametrize(("k", "b"), [(2, 4), (1, 300)])  # one block per worker; 3 blocks of rows
def test_controlled_generator_matches_the_float64_reference(k, b):
    inputs, weights, masks, noise = _loop_case(k, b, t=8)
    clip = 1.5
    ref = controlled_generator_reference(*inputs, weights, masks, noise, clip)
    assert any(bool((o.abs() >= clip).any()) for o in ref[:2])
    leaves64 = [*inputs, *weights.as_tuple()]
    leaves32 = _float32_leaves(leaves64)
    inputs32, weights32 = leaves32[:4], LoopWeights(*leaves32[4:])
    out = controlled_generator(*inputs32, weights32, masks.float(), noise.float(), clip)
    _assert_float32_run_matches(out, ref, leaves32, leaves64)


def _projection_case(k, b, t, n=3, c=4, seed=1):
    """Float64 leaves of a controller input projected inside the loop: the input itself, stored
    time-major and used as a (K, B, T, n) view (as the model's), its weights and bias."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(k, t, b, n, generator=gen, dtype=torch.float64).transpose(1, 2)
    weight = torch.randn(k, n, 3 * c, generator=gen, dtype=torch.float64) * 0.5
    bias = torch.randn(k, 3 * c, generator=gen, dtype=torch.float64) * 0.5
    return [v.requires_grad_() for v in (x, weight, bias)]


@needs_kernels
@pytest.mark.parametrize(("k", "b"), [(2, 4), (1, 300)])  # one block per worker; 3 blocks of rows
def test_controlled_generator_projecting_its_input_matches_the_float64_reference(k, b):
    """The controller's input projected step by step inside the C++ loop: outputs and every
    gradient (the raw input's, the projection's weights' and bias's included)."""
    inputs, weights, masks, noise = _loop_case(k, b, t=8)
    x, con_w, con_b = _projection_case(k, b, t=8)
    ref = controlled_generator_reference(
        x, *inputs[1:], weights, masks, noise, 1.5, con_projection=(con_w, con_b)
    )
    leaves64 = [x, *inputs[1:], *weights.as_tuple(), con_w, con_b]
    leaves32 = [v.detach().float() for v in leaves64]
    leaves32[0] = leaves32[0].transpose(1, 2).contiguous().transpose(1, 2)  # time-major storage
    leaves32 = [v.requires_grad_() for v in leaves32]
    out = controlled_generator(
        *leaves32[:4],
        LoopWeights(*leaves32[4:12]),
        masks.float(),
        noise.float(),
        1.5,
        con_projection=(leaves32[12], leaves32[13]),
    )
    _assert_float32_run_matches(out, ref, leaves32, leaves64)


@needs_kernels
def test_controlled_generator_with_unused_outputs_matches_the_reference():
    """As in training: no gradient reaches the states and controller states (None)."""
    inputs, weights, masks, noise = _loop_case(2, 4, t=8)
    ref = controlled_generator_reference(*inputs, weights, masks, noise, 1.5)
    leaves64 = [*inputs, *weights.as_tuple()]
    leaves32 = _float32_leaves(leaves64)
    out = controlled_generator(
        *leaves32[:4], LoopWeights(*leaves32[4:]), masks.float(), noise.float(), 1.5
    )
    gen = torch.Generator().manual_seed(5)
    probes = [torch.randn(ref[i].shape, generator=gen, dtype=torch.float64) for i in (2, 3, 4)]
    used32, used64 = [out[i] for i in (2, 3, 4)], [ref[i] for i in (2, 3, 4)]
    for a, e in zip(
        _grads(used32, leaves32, probes), _grads(used64, leaves64, probes), strict=True
    ):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5)


def _loop_at_thread_counts(b: int, t: int, thread_counts) -> list[list[torch.Tensor]]:
    """Outputs and every gradient of one float32 C++ loop case (K = 1, b rows, t steps), once per
    thread count (the rows are split into more blocks at more threads)."""
    inputs, weights, masks, noise = _loop_case(1, b, t=t)
    leaves = _float32_leaves([*inputs, *weights.as_tuple()])
    gen = torch.Generator().manual_seed(1)  # not the global stream: other tests move it
    probes = [torch.randn(1, b, t, n, generator=gen) for n in (5, 4, 4, 2, 5)]
    runs = []
    saved = torch.get_num_threads()
    try:
        for n in thread_counts:
            torch.set_num_threads(n)
            out = controlled_generator(
                *leaves[:4], LoopWeights(*leaves[4:]), masks.float(), noise.float(), 1.5
            )
            runs.append([*out, *_grads(out, leaves, probes)])
    finally:
        torch.set_num_threads(saved)
    return runs


@needs_kernels
def test_splitting_rows_across_threads_changes_nothing():
    # 1 block of 100 rows, then 2 blocks of 50 run in parallel
    runs = _loop_at_thread_counts(100, 6, (1, 2))
    first_weight_grad = 5 + 4  # after 5 outputs and 4 inputs' gradients
    for i, (a, e) in enumerate(zip(*runs, strict=True)):
        # weight gradients are summed per block of rows, then over blocks: only the order changes
        tol = 1e-5 if i >= first_weight_grad else 1e-6
        torch.testing.assert_close(a, e, rtol=tol, atol=tol)


@needs_kernels
@pytest.mark.parametrize("threads", [3, 8])
def test_more_threads_than_a_worker_has_row_blocks_for_changes_nothing(threads):
    """10 rows split for 8 threads: blocks of 2 rows, 5 of them (a block past the end once made
    the loop allocate a negative size)."""
    runs = _loop_at_thread_counts(10, 5, (1, threads))
    for a, e in zip(*runs, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("projected", [False, True])
def test_posterior_samples_read_their_trial_row_of_the_controller_input(projected):
    """2 trials x 3 samples: rows 0-2 read trial 0, rows 3-5 trial 1; the controller's input
    projected (once per trial before the loop) or given projected."""
    inputs, weights, _, noise = _loop_case(2, 6, t=5)
    con_x, gen_x, gen_init, con_h0 = (x.detach().float() for x in inputs)
    w = LoopWeights(*(x.detach().float() for x in weights.as_tuple()))
    projection = None
    if projected:
        con_x, con_w, con_b = (v.detach().float() for v in _projection_case(2, 6, t=5))
        projection = (con_w, con_b)
    rest = (gen_x, gen_init, con_h0, w, None, noise.float(), 1.5)
    with torch.no_grad():
        shared = controlled_generator(con_x[:, :2], *rest, 3, projection)
        repeated = controlled_generator(
            con_x[:, :2].repeat_interleave(3, dim=1), *rest, con_projection=projection
        )
    # projected, the samples' rows are projected before the loop and the repeated rows inside
    # it: the same products up to rounding (a wrong trial's row would differ by O(1))
    tol = 1e-6 if projected else 0.0
    for a, e in zip(shared, repeated, strict=True):
        torch.testing.assert_close(a, e, rtol=10 * tol, atol=tol)


def _network(dtype=torch.float32):
    from helpers import tiny_structure

    from autolfads.model.lfads import LFADSNetwork

    return LFADSNetwork(tiny_structure(), 2).to(dtype)


@pytest.mark.parametrize("env", [{"AUTOLFADS_ACCEL": "none"}, {"AUTOLFADS_FUSED": "0"}])
def test_switched_off_by_the_environment(env, monkeypatch):
    monkeypatch.delenv("AUTOLFADS_ACCEL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert accel_setting("cpp") == "none"  # the environment overrides the config
    assert choose_ops("cpp", _network()) is REFERENCE


def test_an_unknown_setting_is_refused(monkeypatch):
    from autolfads.errors import ConfigError

    monkeypatch.delenv("AUTOLFADS_ACCEL", raising=False)
    with pytest.raises(ConfigError, match="accel must be one of"):
        accel_setting("fast")


@needs_kernels
def test_float32_cpu_networks_choose_the_cpp_ops_and_others_the_reference(monkeypatch, caplog):
    from helpers import tiny_structure

    from autolfads.model.gru import ClippedGRUCell
    from autolfads.model.lfads import LFADSNetwork

    monkeypatch.delenv("AUTOLFADS_ACCEL", raising=False)
    monkeypatch.delenv("AUTOLFADS_FUSED", raising=False)
    net = accelerate(LFADSNetwork(tiny_structure(), 2), "auto")
    assert net.ops.name == "cpp"
    assert net.double().ops is REFERENCE  # chosen again when the network moves
    assert net.float().ops.name == "cpp"
    with caplog.at_level(logging.INFO, logger="autolfads"):
        assert choose_ops("cpp", _network(torch.float64)) is REFERENCE
        assert choose_ops("cpp", _network(torch.float64)) is REFERENCE

        class MyCell(ClippedGRUCell):
            pass

        s = tiny_structure()
        net.generator = MyCell(2, s.ext_input_dim, s.gen_dim, s.cell_clip)
        assert choose_ops("auto", net) is REFERENCE
    assert [r.getMessage() for r in caplog.records] == [
        "accel=cpp: torch.float64 on cpu, not float32 on the CPU; "
        "using the reference PyTorch operations",
        "accel: generator is a MyCell, not what the C++ kernels implement; "
        "using the reference PyTorch operations",
    ]


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, caplog):
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.delenv("AUTOLFADS_ACCEL", raising=False)
    monkeypatch.delenv("AUTOLFADS_FUSED", raising=False)
    monkeypatch.setattr(loader, "_state", {"module": None, "failure": None})
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(loader, "_already_built", lambda name: True)
    with caplog.at_level(logging.WARNING, logger="autolfads"):
        assert loader.load_kernels() is None
        assert loader.load_kernels() is None  # tried once, remembered
        assert choose_ops("auto", _network()) is REFERENCE
    assert [r.getMessage() for r in caplog.records] == [
        "C++ kernels unavailable (Ninja is required to load C++ extensions)"
    ]


@needs_kernels
def test_mask_noise_is_uniform_and_reproducible_from_the_generator():
    like = torch.empty(3, 200, 100)
    draws = [CPP.uniform(like, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    u = draws[0]
    assert u.shape == like.shape and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    counts = torch.histc(u, bins=10, min=0.0, max=1.0)
    assert float((counts / u.numel() - 0.1).abs().max()) < 0.005  # every decile equally likely
    # neighbouring elements are not correlated (a counter-based hash, not a stride pattern)
    flat = u.flatten() - 0.5
    assert abs(float((flat[1:] * flat[:-1]).mean())) < 0.002


def test_openmp_flags_only_where_torch_threads_are_openmp(monkeypatch):
    monkeypatch.setattr(loader.sys, "platform", "linux")
    _, cflags, ldflags = loader._flags()
    assert "-fopenmp" in cflags and ldflags == ["-fopenmp"]
    monkeypatch.setattr(loader.sys, "platform", "darwin")  # Apple clang has no -fopenmp
    _, cflags, ldflags = loader._flags()
    assert "-fopenmp" not in cflags and ldflags == []


# ---------------------------------------------------------------- dropout masks


def _keep(rate: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """1 - rate (K,) as the PyTorch path computes it, viewed to broadcast against `like`."""
    return (1.0 - rate).view(-1, *([1] * (like.dim() - 1)))


@needs_kernels
def test_dropout_mask_keeps_where_uniform_fill_is_below_keep_and_scales():
    kernels = loader.load_kernels()
    rate = torch.tensor([0.0, 0.3, 0.99, 1.0, 1.5])  # no dropout, usual, close to 1, all, beyond
    out, u = torch.full((5, 40, 50), -7.0), torch.empty(5, 40, 50)
    kernels.dropout_mask(out, rate, 123)
    kernels.uniform_fill(u, 123)
    keep = _keep(rate, u)
    expected = (u < keep).float() / keep.clamp_min(1e-6)
    assert torch.equal(out, expected)
    assert torch.equal(out[0], torch.ones(40, 50))
    assert (out[3:] == 0).all()
    kept = out[2] != 0
    assert 0 < int(kept.sum()) < 60  # ~20 of 2000 kept, each scaled by 1 / 0.01
    torch.testing.assert_close(
        out[2][kept], torch.full((int(kept.sum()),), 100.0), rtol=1e-4, atol=0
    )


@needs_kernels
def test_dropout_mask_keeps_one_minus_rate_of_the_elements():
    rate = torch.tensor([0.1, 0.5, 0.9])
    out = torch.empty(3, 100_000)
    loader.load_kernels().dropout_mask(out, rate, 7)
    kept = (out != 0).float().mean(1)
    torch.testing.assert_close(kept, 1.0 - rate, rtol=0, atol=0.006)  # ~4 standard deviations


@needs_kernels
def test_worker_dropout_with_kernels_matches_the_pytorch_formula():
    x = torch.randn(3, 4, 20, 30).requires_grad_()
    rate = torch.tensor([0.0, 0.2, 0.6])
    y = CPP.dropout(x, rate, True, torch.Generator().manual_seed(5))
    u = CPP.uniform(x, torch.Generator().manual_seed(5))  # the same seed: the same numbers
    keep = _keep(rate, x)
    expected = x.detach() * (u < keep) / keep.clamp_min(1e-6)
    torch.testing.assert_close(y.detach(), expected, rtol=1e-6, atol=0)
    assert torch.equal(y.detach() == 0, (u >= keep) | (x.detach() == 0))
    y.sum().backward()
    torch.testing.assert_close(x.grad, (u < keep) / keep.clamp_min(1e-6), rtol=1e-6, atol=0)


@needs_kernels
def test_dropout_mask_is_the_reference_formula_on_the_cpp_numbers():
    rate = torch.tensor([0.25, 0.5])
    like = torch.empty(2, 30, 40)
    mask = CPP.dropout_mask(like, rate, torch.Generator().manual_seed(3))
    u = CPP.uniform(like, torch.Generator().manual_seed(3))
    assert torch.equal(mask, (u < _keep(rate, u)).float() / _keep(rate, u))
    like64 = like.double()
    mask64 = REFERENCE.dropout_mask(like64, rate, torch.Generator().manual_seed(3))
    u64 = torch.rand(like64.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    keep64 = _keep(rate.double(), u64)
    assert mask64.dtype == torch.float64
    assert torch.equal(mask64, (u64 < keep64).double() / keep64)


def test_reference_dropout_is_the_formula_on_torch_numbers():
    x = torch.randn(2, 50, 40)
    rate = torch.tensor([0.3, 0.7])
    y = REFERENCE.dropout(x, rate, True, torch.Generator().manual_seed(4))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(4))
    keep = _keep(rate, x)
    torch.testing.assert_close(y, x * (u < keep) / keep, rtol=1e-6, atol=0)
    mask = REFERENCE.dropout_mask(x, rate, torch.Generator().manual_seed(4))
    assert torch.equal(mask, (u < keep).float() / keep)


@needs_kernels
@pytest.mark.parametrize("use_controller", [True, False])
def test_whole_network_on_the_cpp_ops_equals_the_reference(use_controller, monkeypatch):
    """Forward and every parameter's gradient of a float32 network, C++ ops vs reference (no
    dropout and no sampling, so neither draws random numbers)."""
    from helpers import poisson_counts, tiny_structure

    from autolfads.model.lfads import LFADSNetwork

    s = tiny_structure(co_dim=2 if use_controller else 0, ci_lag=1)
    torch.manual_seed(0)
    net = LFADSNetwork(s, 2)
    with torch.no_grad():
        for p in net.parameters():  # every worker's parameters differ, biases included
            p.add_(0.3 * torch.randn(p.shape))
    encod = poisson_counts((2, 3, s.encod_seq_len, s.encod_data_dims[0]), seed=1).float()
    runs = []
    for ops in (CPP, REFERENCE):
        net.ops = ops
        net.zero_grad()
        out = net(encod, dropout_rate=torch.zeros(2), sample=False)
        gen = torch.Generator().manual_seed(2)
        used = [out.params, out.factors, out.gen_states, out.co_mean]
        loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in used)
        loss.backward()
        grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        runs.append([*(o.detach() for o in used), *grads])
    assert len(runs[0]) == len(runs[1]) > 4 + 10
    for a, e in zip(*runs, strict=True):
        torch.testing.assert_close(a, e, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------- lagged controller input

LAG_RATES = [(0.0, 0.4), (0.3, 1.0)]  # no dropout and dropping everything, beside usual rates


def _encoder_states(k=2, b=3, t=7, h=5, dtype=torch.float32, seed=0, time_major=True):
    """fwd, bwd (K, B, T, H) as the encoders return them, transposed views of time-major tapes
    (or contiguous when time_major is False)."""
    gen = torch.Generator().manual_seed(seed)
    tapes = [torch.randn(k, t, b, h, generator=gen, dtype=dtype) for _ in range(2)]
    states = [
        tape.transpose(1, 2) if time_major else tape.transpose(1, 2).contiguous() for tape in tapes
    ]
    return [x.requires_grad_() for x in states]


def _lag_composition(fwd, bwd, lag, steps, rate, training, seed):
    gen = torch.Generator().manual_seed(seed)
    ops = CPP if fwd.dtype == torch.float32 and CPP is not None else REFERENCE
    out = ops.dropout(lagged(fwd, bwd, lag, steps), rate, training, gen)
    return out, gen


def _lag_fused(fwd, bwd, lag, steps, rate, training, seed):
    gen = torch.Generator().manual_seed(seed)
    ops = CPP if fwd.dtype == torch.float32 and CPP is not None else REFERENCE
    return ops.lagged_dropout(fwd, bwd, lag, steps, rate, training, gen), gen


@needs_kernels
@pytest.mark.parametrize("lag", [0, 2])
@pytest.mark.parametrize("rates", LAG_RATES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("time_major", [True, False])
def test_lagged_dropout_forward_is_the_composition_bit_for_bit(lag, rates, training, time_major):
    fwd, bwd = _encoder_states(time_major=time_major)
    assert fwd.is_contiguous() != time_major and fwd.stride(-1) == 1  # read through its strides
    rate = torch.tensor(rates)
    out, gen = _lag_fused(fwd, bwd, lag, 10, rate, training, seed=11)  # T_rec 10 > T_enc 7
    ref, ref_gen = _lag_composition(fwd, bwd, lag, 10, rate, training, seed=11)
    assert type(out.grad_fn).__name__ == "_LaggedDropoutBackward"  # the C++ path ran
    assert out.shape == (2, 3, 10, 10) and out.transpose(1, 2).is_contiguous()  # time-major
    assert torch.equal(out, ref)
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=ref_gen))  # same draws
    assert (out[:, :, 7:] == 0).all()  # forward-prediction steps
    lagged_states = lagged(fwd, bwd, lag, 10)
    for w, r in enumerate(rates):
        if not training or r == 0.0:
            assert torch.equal(out[w], lagged_states[w])  # no dropout
        elif r == 1.0:
            assert (out[w] == 0).all()  # all dropped
        else:
            kept = out[w] != 0
            assert 0 < int(kept.sum()) < int((lagged_states[w] != 0).sum())
            torch.testing.assert_close(
                out[w][kept], lagged_states[w][kept] / (1 - r), rtol=1e-6, atol=0
            )


@needs_kernels
@pytest.mark.parametrize("lag", [0, 2])
@pytest.mark.parametrize("rates", LAG_RATES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("strided_grad", [False, True])
def test_lagged_dropout_backward_is_the_composition_bit_for_bit(lag, rates, training, strided_grad):
    fwd, bwd = _encoder_states(seed=1)
    rate = torch.tensor(rates)
    g_out = torch.randn(2, 10, 3, 10, generator=torch.Generator().manual_seed(2)).transpose(1, 2)
    if not strided_grad:
        g_out = g_out.contiguous()
    out, _ = _lag_fused(fwd, bwd, lag, 10, rate, training, seed=12)
    ref, _ = _lag_composition(fwd, bwd, lag, 10, rate, training, seed=12)
    grads = torch.autograd.grad(out, [fwd, bwd], g_out)
    expected = torch.autograd.grad(ref, [fwd, bwd], g_out)
    for a, e in zip(grads, expected, strict=True):
        assert a.shape == (2, 3, 7, 5)
        assert torch.equal(a, e)
    if lag:  # states no output step reads get zero gradient
        assert (grads[0][:, :, -lag:] == 0).all() and (grads[1][:, :, :lag] == 0).all()


def test_reference_lagged_dropout_is_the_composition():
    fwd, bwd = _encoder_states(dtype=torch.float64, seed=3)
    rate = torch.tensor([0.0, 0.5])
    out, gen = _lag_fused(fwd, bwd, 2, 9, rate, True, seed=13)
    ref, ref_gen = _lag_composition(fwd, bwd, 2, 9, rate, True, seed=13)
    assert out.dtype == torch.float64 and torch.equal(out, ref)
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=ref_gen))


@needs_kernels
@pytest.mark.parametrize("use_controller", [True, False])
def test_whole_network_trains_as_the_reference_with_dropout_and_sampling(use_controller):
    """Training mode (dropout on every site, IC and inferred-input samples): the C++ ops given the
    reference's random numbers give the reference's outputs and every parameter's gradient."""
    from helpers import poisson_counts, tiny_structure

    from autolfads.model.lfads import LFADSNetwork
    from autolfads.model.ops import Ops

    class CppOnTorchNumbers(type(CPP)):
        uniform, dropout_mask, state_masks = Ops.uniform, Ops.dropout_mask, Ops.state_masks
        step_noise, lagged_dropout = Ops.step_noise, Ops.lagged_dropout

    s = tiny_structure(co_dim=2 if use_controller else 0, ci_lag=1)
    torch.manual_seed(0)
    net = LFADSNetwork(s, 2).train()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    encod = poisson_counts((2, 3, s.encod_seq_len, s.encod_data_dims[0]), seed=1).float()
    runs = []
    for ops in (CppOnTorchNumbers(), REFERENCE):
        net.ops = ops
        net.zero_grad()
        rate = torch.tensor([0.2, 0.5])
        out = net(encod, dropout_rate=rate, sample=True, generator=torch.Generator().manual_seed(3))
        gen = torch.Generator().manual_seed(2)
        used = [out.params, out.factors, out.gen_states, out.co_mean, out.co_sample, out.ic_mean]
        loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in used)
        loss.backward()
        grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        runs.append([*(o.detach() for o in used), *grads])
    assert len(runs[0]) == len(runs[1]) > 6 + 10
    for a, e in zip(*runs, strict=True):
        torch.testing.assert_close(a, e, rtol=2e-4, atol=2e-5)
