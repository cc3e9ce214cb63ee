"""Observation models checked against torch.distributions, direct formulas and Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from autolfads.errors import ConfigError
from autolfads.model.observations import (
    MSE,
    OBSERVATION_MODELS,
    Gamma,
    Gaussian,
    ObservationModel,
    Poisson,
    ZeroInflatedGamma,
    build_observation_model,
)
from autolfads.train.augment import prepare_batch
from autolfads.train.objective import masked_mean_nll

B, T, N = 4, 5, 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample_data(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Valid data for each model, including exact zeros where the model allows them."""
    if name == "poisson":
        return torch.poisson(torch.full(shape, 1.5), generator=g)
    if name in ("gamma", "zig"):
        y = torch.rand(shape, generator=g) * 3.0
        return torch.where(torch.rand(shape, generator=g) < 0.3, torch.zeros(shape), y)
    return torch.randn(shape, generator=g)


def _raw_params(model: ObservationModel, k: int, g: torch.Generator) -> torch.Tensor:
    return 0.5 * torch.randn(k, B, T, N, model.n_params, generator=g)


# ---------------------------------------------------------------- log-likelihood vs oracles


def test_poisson_matches_torch_distribution_including_log_factorial():
    g = _gen(1)
    model = Poisson(2, N)
    params = _raw_params(model, 2, g)
    data = torch.poisson(torch.full((B, T, N), 2.0), generator=g)
    data[0, 0] = 0.0
    expected = D.Poisson(params[..., 0].exp()).log_prob(data)
    torch.testing.assert_close(model.log_likelihood(data, params), expected)
    torch.testing.assert_close(model.mean(params), params[..., 0].exp())


def test_gaussian_matches_torch_normal():
    g = _gen(2)
    model = Gaussian(2, N)
    params = _raw_params(model, 2, g)
    data = torch.randn(2, B, T, N, generator=g)
    data[..., 0] = 0.0
    expected = D.Normal(params[..., 0], params[..., 1].mul(0.5).exp()).log_prob(data)
    torch.testing.assert_close(model.log_likelihood(data, params), expected)
    torch.testing.assert_close(model.mean(params), params[..., 0])


def test_gamma_matches_torch_gamma_and_clamps_zeros():
    g = _gen(3)
    model = Gamma(2, N)
    params = _raw_params(model, 2, g)
    data = torch.rand(B, T, N, generator=g) * 2 + 0.01
    data[:, 0] = 0.0
    alpha, beta = params[..., 0].exp(), params[..., 1].exp()
    expected = D.Gamma(alpha, beta).log_prob(data.clamp_min(1e-6))
    out = model.log_likelihood(data, params)
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(model.mean(params), alpha / beta)


def test_mse_is_negative_squared_error():
    g = _gen(4)
    model = MSE(3, N)
    params = _raw_params(model, 3, g)
    data = torch.randn(B, T, N, generator=g)
    torch.testing.assert_close(model.log_likelihood(data, params), -((data - params[..., 0]) ** 2))
    nll = -model.log_likelihood(data, params).mean(dim=(1, 2, 3))
    mse = torch.nn.functional.mse_loss
    expected = torch.stack([mse(params[k, ..., 0], data) for k in range(3)])
    torch.testing.assert_close(nll, expected)


