"""Fixed points of maps with known answers, the generator's one-step map, and the command."""

import math

import h5py
import numpy as np
import pytest
import torch
from helpers import default_hps, tiny_structure

from autolfads.analysis.fixed_points import (
    find_fixed_points,
    fixed_points_command,
    generator_step,
    step_jacobians,
)
from autolfads.errors import DataError, UsageError
from autolfads.model.lfads import LFADSNetwork
from autolfads.outputs.checkpoint import LFADS

FAST = {"n_iters": 200, "n_polish": 10}


def _rotation(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _finite_difference_jacobian(step, h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(H, H) central differences of step at one state h (H,)."""
    columns = []
    for j in range(h.shape[0]):
        d = torch.zeros_like(h)
        d[j] = eps
        columns.append((step((h + d)[None])[0] - step((h - d)[None])[0]) / (2 * eps))
    return torch.stack(columns, dim=1)


def _network(seed: int = 0, **overrides) -> LFADSNetwork:
    torch.manual_seed(seed)
    return LFADSNetwork(tiny_structure(**overrides), 1).double()


def test_linear_rotation_has_the_origin_with_its_damped_rotation_eigenvalues():
    theta = 0.3
    a = 0.9 * _rotation(theta)
    inits = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    found = find_fixed_points(lambda h: h @ a.T, inits, bin_ms=20.0, **FAST)
    assert len(found) == 1 and found.candidate_speeds.shape == (8,)
    assert torch.allclose(found.states[0], torch.zeros(2, dtype=torch.float64), atol=1e-7)
    assert torch.allclose(found.jacobians[0], a)
    eig = found.eigenvalues[0]
    expected = 0.9 * torch.exp(1j * torch.tensor([theta, -theta], dtype=torch.float64))
    assert torch.allclose(eig[eig.imag.argsort(descending=True)], expected)
    assert bool(found.stable[0])
    hz = theta / (2 * math.pi * 0.020)
    assert found.main_frequency()[0].item() == pytest.approx(hz)
    assert found.frequencies()[0].abs().tolist() == pytest.approx([hz, hz])
    assert found.time_constants()[0, 0].item() == pytest.approx(-20.0 / math.log(0.9))
    assert "0.9000" in found.summary_table() and "freq (Hz)" in found.summary_table()


def test_a_generator_with_zero_weights_halves_its_state():
    net = _network()
    with torch.no_grad():
        for p in net.generator.parameters():
            p.zero_()  # r = u = 1/2, candidate 0: F(g) = g / 2
    inits = torch.randn(6, 10, dtype=torch.float64)
    found = find_fixed_points(generator_step(net), inits, **FAST)
    assert len(found) == 1
    assert found.states.abs().max() < 1e-8
    assert torch.allclose(found.eigenvalues[0], torch.full((10,), 0.5, dtype=torch.complex128))
    assert found.main_frequency()[0] == 0.0 and "cycles/bin" in found.summary_table()


def test_gru_linearisation_at_its_fixed_point_matches_the_formula_and_finite_differences():
    # With no candidate bias, g = 0 is a fixed point and dF/dg there is
    # diag(u) + diag(1 - u) W_c^T diag(r), u = sigmoid(b_u), r = sigmoid(b_r).
    net = _network(seed=1)
    g, cell = 10, net.generator
    with torch.no_grad():
        cell.bias[0, :g].normal_()  # reset gate
        cell.bias[0, g : 2 * g].normal_()  # update gate
        cell.bias[0, 2 * g :] = 0.0
        cell.candidate_weight.mul_(0.5)
    step = generator_step(net)
    inits = 0.3 * torch.randn(5, g, dtype=torch.float64)
    found = find_fixed_points(step, inits, **FAST)
    assert len(found) == 1 and found.states.abs().max() < 1e-8
    r, u = torch.sigmoid(cell.bias[0, :g]).detach(), torch.sigmoid(cell.bias[0, g : 2 * g]).detach()
    w_c = cell.candidate_weight[0].detach()
    formula = torch.diag(u) + torch.diag(1 - u) @ w_c.T @ torch.diag(r)
    assert torch.allclose(found.jacobians[0], formula, atol=1e-12)
    assert torch.allclose(found.jacobians[0], _finite_difference_jacobian(step, found.states[0]))
    expected_radius = torch.linalg.eigvals(formula).abs().max()
    assert found.spectral_radius[0].item() == pytest.approx(expected_radius.item())
    assert bool(found.stable[0]) == (expected_radius < 1).item()


def test_closed_form_autograd_and_finite_difference_jacobians_agree_away_from_fixed_points():
    step = generator_step(_network(seed=2, cell_clip=1.0))
    states = 2.0 * torch.randn(4, 10, dtype=torch.float64)
    assert (step(states).abs() == 1.0).any()  # some units clip: their rows must be zero
    closed_form = step_jacobians(step, states)
    by_autograd = step_jacobians(lambda h: step(h), states, max_rows=25)  # 3 passes of 2 states
    assert torch.allclose(closed_form, by_autograd, atol=1e-12)
    for i in range(4):
        fd = _finite_difference_jacobian(step, states[i])
        assert torch.allclose(closed_form[i], fd, atol=1e-8)


def test_generator_step_is_the_network_generator_with_a_constant_input():
    torch.manual_seed(0)
    net = LFADSNetwork(tiny_structure(ext_input_dim=1), n_workers=2).double()
    co, ext = torch.randn(2, dtype=torch.float64), torch.randn(1, dtype=torch.float64)
    h = torch.randn(2, 4, 10, dtype=torch.float64)  # (K, B, G)
    x = net.generator.project_input(ext.expand(2, 4, 1), (4,)) + net.co_to_gen(co.expand(2, 4, 2))
    expected = net.generator.step(x, h)  # (K, B, G)
    for worker in (0, 1):
        step = generator_step(net, worker=worker, inputs=torch.cat([co, ext]))
        assert torch.allclose(step(h[worker]), expected[worker])
    with pytest.raises(ValueError, match=r"`inputs` must have shape \(3,\)"):
        generator_step(net, inputs=torch.zeros(2))
    with pytest.raises(ValueError, match="`worker` must be in"):
        generator_step(net, worker=2)


def test_double_well_points_are_found_once_each_with_their_stability():
    # F(h) = h - 0.1 (h^3 - h): fixed points -1, 0, 1 with slopes 0.8, 1.1, 0.8
    inits = torch.linspace(-1.6, 1.6, 24, dtype=torch.float64)[:, None]
    found = find_fixed_points(lambda h: h - 0.1 * (h**3 - h), inits, **FAST)
    order = found.states[:, 0].argsort()
    assert torch.allclose(found.states[order, 0], torch.tensor([-1.0, 0.0, 1.0]).double())
    assert found.stable[order].tolist() == [True, False, True]
    assert torch.allclose(found.eigenvalues[order, 0].real, torch.tensor([0.8, 1.1, 0.8]).double())


def test_points_closer_than_the_tolerance_merge_into_the_slowest():
    # no optimisation: the candidates are the initial states; F(h) = h / 2 has speed h^2 / 8
    inits = torch.tensor([[1.0005], [0.9998], [1.0], [3.0]], dtype=torch.float64)
    found = find_fixed_points(
        lambda h: 0.5 * h, inits, n_iters=0, n_polish=0, speed_tol=10.0, dedupe_tol=1e-3
    )
    assert found.states[:, 0].tolist() == [0.9998, 3.0]
    assert found.speeds.tolist() == pytest.approx([0.9998**2 / 8, 9 / 8])
    kept_apart = find_fixed_points(
        lambda h: 0.5 * h, inits, n_iters=0, n_polish=0, speed_tol=10.0, dedupe_tol=1e-5
    )
    assert len(kept_apart) == 4
    too_fast = find_fixed_points(
        lambda h: 0.5 * h, inits, n_iters=0, n_polish=0, speed_tol=0.2, dedupe_tol=0.0
    )
    assert too_fast.states[:, 0].tolist() == [0.9998, 1.0, 1.0005]
    assert too_fast.jacobians.shape == (3, 1, 1)


def test_bad_search_settings_name_the_argument():
    inits = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="`speed_tol` must be > 0, got 0"):
        find_fixed_points(lambda h: h, inits, speed_tol=0.0)
    with pytest.raises(ValueError, match=r"`initial_states` must be \(M, H\).*got shape \(2,\)"):
        find_fixed_points(lambda h: h, torch.zeros(2))
    with pytest.raises(ValueError, match=r"`step` must map states \(M, H\) to \(M, H\)"):
        find_fixed_points(lambda h: h[:, :1], inits)


def _checkpoint_and_data(tmp_path, n_channels=6):
    torch.manual_seed(0)
    hps = {k: v[0] for k, v in default_hps(1).items()}
    model = LFADS(LFADSNetwork(tiny_structure(), 1), hps, {}, ["s"])
    ckpt = model.save(tmp_path / "model.ckpt")
    rng = np.random.default_rng(0)
    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as f:
        for split in ("train", "valid"):
            counts = rng.poisson(1.0, size=(4, 8, n_channels)).astype(np.float32)
            f[f"{split}_encod_data"] = counts
            f[f"{split}_recon_data"] = counts
    return ckpt, data


@pytest.mark.parametrize("with_data", [True, False])
def test_command_writes_points_and_plot(tmp_path, capsys, with_data):
    ckpt, data = _checkpoint_and_data(tmp_path)
    out = fixed_points_command(
        ckpt, [data] if with_data else [], tmp_path / "fp", n_inits=12, bin_ms=10.0, **FAST
    )
    assert out == tmp_path / "fp"
    with h5py.File(out / "fixed_points.h5", "r") as f:
        p = f["states"].shape[0]
        assert p >= 1  # a continuous map of the bounded box [-clip, clip]^G has a fixed point
        assert f["states"].shape == (p, 10) and f["jacobians"].shape == (p, 10, 10)
        assert f["eigenvalues_real"].shape == f["eigenvalues_imag"].shape == (p, 10)
        assert f["stable"].shape == f["speeds"].shape == (p,)
        assert f["candidate_speeds"].shape == (12,) and f.attrs["frequency_unit"] == "Hz"
        assert (f["speeds"][()] < 1e-8).all()
    assert (out / "fixed_points.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "fixed_points.h5" in printed and printed.count("\n") >= p + 2


def test_command_errors_name_the_missing_or_mismatched_input(tmp_path):
    ckpt, data = _checkpoint_and_data(tmp_path)
    with pytest.raises(UsageError, match="missing.ckpt: checkpoint not found"):
        fixed_points_command(tmp_path / "missing.ckpt")
    with pytest.raises(UsageError, match="nope.h5: data file not found"):
        fixed_points_command(ckpt, [tmp_path / "nope.h5"])
    with pytest.raises(UsageError, match="`speed_tol` must be > 0, got -1"):
        fixed_points_command(ckpt, [data], speed_tol=-1.0)
    _, wide = _checkpoint_and_data(tmp_path / "wide", n_channels=7)
    with pytest.raises(DataError, match="encod_data_dim is 7 but the model expects 6"):
        fixed_points_command(ckpt, [wide], tmp_path / "fp")
    assert not (tmp_path / "fp").exists()
