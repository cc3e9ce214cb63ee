"""Tests of autolfads.analysis.metrics against direct formulas and hand-computed cases."""

import math
from pathlib import Path

import numpy as np
import pytest

from autolfads.analysis import (
    bits_per_spike,
    bps_ratio,
    co_bps,
    fp_bps,
    poisson_nll,
    r2_score,
    ridge_decoding_r2,
    session_metrics,
)
from autolfads.data import SessionData


def simulated_poisson(seed=0, shape=(40, 20, 6)):
    """True rates varying over trials, time and neurons, and Poisson counts drawn from them."""
    rng = np.random.default_rng(seed)
    b, t, n = shape
    phase = rng.uniform(0, 2 * np.pi, size=(b, 1, n))
    time = np.arange(t)[None, :, None]
    rates = np.exp(0.3 + 1.2 * np.sin(0.4 * time + phase))
    return rates, rng.poisson(rates).astype(float)


def direct_nll(rates, counts):
    """Poisson NLL summed in pure Python, skipping NaN counts."""
    total = 0.0
    for r, k in zip(np.ravel(rates), np.ravel(counts), strict=True):
        if math.isnan(k):
            continue
        total += r - k * math.log(r) + math.lgamma(k + 1)
    return total


# --- poisson_nll -----------------------------------------------------------------------------


def test_poisson_nll_matches_direct_formula():
    rates, counts = simulated_poisson(shape=(3, 4, 2))
    assert poisson_nll(rates, counts) == pytest.approx(direct_nll(rates, counts), rel=1e-12)


def test_poisson_nll_handles_noninteger_counts_and_zero_rates():
    rates = np.array([0.7, 2.5, 0.0])
    counts = np.array([1.5, 3.0, 0.0])
    expected = direct_nll(rates[:2], counts[:2]) + 1e-9  # zero rate, zero count: floor only
    assert poisson_nll(rates, counts) == pytest.approx(expected, rel=1e-12)


def test_poisson_nll_skips_nan_counts():
    rates, counts = simulated_poisson(shape=(3, 4, 2))
    counts[0, 1, 0] = counts[2, 3, 1] = np.nan
    altered = rates.copy()
    altered[0, 1, 0] = altered[2, 3, 1] = 123.0
    assert poisson_nll(rates, counts) == pytest.approx(direct_nll(rates, counts), rel=1e-12)
    assert poisson_nll(altered, counts) == poisson_nll(rates, counts)


def test_poisson_nll_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"rates/counts: shapes \(2, 3\) and \(3, 2\)"):
        poisson_nll(np.ones((2, 3)), np.ones((3, 2)))


# --- bits_per_spike --------------------------------------------------------------------------


def test_bits_per_spike_hand_computed_case():
    # 1 trial, 3 bins, 2 neurons
    counts = np.array([[[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]]])
    rates = np.array([[[0.5, 0.5], [2.0, 1.0], [1.0, 0.5]]])
    # null rates: neuron 0 mean (1+2+0)/3 = 1, neuron 1 mean (0+1+1)/3 = 2/3
    null0, null1 = 1.0, 2.0 / 3.0
    # the log-factorial terms (log 1!, log 2!, ...) are the same in both NLLs and cancel
    lf = math.log(2)  # log 2! from the count of 2; all others are log 0! or log 1! = 0
    nll_model = (
        (0.5 - 1 * math.log(0.5))
        + (0.5 - 0)
        + (2.0 - 2 * math.log(2.0) + lf)
        + (1.0 - 1 * math.log(1.0))
        + (1.0 - 0)
        + (0.5 - 1 * math.log(0.5))
    )
    nll_null = (
        (null0 - 1 * math.log(null0))
        + (null1 - 0)
        + (null0 - 2 * math.log(null0) + lf)
        + (null1 - 1 * math.log(null1))
        + (null0 - 0)
        + (null1 - 1 * math.log(null1))
    )
    total_spikes = 5.0
    expected = (nll_null - nll_model) / (total_spikes * math.log(2))
    assert poisson_nll(rates, counts) == pytest.approx(nll_model, rel=1e-12)
    assert bits_per_spike(rates, counts) == pytest.approx(expected, rel=1e-12)


def test_bits_per_spike_is_zero_for_the_null_rates():
    _, counts = simulated_poisson()
    null = np.broadcast_to(counts.mean(axis=(0, 1)), counts.shape)
    assert bits_per_spike(null, counts) == pytest.approx(0.0, abs=1e-12)