def _zig_oracle(model: ZeroInflatedGamma, data: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log p from torch.distributions, written per case."""
    alpha = params[..., 0].exp()
    q = torch.sigmoid(params[..., 1])
    scale = model.log_scale.detach().exp()[:, None, None, :]
    excess = (data - model.s_min).clamp_min(1e-6)
    log_gamma = D.Gamma(alpha, 1.0 / scale.expand_as(alpha)).log_prob(excess)
    return torch.where(data == 0, torch.log1p(-q), torch.log(q) + log_gamma)


def test_zig_matches_oracle_on_zeros_near_s_min_and_below_s_min():
    g = _gen(5)
    model = ZeroInflatedGamma(2, N, s_min=0.1, gamma_prior=0.7)
    with torch.no_grad():
        model.log_scale.add_(0.2 * torch.randn(2, N, generator=g))  # distinct scales
    params = _raw_params(model, 2, g).double()
    model.double()
    data = torch.rand(B, T, N, generator=g, dtype=torch.float64) * 2 + 0.1
    data[0] = 0.0  # zeros
    data[1] = 0.1 + 1e-3  # just above s_min
    data[2] = 0.05  # between 0 and s_min
    out = model.log_likelihood(data, params)
    torch.testing.assert_close(out, _zig_oracle(model, data, params))
    # values in (0, s_min] count as just above s_min
    at_floor = data.clone()
    at_floor[2] = 0.1
    torch.testing.assert_close(out[:, 2], model.log_likelihood(at_floor, params)[:, 2])
    # zeros only depend on q: log(1 - q)
    torch.testing.assert_close(out[:, 0], torch.log1p(-torch.sigmoid(params[:, 0, ..., 1])))


def test_zig_mean_matches_monte_carlo_of_generative_process():
    g = _gen(6)
    model = ZeroInflatedGamma(1, 2, s_min=0.2, gamma_prior=0.5)
    with torch.no_grad():
        model.log_scale.copy_(torch.tensor([[math.log(0.5), math.log(1.5)]]))
    params = torch.tensor([[math.log(2.0), 0.3], [math.log(0.6), -1.0]]).view(1, 1, 1, 2, 2)
    mean = model.mean(params)[0, 0, 0]  # (N,)
    alpha, q = params[0, 0, 0, :, 0].exp(), torch.sigmoid(params[0, 0, 0, :, 1])
    scale = model.log_scale.detach().exp()[0]
    n = 200_000
    nonzero = torch.rand(n, 2, generator=g) < q
    gamma = D.Gamma(alpha, 1.0 / scale).sample((n,))
    y = torch.where(nonzero, model.s_min + gamma, torch.zeros(()))
    standard_error = y.std(0) / math.sqrt(n)
    assert ((y.mean(0) - mean).abs() < 5 * standard_error).all()
    torch.testing.assert_close(mean, q * (model.s_min + alpha * scale))


def test_zig_regularizer_shape_and_value():
    model = ZeroInflatedGamma(3, 4, gamma_prior=2.0)
    torch.testing.assert_close(model.regularizer(), torch.zeros(3))
    with torch.no_grad():
        model.log_scale[1] = math.log(3.0)  # theta - prior = 1 on every channel of worker 1
        model.gamma_prior[2] = 4.0  # PBT changed worker 2's prior: (2 - 4)^2 = 4
    torch.testing.assert_close(model.regularizer(), torch.tensor([0.0, 1.0, 4.0]))
    model.regularizer().sum().backward()
    scale, prior = model.log_scale.detach().exp(), model.gamma_prior[:, None]
    torch.testing.assert_close(model.log_scale.grad, 2 * (scale - prior) * scale / 4)


def _zig_events(scales: torch.Tensor, n: int, shape: float, q: float, s_min: float, seed: int):
    """(n, N) zero-inflated gamma draws with per-channel `scales`, a fifth of them NaN."""
    g = _gen(seed)
    gamma = D.Gamma(torch.full_like(scales, shape), 1.0 / scales).sample((n,))
    y = torch.where(torch.rand(n, scales.numel(), generator=g) < q, s_min + gamma, 0.0)
    return torch.where(torch.rand(y.shape, generator=g) < 0.2, torch.nan, y)


def test_zig_moment_scales_recover_each_channels_scale_and_pool_the_rare_ones():
    scales = torch.tensor([0.05, 0.3, 2.0, 7.0], dtype=torch.float64)
    data = _zig_events(scales, 20_000, shape=3.0, q=0.3, s_min=0.3, seed=11)
    data[:, 3] = torch.where(torch.arange(20_000) < 2, 0.3 + scales[3], 0.0)  # 2 events only
    model = ZeroInflatedGamma(2, 4, s_min=0.3).double()
    got = model.moment_scales(data)
    torch.testing.assert_close(got[:3], scales[:3], rtol=0.06, atol=0.0)
    events = data[torch.isfinite(data) & (data > 0)] - 0.3
    torch.testing.assert_close(got[3], events.var() / events.mean())  # pooled
    no_events = ZeroInflatedGamma(1, 2, s_min=0.3).moment_scales(torch.zeros(10, 2))
    torch.testing.assert_close(no_events, torch.ones(2))


def test_zig_scales_from_data_start_at_the_estimate_and_do_not_depend_on_units():
    scales = torch.tensor([0.1, 0.4, 1.5])
    data = _zig_events(scales, 4000, shape=4.0, q=0.4, s_min=0.3, seed=12)
    penalties = []
    for unit in (1.0, 100.0):  # the same events in other units (s_min with them)
        model = ZeroInflatedGamma(
            2, 3, s_min=0.3 * unit, gamma_prior=2.0, gamma_scale_from_data=True
        )
        with torch.no_grad():
            model.gamma_prior[1] = 0.5  # PBT's draw for worker 1
        model.init_from_data(data * unit)
        reference = model.moment_scales(data * unit)
        torch.testing.assert_close(model.scale_reference, reference.expand(2, 3))
        start = torch.stack([2.0 * reference, 0.5 * reference])
        torch.testing.assert_close(model.log_scale.detach().exp(), start)
        torch.testing.assert_close(model.regularizer(), torch.zeros(2))
        with torch.no_grad():
            model.log_scale.add_(math.log(1.5))  # every scale 1.5x its start
        penalties.append(model.regularizer())
    torch.testing.assert_close(penalties[0], torch.tensor([1.0, 0.0625]))  # (3 - 2)^2, (.75 - .5)^2
    torch.testing.assert_close(penalties[1], penalties[0])


def test_zig_without_scales_from_data_keeps_the_prior_in_data_units():
    model = ZeroInflatedGamma(1, 3, s_min=0.3, gamma_prior=0.7)
    model.init_from_data(_zig_events(torch.tensor([0.1, 0.4, 1.5]), 500, 4.0, 0.4, 0.3, seed=13))
    torch.testing.assert_close(model.log_scale.detach().exp(), torch.full((1, 3), 0.7))
    torch.testing.assert_close(model.scale_reference, torch.ones(1, 3))


def test_zig_loads_a_state_dict_from_before_the_scale_reference():
    old = ZeroInflatedGamma(2, 3, gamma_prior=0.5).state_dict()
    del old["scale_reference"]
    model = ZeroInflatedGamma(2, 3, gamma_scale_from_data=True)
    model.scale_reference.fill_(4.0)
    model.load_state_dict(old)
    torch.testing.assert_close(model.scale_reference, torch.ones(2, 3))
    torch.testing.assert_close(model.gamma_prior, torch.full((2,), 0.5))


def test_zig_rejects_bad_settings():
    with pytest.raises(ConfigError, match="s_min"):
        ZeroInflatedGamma(1, 2, s_min=0.0)
    with pytest.raises(ConfigError, match="gamma_prior"):
        ZeroInflatedGamma(1, 2, gamma_prior=-1.0)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", sorted(OBSERVATION_MODELS))
def test_gradcheck_log_likelihood_wrt_params(name):
    g = _gen(7)
    model = OBSERVATION_MODELS[name](2, 2).double()
    data = _sample_data(name, (2, 2, 2), g).double()
    if name in ("gamma", "zig"):
        data[data > 0] += 0.15  # keep finite differences away from the clamp kinks
    params = (0.5 * torch.randn(2, 2, 2, 2, model.n_params, generator=g)).double()
    params.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: model.log_likelihood(data, p), (params,))


def test_gradcheck_zig_wrt_log_scale():
    g = _gen(8)
    model = ZeroInflatedGamma(2, 2).double()
    data = _sample_data("zig", (2, 2, 2), g).double()
    data[data > 0] += 0.15
    params = (0.5 * torch.randn(2, 2, 2, 2, 2, generator=g)).double()
    log_scale = (0.3 * torch.randn(2, 2, generator=g)).double().requires_grad_(True)

    def loglik(ls):  # calling the module is log_likelihood
        return torch.func.functional_call(model, {"log_scale": ls}, (data, params))

    assert torch.autograd.gradcheck(loglik, (log_scale,))


@pytest.mark.parametrize("name", sorted(OBSERVATION_MODELS))
def test_placeholder_data_gives_no_nan_gradients(name):
    g = _gen(9)
    model = build_observation_model(name, 2, N)
    data = _sample_data(name, (B, T, N), g)
    observed = torch.rand(B, T, N, generator=g) < 0.5
    filled = torch.where(observed, data, torch.full_like(data, model.placeholder))
    # extreme raw params as well: placeholders must stay harmless there too
    params = (3.0 * torch.randn(2, B, T, N, model.n_params, generator=g)).requires_grad_(True)
    loss = -(model.log_likelihood(filled, params) * observed).sum()
    loss.backward()
    assert torch.isfinite(params.grad).all()
    assert (params.grad[:, ~observed] == 0).all()
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()


# ---------------------------------------------------------------- shared checks over the registry


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("data_has_worker_axis", [False, True])
@pytest.mark.parametrize("name", sorted(OBSERVATION_MODELS))
def test_every_model_shapes_finiteness_and_gradient_flow(name, k, data_has_worker_axis):
    g = _gen(10)
    model = build_observation_model(name, k, N, s_min=0.1, gamma_prior=1.0)
    assert model.name == name
    shape = (k, B, T, N) if data_has_worker_axis else (B, T, N)
    data = _sample_data(name, shape, g)
    params = _raw_params(model, k, g).requires_grad_(True)
    ll = model.log_likelihood(data, params)
    assert ll.shape == (k, B, T, N)
    assert torch.isfinite(ll).all()
    assert model.mean(params).shape == (k, B, T, N)
    assert model.regularizer().shape == (k,)
    (-ll.sum() + model.regularizer().sum()).backward()
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0
    # each worker's log-likelihood depends on its own params only
    changed = params.detach().clone()
    changed[-1] += 1.0
    ll_changed = model.log_likelihood(data, changed)
    torch.testing.assert_close(ll_changed[:-1], ll.detach()[:-1])
    assert not torch.allclose(ll_changed[-1], ll.detach()[-1])


@pytest.mark.parametrize("name", sorted(OBSERVATION_MODELS))
def test_init_bias_reproduces_channel_means(name):
    g = _gen(11)
    model = build_observation_model(name, 1, 6, s_min=0.1, gamma_prior=1.0)
    mean_data = torch.tensor([0.05, 0.3, 1.0, 2.5, 7.0, 0.15])
    if name in ("gaussian", "mse"):
        mean_data = mean_data - 1.0 + 0.1 * torch.randn(6, generator=g)
    bias = model.init_bias(mean_data)
    assert bias.shape == (6, model.n_params)
    params = bias.expand(1, 2, 3, 6, model.n_params)
    torch.testing.assert_close(model.mean(params), mean_data.expand(1, 2, 3, 6))


def test_wrong_number_of_params_is_a_clear_error():
    with pytest.raises(ValueError, match="last dimension 2"):
        Gaussian(1, N).log_likelihood(torch.zeros(B, T, N), torch.zeros(1, B, T, N, 1))


# ---------------------------------------------------------------- registry builder


def test_builder_by_name_ignores_unused_settings_and_passes_used_ones():
    poisson = build_observation_model("poisson", 2, 3, s_min=0.3, gamma_prior=2.0)
    assert isinstance(poisson, Poisson)
    zig = build_observation_model("zig", 2, 3, s_min=0.3, gamma_prior=2.0, unused=1)
    assert isinstance(zig, ZeroInflatedGamma) and zig.s_min == 0.3
    torch.testing.assert_close(zig.log_scale.detach(), torch.full((2, 3), math.log(2.0)))
    torch.testing.assert_close(zig.gamma_prior, torch.full((2,), 2.0))


def test_builder_with_dotted_path():
    model = build_observation_model("autolfads.model.observations.Gamma", 1, 4, s_min=0.3)
    assert isinstance(model, Gamma) and model.n_channels == 4


def test_builder_unknown_name_lists_registry():
    with pytest.raises(ConfigError, match="'poison'.*poisson, gaussian, gamma, zig, mse"):
        build_observation_model("poison", 1, 2)
    with pytest.raises(ConfigError, match="no_such_module.Cls"):
        build_observation_model("no_such_module.Cls", 1, 2)
    with pytest.raises(ConfigError, match="not a subclass"):
        build_observation_model("torch.nn.Linear", 1, 2)


# ---------------------------------------------------------------- direct formulas, masking


def _gamma_log_pdf_scalar(y: float, alpha: float, rate: float) -> float:
    """log Gamma(y; shape alpha, rate beta), written out with math.lgamma."""
    return alpha * math.log(rate) - math.lgamma(alpha) + (alpha - 1) * math.log(y) - rate * y


def _gamma_nll_direct(data: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Elementwise -log p(y) under Gamma(alpha, beta), alpha = exp(p0), beta = exp(p1), y >= 1e-6."""
    out = torch.empty(params.shape[:-1], dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in out.shape]).tolist():
        alpha, beta = (math.exp(v) for v in params[tuple(idx)].tolist())
        y = max(float(data[tuple(idx[1:])]), 1e-6)
        out[tuple(idx)] = -_gamma_log_pdf_scalar(y, alpha, beta)
    return out


