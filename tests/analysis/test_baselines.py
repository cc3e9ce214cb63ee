"""Tests of the smoothing + Poisson GLM co-smoothing baseline (autolfads.analysis.baselines)."""

import h5py
import numpy as np
import pytest

from autolfads.analysis.baselines import (
    fit_poisson_glm,
    gaussian_kernel,
    gaussian_smooth,
    glm_co_bps,
    predict_poisson_glm,
    session_glm_co_bps,
    smoothed_glm_rates,
    smoothing_matrix,
)
from autolfads.data import read_session


def latent_population(seed=0, n_trials=60, T=40, n_in=12, n_out=4):
    """Counts of held-in and held-out neurons driven by one slow latent with a random phase per trial."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(n_trials, 1, 1))
    latent = np.sin(0.25 * np.arange(T)[None, :, None] + phase)  # (B, T, 1)
    loadings = rng.uniform(0.6, 1.2, size=n_in + n_out) * rng.choice([-1, 1], size=n_in + n_out)
    rates = np.exp(0.3 + latent * loadings)  # (B, T, N)
    counts = rng.poisson(rates).astype(float)
    return counts[:, :, :n_in], counts[:, :, n_in:]


# --- smoothing -------------------------------------------------------------------------------


def test_gaussian_kernel_is_a_normalised_gaussian():
    kernel = gaussian_kernel(2.0)
    offsets = np.arange(-8, 9)
    expected = np.exp(-(offsets**2) / 8.0)
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-12)
    np.testing.assert_array_equal(gaussian_kernel(0.0), [1.0])


def test_smoothing_an_impulse_gives_the_kernel():
    spikes = np.zeros((1, 41, 1))
    spikes[0, 20, 0] = 3.0
    smoothed = gaussian_smooth(spikes, 2.5)
    kernel = gaussian_kernel(2.5)
    radius = kernel.size // 2
    np.testing.assert_allclose(smoothed[0, 20 - radius : 21 + radius, 0], 3.0 * kernel, rtol=1e-12)
    assert smoothed[0, : 20 - radius].sum() == 0.0


def test_smoothing_preserves_each_trials_total_even_at_the_edges():
    rng = np.random.default_rng(1)
    spikes = rng.poisson(1.0, size=(3, 10, 4)).astype(float)
    spikes[:, 0] += 5.0  # mass at the first bin, where a plain 'same' convolution would lose it
    for std in (0.7, 2.0, 6.0):  # the widest kernel is longer than the trial
        smoothed = gaussian_smooth(spikes, std)
        np.testing.assert_allclose(smoothed.sum(axis=1), spikes.sum(axis=1), rtol=1e-12)


def test_smoothing_matrix_reflects_at_the_edges():
    matrix = smoothing_matrix(6, 1.0)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-15)
    kernel = gaussian_kernel(1.0)  # offsets -4..4
    # bin 0 receives bin 0 (offset 0) plus, reflected, offset -1 -> bin 0, offset -2 -> bin 1, ...
    assert matrix[0, 0] == pytest.approx(kernel[4] + kernel[3])
    assert matrix[0, 1] == pytest.approx(kernel[5] + kernel[2])


def test_smoothing_rejects_bad_input():
    with pytest.raises(ValueError, match="smooth_bins"):
        gaussian_kernel(-1.0)
    with pytest.raises(ValueError, match=r"spikes: shape \(4, 5\)"):
        gaussian_smooth(np.zeros((4, 5)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        gaussian_smooth(np.full((1, 3, 1), np.nan), 1.0)


# --- Poisson GLM -----------------------------------------------------------------------------


def test_newton_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 3))
    weights = np.array([[0.5, -0.3], [-0.4, 0.0], [0.2, 0.6]])  # (D, M)
    bias = np.array([0.3, -0.5])
    y = rng.poisson(np.exp(x @ weights + bias)).astype(float)
    fit_w, fit_b = fit_poisson_glm(x, y, l2=0.0)
    np.testing.assert_allclose(fit_w, weights, atol=0.03)
    np.testing.assert_allclose(fit_b, bias, atol=0.03)


def test_newton_fit_is_at_a_stationary_point_of_the_penalised_objective():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 4))
    y = rng.poisson(np.exp(0.4 * x[:, :2] + 0.1)).astype(float)
    l2 = 0.05
    w, b = fit_poisson_glm(x, y, l2=l2)
    residual = predict_poisson_glm(x, w, b) - y  # (S, M)
    np.testing.assert_allclose(x.T @ residual / len(x) + l2 * w, 0.0, atol=1e-9)
    np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=1e-9)  # the bias is not penalised


def test_ridge_shrinks_the_weights():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 5))
    y = rng.poisson(np.exp(0.5 * x[:, :1])).astype(float)
    small, _ = fit_poisson_glm(x, y, l2=1e-4)
    large, _ = fit_poisson_glm(x, y, l2=5.0)  # about w * H / (H + l2), H ~ 1.1
    assert np.linalg.norm(large) < 0.5 * np.linalg.norm(small)


def test_glm_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="same S"):
        fit_poisson_glm(np.zeros((4, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="negative count"):
        fit_poisson_glm(np.zeros((3, 2)), -np.ones((3, 1)))
    with pytest.raises(ValueError, match="l2"):
        fit_poisson_glm(np.zeros((3, 2)), np.ones((3, 1)), l2=-1.0)


# --- co-smoothing ----------------------------------------------------------------------------


def test_baseline_predicts_held_out_neurons_with_shared_structure():
    heldin, heldout = latent_population()
    score = glm_co_bps(
        heldin[:45], heldout[:45], heldin[45:], heldout[45:], smooth_bins=1.5, l2=1e-2
    )
    assert score > 0.1


def test_baseline_gains_nothing_on_independent_noise():
    rng = np.random.default_rng(3)
    heldin = rng.poisson(1.5, size=(60, 40, 12)).astype(float)
    heldout = rng.poisson(1.5, size=(60, 40, 4)).astype(float)
    score = glm_co_bps(
        heldin[:45], heldout[:45], heldin[45:], heldout[45:], smooth_bins=1.5, l2=1e-2
    )
    assert -0.05 < score < 0.01


def test_smoothed_glm_rates_shape_and_positivity():
    heldin, heldout = latent_population(n_trials=20, T=10)
    rates = smoothed_glm_rates(heldin[:15], heldout[:15], heldin[15:], smooth_bins=1.0)
    assert rates.shape == (5, 10, 4)
    assert np.all(rates > 0) and np.all(np.isfinite(rates))


def test_smoothed_glm_rates_rejects_mismatched_splits():
    heldin, heldout = latent_population(n_trials=20, T=10)
    with pytest.raises(ValueError, match="train_heldout"):
        smoothed_glm_rates(heldin[:15], heldout[:14], heldin[15:], smooth_bins=1.0)
    with pytest.raises(ValueError, match="valid_heldin"):
        smoothed_glm_rates(heldin[:15], heldout[:15], heldin[15:, :, :5], smooth_bins=1.0)


def test_session_glm_co_bps_uses_the_held_out_channels(tmp_path):
    heldin, heldout = latent_population()
    counts = np.concatenate([heldin, heldout], axis=2).astype(np.float32)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["train_encod_data"], f["valid_encod_data"] = heldin[:45], heldin[45:]
        f["train_recon_data"], f["valid_recon_data"] = counts[:45], counts[45:]
    expected = glm_co_bps(
        heldin[:45], heldout[:45], heldin[45:], heldout[45:], smooth_bins=1.5, l2=1e-2
    )
    got = session_glm_co_bps(read_session(path), smooth_bins=1.5, l2=1e-2)
    assert got == pytest.approx(expected, rel=1e-9)


def test_session_glm_co_bps_scores_the_test_split_fit_on_train(tmp_path):
    heldin, heldout = latent_population()
    counts = np.concatenate([heldin, heldout], axis=2).astype(np.float32)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["train_encod_data"], f["valid_encod_data"] = heldin[:35], heldin[35:45]
        f["train_recon_data"], f["valid_recon_data"] = counts[:35], counts[35:45]
        f["test_encod_data"], f["test_recon_data"] = heldin[45:], counts[45:]
    session = read_session(path)
    expected = glm_co_bps(
        heldin[:35], heldout[:35], heldin[45:], heldout[45:], smooth_bins=1.5, l2=1e-2
    )
    got = session_glm_co_bps(session, smooth_bins=1.5, l2=1e-2, split="test")
    assert got == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="split='train'; expected a scored split"):
        session_glm_co_bps(session, smooth_bins=1.5, split="train")


def test_session_glm_co_bps_needs_held_out_channels(tmp_path):
    heldin, _ = latent_population(n_trials=10, T=8)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["train_encod_data"] = f["train_recon_data"] = heldin[:6]
        f["valid_encod_data"] = f["valid_recon_data"] = heldin[6:]
    with pytest.raises(ValueError, match="held-out neurons"):
        session_glm_co_bps(read_session(path), smooth_bins=1.0)
