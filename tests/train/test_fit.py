"""`validation_extras`: the fit log's valid/r2 and valid/bps, averaged over sessions and, with
several sessions, per session (`valid/r2/sess{i}`, `valid/bps/sess{i}`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from autolfads.analysis.metrics import bits_per_spike, r2_score
from autolfads.train.fit import validation_extras

K = 2  # workers


def fake_shard(reconstruction: str = "poisson") -> SimpleNamespace:
    """The two attributes `validation_extras` reads of a shard."""
    return SimpleNamespace(n_workers=K, structure=SimpleNamespace(reconstruction=reconstruction))


def session_and_means(
    n_channels: int, seed: int, truth: bool = True
) -> tuple[SimpleNamespace, np.ndarray]:
    """A session's valid counts (and truth) (B, T, N) and K workers' means (K, B, T, N)."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.5, 3.0, (10, 6, n_channels))
    sess = SimpleNamespace(
        recon={"valid": rng.poisson(rates).astype(np.float64)},
        truth={"valid": rates} if truth else {},
    )
    means = rates * rng.uniform(0.7, 1.3, (K, *rates.shape))
    return sess, means


def test_one_session_logs_exactly_the_averages():
    sess, means = session_and_means(4, seed=0)
    extras = validation_extras(fake_shard(), [sess], [means])
    assert list(extras) == ["valid/r2", "valid/bps"]
    expected = [r2_score(sess.truth["valid"], means[w]) for w in range(K)]
    np.testing.assert_allclose(extras["valid/r2"], expected)


def test_several_sessions_log_each_one_and_their_mean():
    pairs = [session_and_means(n, seed=n) for n in (3, 5, 4)]
    sessions, means = [p[0] for p in pairs], [p[1] for p in pairs]
    extras = validation_extras(fake_shard(), sessions, means)
    for i, (sess, mean) in enumerate(pairs):
        r2 = [r2_score(sess.truth["valid"], mean[w]) for w in range(K)]
        bps = [bits_per_spike(mean[w], sess.recon["valid"]) for w in range(K)]
        np.testing.assert_allclose(extras[f"valid/r2/sess{i}"], r2)
        np.testing.assert_allclose(extras[f"valid/bps/sess{i}"], bps)
    for name in ("valid/r2", "valid/bps"):
        per_session = [extras[f"{name}/sess{i}"] for i in range(3)]
        np.testing.assert_allclose(extras[name], np.mean(per_session, axis=0))
        assert extras[name].shape == (K,)


@pytest.mark.parametrize("reconstruction", ["poisson", "gamma"])
def test_only_computable_values_are_logged(reconstruction):
    with_truth, means_a = session_and_means(3, seed=1)
    without_truth, means_b = session_and_means(4, seed=2, truth=False)
    extras = validation_extras(
        fake_shard(reconstruction),
        [with_truth, without_truth, with_truth],
        [means_a, means_b, None],
    )
    expected = {"valid/r2", "valid/r2/sess0"}
    if reconstruction == "poisson":
        expected |= {"valid/bps", "valid/bps/sess0", "valid/bps/sess1"}
    assert set(extras) == expected
    np.testing.assert_allclose(extras["valid/r2"], extras["valid/r2/sess0"])