def _zig_nll_direct(
    data: torch.Tensor, params: torch.Tensor, s_min: float, scale: torch.Tensor
) -> torch.Tensor:
    """Elementwise -log p(y) of the zero-inflated gamma, written case by case with math.lgamma."""
    out = torch.empty(params.shape[:-1], dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in out.shape]).tolist():
        log_alpha, logit_q = params[tuple(idx)].tolist()
        q = 1.0 / (1.0 + math.exp(-logit_q))
        y = float(data[tuple(idx[1:])])
        if y == 0:
            out[tuple(idx)] = -math.log(1.0 - q)
        else:
            theta = float(scale[idx[0], idx[-1]])
            excess = max(y - s_min, 1e-6)
            log_g = _gamma_log_pdf_scalar(excess, math.exp(log_alpha), 1.0 / theta)
            out[tuple(idx)] = -(math.log(q) + log_g)
    return out


def test_gamma_nll_matches_the_direct_formula_including_zeros_and_tiny_values():
    g = _gen(12)
    model = Gamma(2, N).double()
    params = _raw_params(model, 2, g).double()
    data = (torch.rand(B, T, N, generator=g, dtype=torch.float64) * 3).clamp_min(0.01)
    data[0, 0] = 0.0  # exact zeros (rectified EMG): clamped at 1e-6
    data[1, 1] = 1e-7  # below the floor: same as the floor
    data[2, 2] = 1e-3
    nll = -model.log_likelihood(data, params)
    torch.testing.assert_close(nll, _gamma_nll_direct(data, params))
    assert torch.isfinite(nll).all()
    alpha, beta = params[..., 0].exp(), params[..., 1].exp()
    torch.testing.assert_close(model.mean(params), alpha / beta)  # mean = shape / rate