def test_bits_per_spike_positive_for_true_rates_negative_for_bad_rates():
    rates, counts = simulated_poisson()
    assert bits_per_spike(rates, counts) > 0.1
    inverted = rates.max() + rates.min() - rates  # high where the truth is low
    assert bits_per_spike(inverted, counts) < 0


def test_bits_per_spike_excludes_nan_entries():
    rates, counts = simulated_poisson(shape=(6, 5, 3))
    masked = counts.copy()
    masked[3:] = np.nan  # trials 3.. unobserved: same as keeping trials :3 only
    expected = bits_per_spike(rates[:3], counts[:3])
    assert bits_per_spike(rates, masked) == pytest.approx(expected, rel=1e-12)
    altered = rates.copy()
    altered[3:] = 50.0
    assert bits_per_spike(altered, masked) == pytest.approx(expected, rel=1e-12)


def test_bits_per_spike_is_nan_without_spikes():
    assert math.isnan(bits_per_spike(np.ones((2, 3, 1)), np.zeros((2, 3, 1))))


# --- co_bps / fp_bps ----------------------------------------------------------------------------


def test_co_bps_uses_held_out_channels_only():
    rates, counts = simulated_poisson(shape=(10, 8, 6))
    expected = bits_per_spike(rates[:, :, 4:], counts[:, :, 4:])
    assert co_bps(rates, counts, encod_data_dim=4) == pytest.approx(expected, rel=1e-12)
    assert co_bps(rates, counts, encod_data_dim=4) != pytest.approx(bits_per_spike(rates, counts))


def test_fp_bps_uses_forward_steps_only():
    rates, counts = simulated_poisson(shape=(10, 8, 6))
    expected = bits_per_spike(rates[:, 5:], counts[:, 5:])
    assert fp_bps(rates, counts, encod_seq_len=5) == pytest.approx(expected, rel=1e-12)
    assert fp_bps(rates, counts, encod_seq_len=5) != pytest.approx(bits_per_spike(rates, counts))


def test_co_bps_and_fp_bps_refuse_a_split_point_with_nothing_after_it():
    rates, counts = simulated_poisson(shape=(2, 4, 3))
    with pytest.raises(ValueError, match="encod_data_dim: got 3"):
        co_bps(rates, counts, encod_data_dim=3)
    with pytest.raises(ValueError, match="encod_seq_len: got 4"):
        fp_bps(rates, counts, encod_seq_len=4)
    with pytest.raises(ValueError, match="expected 3 dimensions"):
        co_bps(rates[0], counts[0], encod_data_dim=1)


# --- r2_score --------------------------------------------------------------------------------


def test_r2_score_matches_per_neuron_average():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(4, 5, 3))
    pred = truth + rng.normal(scale=0.5, size=truth.shape)
    flat_t, flat_p = truth.reshape(20, 3), pred.reshape(20, 3)
    per_neuron = [
        1
        - np.sum((flat_t[:, n] - flat_p[:, n]) ** 2)
        / np.sum((flat_t[:, n] - flat_t[:, n].mean()) ** 2)
        for n in range(3)
    ]
    assert r2_score(truth, pred) == pytest.approx(np.mean(per_neuron), rel=1e-12)


def test_r2_score_perfect_prediction_and_constant_neuron_skipped():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(3, 4, 2))
    assert r2_score(truth, truth.copy()) == 1.0
    truth[..., 1] = 7.0  # zero variance: left out instead of scored 0
    pred = truth.copy()
    pred[..., 1] = 0.0
    assert r2_score(truth, pred) == 1.0


def test_r2_score_excludes_nan_rows_per_neuron():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(2, 5, 2))
    pred = truth + rng.normal(scale=0.3, size=truth.shape)
    masked = truth.copy()
    masked[1, :, 0] = np.nan
    expected_0 = r2_score(truth[:1, :, :1], pred[:1, :, :1])
    expected_1 = r2_score(truth[:, :, 1:], pred[:, :, 1:])
    assert r2_score(masked, pred) == pytest.approx((expected_0 + expected_1) / 2, rel=1e-12)


# --- ridge_decoding_r2 -----------------------------------------------------------------------


