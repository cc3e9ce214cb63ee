"""The LFADS network: a K-worker population against K separate one-worker networks holding the same
weights, output shapes for forward prediction and held-out neurons, the controller's lagged input, and
the composition of factors, read-out and generator inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import (
    CPP,
    copy_worker_into,
    loosen,
    needs_cpp,
    on,
    poisson_counts,
    tiny_structure,
    torch_threads,
    worker_slice,
)

from autolfads.model.lfads import FactorReadout, LFADSNetwork, LFADSOutput
from autolfads.model.observations import OBSERVATION_MODELS
from autolfads.model.ops import lagged
from autolfads.train.augment import prepare_batch
from autolfads.train.objective import lfads_loss

K, B = 3, 5
F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _perturbed_network(structure, n_workers: int, seed: int) -> LFADSNetwork:
    """A float64 network whose every parameter differs between workers (biases, priors, h0 too)."""
    torch.manual_seed(seed)
    net = LFADSNetwork(structure, n_workers).double()
    g = _gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return net


def _hps(n_workers: int) -> dict[str, torch.Tensor]:
    """Distinct per-worker loss weights."""
    ramp = torch.linspace(1.0, 2.0, n_workers, dtype=torch.float32)
    names = ("kl_ic_scale", "kl_co_scale", "l2_gen_scale", "l2_con_scale")
    hps = {name: 0.1 * ramp * (i + 1) for i, name in enumerate(names)}
    hps["l2_ic_enc_scale"] = 0.05 * ramp
    hps["l2_ci_enc_scale"] = 0.07 * ramp
    return hps


def _inputs(structure, session: int, seed: int):
    """Distinct encoder input per worker (K, B, T_enc, N_enc), a target with NaNs, ext input."""
    n_enc, n_rec = structure.encod_data_dims[session], structure.recon_data_dims[session]
    t_enc, t_rec = structure.encod_seq_len, structure.recon_seq_len
    encod = poisson_counts((K, B, t_enc, n_enc), seed=seed).double()
    recon = poisson_counts((B, t_rec, n_rec), seed=seed + 1).double()
    recon[0, 1, 2] = float("nan")  # one unobserved entry (SBTT) for good measure
    ext = None
    if structure.ext_input_dim:
        ext = torch.randn(B, t_rec, structure.ext_input_dim, generator=_gen(seed), dtype=F64)
    return encod, recon, ext


SETUPS = {
    "controller": ({}, 0),
    "no_controller": ({"co_dim": 0}, 0),
    "ext_input": ({"ext_input_dim": 2}, 0),
    "ext_input_no_controller": ({"ext_input_dim": 2, "co_dim": 0}, 0),
    "fp_heldout_lag2": ({"recon_seq_len": 11, "recon_data_dims": (8,), "ci_lag": 2}, 0),
    "multi_session_0": ({"encod_data_dims": (6, 4), "recon_data_dims": (6, 5)}, 0),
    "multi_session_1": ({"encod_data_dims": (6, 4), "recon_data_dims": (6, 5)}, 1),
    "readin": ({"readin_dim": 3}, 0),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_population_equals_separate_single_worker_networks(setup, device):
    overrides, session = SETUPS[setup]
    s = tiny_structure(**overrides)
    net = _perturbed_network(s, K, seed=1).eval().to(device)  # eval: no dropout
    encod, recon, ext = (on(t, device) for t in _inputs(s, session, seed=2))
    batch = prepare_batch(encod[0], recon, K, cd_rate=on(torch.zeros(K), device), training=True)
    assert batch.grad_mask is None
    batch = dataclasses.replace(batch, encod_input=encod)  # distinct input per worker
    hps = {name: v.to(device) for name, v in _hps(K).items()}
    rate = torch.full((K,), 0.5, device=device)  # must be ignored in eval mode
    tol = loosen(device)
    out = net(batch.encod_input, session, ext, rate, sample=False)
    loss, parts = lfads_loss(net, out, batch, session, hps, ramp=0.6, loss_scale=3.0)
    net.zero_grad()
    loss.sum().backward()

    for k in range(K):
        single = LFADSNetwork(s, 1).double().eval().to(device)
        copy_worker_into(net, k, K, single)
        batch_k = dataclasses.replace(batch, encod_input=encod[k : k + 1])
        hps_k = {name: v[k : k + 1] for name, v in hps.items()}
        out_k = single(batch_k.encod_input, session, ext, rate[k : k + 1], sample=False)
        loss_k, parts_k = lfads_loss(single, out_k, batch_k, session, hps_k, 0.6, 3.0)
        loss_k.sum().backward()

        close = {"rtol": 1e-10 * tol, "atol": 1e-10 * tol}
        torch.testing.assert_close(loss[k : k + 1], loss_k, **close)
        for name, value in parts_k.items():
            torch.testing.assert_close(parts[name][k : k + 1], value, **close)
        for name, value in out_k.as_dict().items():
            torch.testing.assert_close(out.as_dict()[name][k : k + 1], value, **close)
        grads_k = {n: p.grad for n, p in single.named_parameters()}
        for name, p in net.named_parameters():
            if grads_k[name] is None:
                assert p.grad is None, name
                continue
            torch.testing.assert_close(
                worker_slice(p.grad, k, K),
                grads_k[name],
                rtol=1e-9 * tol,
                atol=1e-11 * tol,
                msg=name,
            )


def test_population_loss_sends_gradient_to_every_used_parameter(device):
    s = tiny_structure(ext_input_dim=2)
    net = _perturbed_network(s, K, seed=3).eval().to(device)
    encod, recon, ext = (on(t, device) for t in _inputs(s, 0, seed=4))
    batch = prepare_batch(encod[0], recon, K)
    out = net(batch.encod_input, 0, ext, sample=False)
    loss, _ = lfads_loss(net, out, batch, 0, _hps(K), ramp=1.0, loss_scale=1.0)
    loss.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        per_worker = p.grad.reshape(K, -1).abs().sum(1)
        assert (per_worker > 0).all(), f"{name}: a worker got no gradient"


def test_output_shapes_with_forward_prediction_and_held_out_neurons():
    s = tiny_structure(recon_seq_len=11, recon_data_dims=(9,), ext_input_dim=2)
    net = LFADSNetwork(s, K)
    encod = poisson_counts((K, B, 8, 6))
    ext = torch.randn(B, 11, 2)
    out = net(encod, 0, ext)
    G, F, U, C = s.gen_dim, s.fac_dim, s.co_dim, s.con_dim
    expected = {
        "params": (K, B, 11, 9, 1),
        "factors": (K, B, 11, F),
        "ic_mean": (K, B, s.ic_dim),
        "ic_var": (K, B, s.ic_dim),
        "gen_init": (K, B, G),
        "gen_states": (K, B, 11, G),
        "gen_inputs": (K, B, 11, U + 2),
        "con_states": (K, B, 11, C),
        "co_mean": (K, B, 11, U),
        "co_var": (K, B, 11, U),
        "co_sample": (K, B, 11, U),
    }
    assert {n: tuple(v.shape) for n, v in out.as_dict().items()} == expected
    assert all(torch.isfinite(v).all() for v in out.as_dict().values())


def test_output_shapes_without_controller_have_empty_input_fields():
    s = tiny_structure(co_dim=0, recon_seq_len=10)
    out = LFADSNetwork(s, 2)(poisson_counts((2, B, 8, 6)))
    assert out.params.shape == (2, B, 10, 6, 1)
    for name in ("con_states", "co_mean", "co_var", "co_sample", "gen_inputs"):
        assert getattr(out, name).shape == (2, B, 10, 0), name


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_controller_input_is_lagged_encoder_and_zero_past_the_encoder_end(lag):
    s = tiny_structure(recon_seq_len=12, recon_data_dims=(8,), ci_lag=lag)
    net = _perturbed_network(s, 2, seed=5)
    net.train()  # dropout active but at rate 0: zeros must stay zeros
    seen: dict[str, torch.Tensor] = {}

    class Capture(type(net.ops)):
        def encoders(self, x, ic_encoder, ci_encoder):
            out = super().encoders(x, ic_encoder, ci_encoder)
            seen["fwd"], seen["bwd"] = out[2], out[3]
            return out

        def controlled_generator(self, con_x, *args, **kwargs):
            seen["ci"] = con_x  # the controller's input, (K, B, T, 2H), projected by the loop
            return super().controlled_generator(con_x, *args, **kwargs)

    net.ops = Capture()
    net(poisson_counts((2, B, 8, 6)).double(), dropout_rate=torch.zeros(2), sample=False)

    ci, fwd, bwd = seen["ci"], seen["fwd"], seen["bwd"]
    H = s.ci_enc_dim
    assert ci.shape == (2, B, 12, 2 * H)
    for t in range(12):
        fwd_part = fwd[:, :, t - lag] if lag <= t < 8 else torch.zeros_like(fwd[:, :, 0])
        bwd_part = bwd[:, :, t + lag] if t + lag < 8 else torch.zeros_like(bwd[:, :, 0])
        torch.testing.assert_close(ci[:, :, t, :H], fwd_part, rtol=0, atol=0, msg=f"t={t}")
        torch.testing.assert_close(ci[:, :, t, H:], bwd_part, rtol=0, atol=0, msg=f"t={t}")


@needs_cpp
def test_cpp_controller_input_trains_as_the_lag_then_dropout_composition():
    """Float32 with the C++ ops: outputs and gradients of a training-mode pass are those of the
    composition dropout(lagged(...)) with the same generator."""
    s = tiny_structure(recon_seq_len=12, recon_data_dims=(8,), ci_lag=1)
    net = _perturbed_network(s, K, seed=8).float().train()
    net.ops = CPP
    encod = poisson_counts((K, B, 8, 6), seed=8)
    rate = torch.tensor([0.0, 0.3, 0.6])

    def run():
        out = net(encod, dropout_rate=rate, generator=_gen(9))
        probe = torch.randn(out.params.shape, generator=_gen(10))
        loss = (out.params * probe).sum() + out.co_sample.sum()
        grads = torch.autograd.grad(loss, list(net.parameters()), materialize_grads=True)
        return [out.params, out.co_sample, *grads]

    fused_run = run()

    class Composition(type(CPP)):
        def lagged_dropout(self, fwd, bwd, lag, steps, rate, training, generator=None):
            return self.dropout(lagged(fwd, bwd, lag, steps), rate, training, generator)

    net.ops = Composition()
    for a, e in zip(fused_run, run(), strict=True):
        assert torch.equal(a, e)


def test_forward_prediction_is_deterministic_and_driven_by_the_observed_window():
    """Without sampling the prediction is a function of the data; the steps past T_enc respond to
    the observed data through the initial condition and generator alone."""
    s = tiny_structure(recon_seq_len=12, recon_data_dims=(8,))
    net = _perturbed_network(s, 1, seed=6).eval()
    encod = poisson_counts((1, B, 8, 6)).double()
    base = net(encod, sample=False).params
    again = net(encod.clone(), sample=False).params
    torch.testing.assert_close(base, again, rtol=0, atol=0)  # deterministic without sampling
    changed = encod.clone()
    changed[:, :, -1] += 3.0
    moved = net(changed, sample=False).params
    assert (moved[:, :, 8:] - base[:, :, 8:]).abs().max() > 0


def test_factors_readout_and_generator_inputs_compose_as_documented():
    s = tiny_structure(ext_input_dim=2)
    net = _perturbed_network(s, 2, seed=7).eval()
    encod = poisson_counts((2, B, 8, 6)).double()
    ext = torch.randn(B, 8, 2, generator=_gen(7), dtype=F64)
    out = net(encod, 0, ext, sample=False)
    w_fac = net.factor_readout.normalized_weight()
    torch.testing.assert_close(w_fac.norm(dim=1), torch.ones(2, s.fac_dim, dtype=F64))
    for k in range(2):
        torch.testing.assert_close(out.factors[k], out.gen_states[k] @ w_fac[k])
        readout = net.readout[0]
        torch.testing.assert_close(
            out.params[k, ..., 0], out.factors[k] @ readout.weight[k] + readout.bias[k]
        )
        ic_to_gen = net.ic_to_gen
        torch.testing.assert_close(
            out.gen_init[k], out.ic_mean[k] @ ic_to_gen.weight[k] + ic_to_gen.bias[k]
        )
    torch.testing.assert_close(out.co_sample, out.co_mean)  # sample=False uses the means
    torch.testing.assert_close(
        out.gen_inputs, torch.cat([out.co_mean, ext.expand(2, -1, -1, -1)], -1)
    )
    assert (out.ic_var >= s.ic_post_var_min).all()


def test_sampling_draws_from_the_posterior():
    s = tiny_structure()
    net = _perturbed_network(s, 2, seed=8).eval()
    encod = poisson_counts((2, B, 8, 6)).double()
    torch.manual_seed(0)
    a = net(encod, sample=True)
    b = net(encod, sample=True)
    assert not torch.equal(a.co_sample, b.co_sample)
    assert not torch.equal(a.gen_init, b.gen_init)
    torch.testing.assert_close(a.ic_mean, b.ic_mean)  # the posterior itself is deterministic
    z = ((a.co_sample - a.co_mean) / a.co_var.sqrt()).detach()
    assert z.abs().max() < 6 and z.std().item() == pytest.approx(1.0, abs=0.25)


def test_noise_comes_from_the_given_generator():
    s = tiny_structure()
    net = _perturbed_network(s, 2, seed=12).train()
    encod = poisson_counts((2, B, 8, 6)).double()
    rate = torch.tensor([0.2, 0.4])
    global_state = torch.get_rng_state()
    a = net(encod, dropout_rate=rate, sample=True, generator=_gen(1))
    b = net(encod, dropout_rate=rate, sample=True, generator=_gen(1))
    c = net(encod, dropout_rate=rate, sample=True, generator=_gen(2))
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is not used
    for name, value in a.as_dict().items():
        assert torch.equal(value, b.as_dict()[name]), name
    assert not torch.equal(a.params, c.params)


def test_dropout_is_per_worker_and_only_in_training():
    s = tiny_structure()
    net = _perturbed_network(s, 2, seed=9)
    encod = poisson_counts((2, B, 8, 6)).double()
    rate = torch.tensor([0.0, 0.5])
    net.eval()
    reference = net(encod, dropout_rate=rate, sample=False).params
    net.train()
    torch.manual_seed(1)
    dropped = net(encod, dropout_rate=rate, sample=False).params
    torch.testing.assert_close(dropped[0], reference[0], rtol=0, atol=0)
    assert (dropped[1] - reference[1]).abs().max() > 1e-3


def test_log_input_equals_feeding_log1p_of_the_data():
    s_log = tiny_structure(log_input=True)
    s_plain = tiny_structure(log_input=False)
    net_log = _perturbed_network(s_log, 2, seed=10).eval()
    net_plain = LFADSNetwork(s_plain, 2).double().eval()
    net_plain.load_state_dict(net_log.state_dict())
    encod = poisson_counts((2, B, 8, 6)).double()
    torch.testing.assert_close(
        net_log(encod, sample=False).params, net_plain(torch.log1p(encod), sample=False).params
    )


def test_readin_maps_each_session_to_the_shared_encoder_width():
    s = tiny_structure(encod_data_dims=(6, 4), recon_data_dims=(6, 5))
    net = LFADSNetwork(s, 2)
    assert [r.weight.shape for r in net.readin] == [(2, 6, 6), (2, 4, 6)]
    out = net(poisson_counts((2, B, 8, 4)), session=1)
    assert out.params.shape == (2, B, 8, 5, 1)
    with pytest.raises(RuntimeError):  # session 1 data through session 0's read-in
        net(poisson_counts((2, B, 8, 4)), session=0)


def test_l2_groups_follow_the_controller():
    with_con = LFADSNetwork(tiny_structure(), 2).l2_groups()
    without = LFADSNetwork(tiny_structure(co_dim=0), 2).l2_groups()
    assert set(with_con) == {"gen", "ic_enc", "con", "ci_enc"}
    assert set(without) == {"gen", "ic_enc"}


def test_init_readout_bias_starts_poisson_rates_at_channel_means():
    s = tiny_structure()
    net = LFADSNetwork(s, 3)
    mean = torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0, 0.0])
    net.init_readout_bias(0, mean)
    expected = mean.clamp_min(1e-4).log()
    torch.testing.assert_close(net.readout[0].bias, expected.expand(3, 6))


def test_factor_readout_columns_have_unit_norm():
    readout = FactorReadout(2, 7, 3)
    with torch.no_grad():
        readout.weight.mul_(torch.tensor([5.0, 0.1]).view(2, 1, 1))
    norms = readout.normalized_weight().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(2, 3))
    g = torch.randn(2, 4, 5, 7)
    torch.testing.assert_close(readout(g)[1], g[1] @ readout.normalized_weight()[1])


def test_factor_readout_of_time_major_states_is_the_same():
    """States stored time-major (a view of the loop's (K, T + 1, B, G) tape) give the same factors
    and gradients as a batch-major copy."""
    readout = FactorReadout(2, 7, 3)
    tape = torch.randn(2, 6, 4, 7, requires_grad=True)  # (K, T + 1, B, G)
    states = tape[:, 1:].transpose(1, 2)  # (K, B, T, G) view
    copied = states.detach().contiguous().requires_grad_()
    probe = torch.randn(2, 4, 5, 3)
    out, expected = readout(states), readout(copied)
    torch.testing.assert_close(out, expected)
    (g_tape,) = torch.autograd.grad((out * probe).sum(), tape)
    (g_copy,) = torch.autograd.grad((expected * probe).sum(), copied)
    torch.testing.assert_close(g_tape[:, 1:].transpose(1, 2), g_copy)


def _valid_data(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = _gen(11)
    if name == "poisson":
        return torch.poisson(torch.full(shape, 1.5), generator=g)
    if name in ("gamma", "zig"):
        y = torch.rand(shape, generator=g) * 3.0 + 0.2
        return (
            torch.where(torch.rand(shape, generator=g) < 0.3, torch.zeros(shape), y)
            if name == "zig"
            else y
        )
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize("reconstruction", sorted(OBSERVATION_MODELS))
@pytest.mark.parametrize("co_dim", [0, 2])
def test_every_observation_model_trains_end_to_end(reconstruction, co_dim, device):
    s = tiny_structure(reconstruction=reconstruction, co_dim=co_dim)
    net = LFADSNetwork(s, 2).to(device)
    data = _valid_data(reconstruction, (B, 8, 6)).to(device)
    batch = prepare_batch(data, data, 2, cd_rate=torch.tensor([0.3, 0.0], device=device))
    out = net(batch.encod_input, 0, None, torch.tensor([0.1, 0.0], device=device))
    n_params = net.observation_model(0).n_params
    assert isinstance(out, LFADSOutput)
    assert out.params.shape == (2, B, 8, 6, n_params)
    hps = {
        "kl_ic_scale": torch.ones(2, device=device),
        "kl_co_scale": torch.ones(2, device=device),
        "l2_gamma_scale": torch.ones(2, device=device),
    }
    loss, parts = lfads_loss(net, out, batch, 0, hps, ramp=1.0, loss_scale=1.0)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(net.factor_readout.weight.grad).all()
    assert net.factor_readout.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("co_dim", [0, 2])
def test_samples_per_trial_equal_repeating_the_trials(co_dim, device):
    """samples=S runs the encoders once per trial and gives what S repeated trials give."""
    structure = dataclasses.replace(tiny_structure(), co_dim=co_dim, ext_input_dim=1)
    net = _perturbed_network(structure, K, seed=3).eval().to(device)
    s = 4
    encod = poisson_counts((K, B, structure.encod_seq_len, structure.encod_data_dims[0]), seed=5)
    encod = encod.double().to(device)
    ext = torch.randn(B, structure.recon_seq_len, 1, generator=_gen(6), dtype=F64).to(device)

    def noise():
        return torch.Generator(device=device).manual_seed(7)

    with torch.no_grad():
        once = net(encod, 0, ext, None, True, noise(), samples=s)
        repeated = net(
            encod.repeat_interleave(s, 1), 0, ext.repeat_interleave(s, 0), None, True, noise()
        )
    for name, value in once.as_dict().items():
        torch.testing.assert_close(value, getattr(repeated, name), msg=name)
    assert once.params.shape[1] == B * s