def test_zig_nll_matches_the_direct_formula_at_zero_and_around_s_min():
    g = _gen(13)
    s_min = 0.1
    model = ZeroInflatedGamma(2, N, s_min=s_min, gamma_prior=0.8).double()
    with torch.no_grad():
        model.log_scale.add_(0.3 * torch.randn(2, N, generator=g, dtype=torch.float64))
    params = _raw_params(model, 2, g).double()
    data = torch.rand(B, T, N, generator=g, dtype=torch.float64) * 2 + s_min
    data[0] = 0.0  # no event
    data[1, :, 0] = s_min  # exactly at the threshold: excess clamped at 1e-6
    data[1, :, 1] = s_min + 1e-4  # just above
    data[1, :, 2] = 0.5 * s_min  # between 0 and s_min: counted as at the threshold
    data[2, 0] = 5.0  # a large event
    nll = -model.log_likelihood(data, params)
    expected = _zig_nll_direct(data, params, s_min, model.log_scale.detach().exp())
    torch.testing.assert_close(nll, expected)
    assert torch.isfinite(nll).all()


@pytest.mark.parametrize("name", ["gamma", "zig"])
def test_nan_entries_are_left_out_of_the_loss_and_send_no_gradient(name):
    g = _gen(14)
    model = build_observation_model(name, 2, N, s_min=0.1, gamma_prior=1.0).double()
    data = _sample_data(name, (B, T, N), g).double()
    if name == "zig":
        data[(data > 0) & (data < 0.1)] = 0.0  # events are >= s_min
    unobserved = torch.rand(B, T, N, generator=g) < 0.3
    recon = torch.where(unobserved, torch.full_like(data, math.nan), data)
    batch = prepare_batch(recon, recon, 2, placeholder=model.placeholder, training=False)
    params = _raw_params(model, 2, g).double().requires_grad_(True)
    loss = masked_mean_nll(-model.log_likelihood(batch.target, params), batch)  # (K,)
    direct = (
        _gamma_nll_direct(data, params.detach())
        if name == "gamma"
        else _zig_nll_direct(data, params.detach(), 0.1, model.log_scale.detach().exp())
    )
    torch.testing.assert_close(loss, direct[:, ~unobserved].mean(dim=1))
    loss.sum().backward()
    assert torch.isfinite(params.grad).all()
    assert (params.grad[:, unobserved] == 0).all()
    assert (params.grad[:, ~unobserved] != 0).any()