def test_ridge_decoding_recovers_a_linear_map():
    rng = np.random.default_rng(4)
    weights, intercept = rng.normal(size=(6, 2)), np.array([3.0, -1.0])
    x_train, x_valid = rng.poisson(4.0, size=(30, 10, 6)), rng.poisson(4.0, size=(10, 10, 6))
    y_train = x_train @ weights + intercept + rng.normal(scale=0.1, size=(30, 10, 2))
    y_valid = x_valid @ weights + intercept + rng.normal(scale=0.1, size=(10, 10, 2))
    assert ridge_decoding_r2(x_train, y_train, x_valid, y_valid) > 0.95


def test_ridge_decoding_of_random_behaviour_is_not_better_than_the_mean():
    rng = np.random.default_rng(5)
    x_train, x_valid = rng.normal(size=(30, 10, 6)), rng.normal(size=(10, 10, 6))
    y_train, y_valid = rng.normal(size=(30, 10, 2)), rng.normal(size=(10, 10, 2))
    assert ridge_decoding_r2(x_train, y_train, x_valid, y_valid) < 0.05


def test_ridge_decoding_refuses_mismatched_trials():
    x = np.ones((3, 4, 2))
    with pytest.raises(ValueError, match="train_x/train_y: shapes"):
        ridge_decoding_r2(x, np.ones((2, 4, 1)), x, np.ones((3, 4, 1)))


# --- bps_ratio -------------------------------------------------------------------------------


def test_bps_ratio_is_one_when_the_inferred_rates_are_the_truth():
    rates, counts = simulated_poisson()
    assert bps_ratio(rates, rates, counts) == pytest.approx(1.0, rel=1e-12)
    counts[0, 1, 2] = counts[3, 4, 5] = np.nan  # unobserved entries leave it at 1
    assert bps_ratio(rates, rates, counts) == pytest.approx(1.0, rel=1e-12)


def test_bps_ratio_hand_computed_case():
    # 1 trial, 2 bins, 1 neuron: counts 2 and 0, null rate 1 in both bins
    counts = np.array([[[2.0], [0.0]]])
    truth = np.array([[[1.5], [0.5]]])
    rates = np.array([[[1.2], [0.8]]])
    # bits/spike of r: (NLL_null - NLL_r) / (2 ln 2), NLL_x = sum(x - k log x) (+ log k!, cancels)
    nll_null = 2 * 1.0 - 2 * math.log(1.0)
    nll_truth = (1.5 - 2 * math.log(1.5)) + 0.5
    nll_rates = (1.2 - 2 * math.log(1.2)) + 0.8
    truth_bps = (nll_null - nll_truth) / (2 * math.log(2))
    rates_bps = (nll_null - nll_rates) / (2 * math.log(2))
    assert bits_per_spike(truth, counts) == pytest.approx(truth_bps, rel=1e-12)
    assert bps_ratio(rates, truth, counts) == pytest.approx(rates_bps / truth_bps, rel=1e-12)
    assert 0 < rates_bps / truth_bps < 1  # worse than the truth, better than the null


def test_bps_ratio_of_the_null_rates_is_zero_and_nan_without_information():
    rates, counts = simulated_poisson()
    null = np.broadcast_to(counts.mean(axis=(0, 1)), counts.shape)
    assert bps_ratio(null, rates, counts) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(bps_ratio(rates, null, counts))  # the truth is no better than the null


def test_bps_ratio_refuses_truth_of_another_shape():
    rates, counts = simulated_poisson(shape=(2, 3, 4))
    with pytest.raises(ValueError, match=r"truth/counts: shapes"):
        bps_ratio(rates, rates[:, :2], counts)


# --- session_metrics -------------------------------------------------------------------------


def make_session(with_truth=True, with_behavior=True, held_out=True, with_test=False):
    """A SessionData with 4 held-in + 2 held-out channels and 6 + 2 forward steps (if held_out);
    with `with_test`, a test split with a target (7 trials), else test trials without one."""
    rng = np.random.default_rng(6)
    n_enc, t_enc = 4, 6
    n_rec, t_rec = (6, 8) if held_out else (4, 6)
    encod, recon, truth, rates = {}, {}, {}, {}
    sizes = (("train", 12), ("valid", 5)) + ((("test", 7),) if with_test else ())
    for split, b in sizes:
        split_rates, counts = simulated_poisson(seed=b, shape=(b, t_rec, n_rec))
        truth[split] = split_rates.astype(np.float32)
        recon[split] = counts.astype(np.float32)
        encod[split] = recon[split][:, :t_enc, :n_enc]
        rates[split] = split_rates * rng.uniform(0.8, 1.2, size=split_rates.shape)
    if not with_test:
        encod["test"] = encod["valid"].copy()
    extra = {}
    if with_behavior:
        extra = {f"{s}_behavior": rates[s][:, :t_enc, :2] @ np.ones((2, 1)) for s in rates}
    session = SessionData(
        Path("sess.h5"), encod, recon, truth=truth if with_truth else {}, extra=extra
    )
    return session, rates


def test_session_metrics_keys_and_values():
    session, rates = make_session()
    metrics = session_metrics(rates, session)
    names = ("nll", "bps", "co_bps", "fp_bps", "r2", "truth_bps", "bps_ratio")
    expected_keys = {f"{s}/{m}" for s in ("train", "valid") for m in names}
    assert set(metrics) == expected_keys | {"valid/behavior_r2"}
    valid_counts = session.recon["valid"].astype(float)
    assert metrics["valid/nll"] == pytest.approx(
        poisson_nll(rates["valid"], valid_counts) / valid_counts.size
    )
    assert metrics["valid/bps"] == pytest.approx(bits_per_spike(rates["valid"], valid_counts))
    assert metrics["valid/co_bps"] == pytest.approx(co_bps(rates["valid"], valid_counts, 4))
    assert metrics["valid/fp_bps"] == pytest.approx(fp_bps(rates["valid"], valid_counts, 6))
    assert metrics["valid/r2"] == pytest.approx(r2_score(session.truth["valid"], rates["valid"]))
    truth_bps = bits_per_spike(session.truth["valid"], valid_counts)
    assert metrics["valid/truth_bps"] == pytest.approx(truth_bps)
    assert metrics["valid/bps_ratio"] == pytest.approx(metrics["valid/bps"] / truth_bps)
    assert metrics["valid/behavior_r2"] > 0.95  # behaviour is linear in the rates


def test_session_metrics_score_a_test_split_under_its_own_names():
    """A test target gives every metric again, named test/..., from the test arrays alone."""
    session, rates = make_session(with_test=True)
    metrics = session_metrics(rates, session)
    names = ("nll", "bps", "co_bps", "fp_bps", "r2", "truth_bps", "bps_ratio", "behavior_r2")
    assert {f"test/{m}" for m in names} <= set(metrics)
    assert {n.split("/")[0] for n in metrics} == {"train", "valid", "test"}
    counts, truth = session.recon["test"].astype(float), session.truth["test"]
    assert metrics["test/bps"] == pytest.approx(bits_per_spike(rates["test"], counts))
    assert metrics["test/r2"] == pytest.approx(r2_score(truth, rates["test"]))
    assert metrics["test/bps_ratio"] == pytest.approx(bps_ratio(rates["test"], truth, counts))
    assert metrics["test/bps"] != metrics["valid/bps"]
    # the valid metrics are those of a file without the test split
    without, _ = make_session()
    valid_only = {n: v for n, v in metrics.items() if not n.startswith("test/")}
    assert session_metrics(rates, without) == pytest.approx(valid_only)


def test_session_metrics_of_the_truth_itself_reach_the_whole_ratio():
    session, _ = make_session(with_test=True, with_behavior=False)
    metrics = session_metrics(dict(session.truth), session)
    for split in ("train", "valid", "test"):
        assert metrics[f"{split}/bps_ratio"] == pytest.approx(1.0, rel=1e-12)
        assert metrics[f"{split}/r2"] == pytest.approx(1.0)


def test_session_metrics_omits_what_cannot_be_computed():
    session, rates = make_session(with_truth=False, with_behavior=False, held_out=False)
    metrics = session_metrics({"valid": rates["valid"]}, session)
    assert set(metrics) == {"valid/nll", "valid/bps"}


def test_session_metrics_of_non_count_models_have_no_bits_per_spike():
    session, rates = make_session(with_behavior=False)
    metrics = session_metrics({"valid": rates["valid"]}, session, reconstruction="gamma")
    assert set(metrics) == {"valid/r2"}


def test_session_metrics_refuses_outputs_of_the_wrong_shape():
    session, rates = make_session()
    with pytest.raises(ValueError, match=r"output_params\['valid'\]: shape \(5, 6, 6\)"):
        session_metrics({"valid": rates["valid"][:, :6]}, session)
