"""Tests of the PBT decisions (exploit, explore, smoothing, stopping, best) on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autolfads.analysis.metrics import smooth_metric
from autolfads.errors import ConfigError
from autolfads.pbt.hps import HPSpec
from autolfads.pbt.policy import (
    BestSnapshot,
    best_worker,
    binary_tournament,
    exploit,
    explore,
    should_stop,
    truncation,
    update_best,
)

NAN = float("nan")
INF = float("inf")


def rngs(n: int, start: int = 0):
    return (np.random.default_rng(seed) for seed in range(start, start + n))


def copied_from(sources: np.ndarray) -> dict[int, int]:
    return {k: int(s) for k, s in enumerate(sources) if s != k}


# ---------------------------------------------------------------- binary tournament


def test_tournament_copies_only_strictly_better_finite_workers():
    for seed, rng in enumerate(rngs(200)):
        scores = np.random.default_rng(1000 + seed).normal(size=7)
        scores[np.random.default_rng(2000 + seed).random(7) < 0.3] = NAN
        sources = binary_tournament(scores, rng=rng)
        assert sources.shape == (7,)
        for k, s in copied_from(sources).items():
            assert s != k and np.isfinite(scores[s])
            assert not np.isfinite(scores[k]) or scores[s] < scores[k]


def test_tournament_ties_never_copy():
    for rng in rngs(20):
        np.testing.assert_array_equal(binary_tournament([1.0, 1.0, 1.0], rng=rng), [0, 1, 2])


def test_tournament_worst_worker_meets_every_other_finite_worker_equally_often():
    # worker 4 is worst so it always copies its partner: its sources show the partner distribution
    scores = np.array([1.0, NAN, 2.0, 3.0, 9.0])
    partners = [int(binary_tournament(scores, rng=rng)[4]) for rng in rngs(3000)]
    counts = np.bincount(partners, minlength=5) / len(partners)
    assert counts[1] == 0 and counts[4] == 0  # never the NaN worker, never itself
    np.testing.assert_allclose(counts[[0, 2, 3]], 1 / 3, atol=0.035)


def test_tournament_partner_is_never_the_worker_itself():
    # worker 2 beats one of its 3 possible partners: it copies with probability 2/3 (1/2 if it
    # could meet itself)
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    copies = [binary_tournament(scores, rng=rng)[2] != 2 for rng in rngs(3000)]
    assert abs(np.mean(copies) - 2 / 3) < 0.03


def test_tournament_diverged_workers_always_copy_a_finite_one():
    scores = np.array([NAN, 2.0, INF, 1.0, -INF])
    for rng in rngs(50):
        sources = binary_tournament(scores, rng=rng)
        for k in (0, 2, 4):
            assert sources[k] in (1, 3)
        assert sources[3] == 3  # the best keeps itself


def test_tournament_single_finite_worker_is_everyones_source():
    sources = binary_tournament([NAN, NAN, 3.0, NAN], rng=np.random.default_rng(0))
    np.testing.assert_array_equal(sources, [2, 2, 2, 2])


@pytest.mark.parametrize(
    "scores", [[5.0], [NAN], [NAN, INF, NAN]], ids=["one", "one-nan", "all-diverged"]
)
def test_tournament_without_other_finite_workers_keeps_itself(scores):
    sources = binary_tournament(scores, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(sources, np.arange(len(scores)))


def test_tournament_rejects_bad_shape():
    with pytest.raises(ValueError, match="scores"):
        binary_tournament(np.zeros((2, 2)), rng=np.random.default_rng(0))


# ---------------------------------------------------------------- truncation


def test_truncation_bottom_quarter_of_16_copies_top_quarter():
    scores = np.random.default_rng(7).permutation(16).astype(float)
    order = np.argsort(scores)
    best4, worst4 = set(order[:4].tolist()), set(order[-4:].tolist())
    used_sources = set()
    for rng in rngs(100):
        copies = copied_from(truncation(scores, quantile=0.25, rng=rng))
        assert set(copies) == worst4
        assert set(copies.values()) <= best4
        used_sources |= set(copies.values())
    assert used_sources == best4
    assert order[0] not in copies


def test_truncation_counts_diverged_as_worst_and_never_copies_them():
    scores = np.array([0.5, NAN, 3.0, 1.0, 2.0, 4.0, 5.0, 0.1])
    for rng in rngs(30):
        copies = copied_from(truncation(scores, quantile=0.25, rng=rng))
        assert set(copies) == {1, 6}  # NaN, then the worst finite
        assert set(copies.values()) <= {7, 0}


def test_truncation_diverged_workers_outside_bottom_also_copy():
    scores = np.array([NAN, 1.0, NAN, 2.0, 3.0, NAN, 4.0, 5.0])
    copies = copied_from(truncation(scores, quantile=0.25, rng=np.random.default_rng(0)))
    assert set(copies) == {0, 2, 5}
    assert set(copies.values()) <= {1, 3}


def test_truncation_top_group_excludes_diverged_workers():
    scores = np.array([NAN, 2.0, NAN, NAN])
    for rng in rngs(10):
        np.testing.assert_array_equal(truncation(scores, quantile=0.5, rng=rng), [1, 1, 1, 1])


def test_truncation_small_population_only_diverged_copy_the_best():
    # floor(0.25 * 3) = 0: nobody is truncated, but the diverged worker cannot go on
    sources = truncation([2.0, NAN, 1.0], quantile=0.25, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(sources, [0, 2, 2])
    all_nan = truncation([NAN, NAN], quantile=0.5, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(all_nan, [0, 1])


@pytest.mark.parametrize("quantile", [0.0, 0.6, -0.1])
def test_truncation_rejects_bad_quantile(quantile):
    with pytest.raises(ConfigError, match="pbt.exploit.quantile"):
        truncation([1.0, 2.0], quantile=quantile, rng=np.random.default_rng(0))


def test_exploit_dispatches_to_the_method_and_rejects_unknown_ones():
    scores = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.0, 6.0, 5.0])
    for method, direct in (("binary_tournament", binary_tournament), ("truncation", truncation)):
        got = exploit(scores, method=method, quantile=0.25, rng=np.random.default_rng(5))
        if method == "truncation":
            want = direct(scores, quantile=0.25, rng=np.random.default_rng(5))
        else:
            want = direct(scores, rng=np.random.default_rng(5))
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match="pbt.exploit.method = 'tournament'"):
        exploit(scores, method="tournament", rng=np.random.default_rng(0))


# ---------------------------------------------------------------- explore

LR = HPSpec("lr_init", 1e-5, 1e-2, None, "log", 0.3)
DROPOUT = HPSpec("dropout_rate", 0.0, 0.6, None, "uniform", 0.5)


def test_explore_perturbs_copied_workers_within_scale_and_keeps_the_rest():
    table = {
        "lr_init": np.array([1e-3, 2e-3, 5e-3, 4e-3]),
        "dropout_rate": np.array([0.1, 0.2, 0.3, 0.4]),
    }
    before = {name: values.copy() for name, values in table.items()}
    sources = np.array([0, 0, 2, 1])
    for rng in rngs(100):
        new = explore(table, sources, [LR, DROPOUT], rng=rng)
        for spec in (LR, DROPOUT):
            p = spec.explore_scale
            assert new[spec.name][0] == table[spec.name][0]
            assert new[spec.name][2] == table[spec.name][2]
            for k in (1, 3):
                src = table[spec.name][sources[k]]
                low, high = max(src * (1 - p), spec.min), min(src * (1 + p), spec.max)
                assert low <= new[spec.name][k] <= high
    for name in table:
        np.testing.assert_array_equal(table[name], before[name])  # input not mutated
    assert new["lr_init"] is not table["lr_init"]


def test_explore_clips_at_the_range_bounds():
    table = {"lr_init": np.array([1e-2] + [1e-3] * 199)}
    sources = np.zeros(200, dtype=int)
    new = explore(table, sources, [LR], rng=np.random.default_rng(0))["lr_init"]
    assert new.max() == 1e-2  # about half the factors exceed 1 and are clipped to max
    assert np.mean(new == 1e-2) > 0.3
    assert new[1:].min() >= 0.7e-2


def test_explore_starts_from_the_sources_values_before_this_step():
    # worker 1 copies 0 while worker 2 copies 1: worker 2 gets worker 1's *old* values
    table = {"lr_init": np.array([1e-3, 2e-3, 3e-3]), "not_searched": np.array([7.0, 8.0, 9.0])}
    frozen = HPSpec("lr_init", 1e-5, 1e-2, None, "log", 1e-12)  # perturbations of 1e-12 at most
    new = explore(table, np.array([0, 0, 1]), [frozen], rng=np.random.default_rng(0))
    np.testing.assert_allclose(new["lr_init"], [1e-3, 1e-3, 2e-3], rtol=1e-9)
    np.testing.assert_array_equal(new["not_searched"], [7.0, 7.0, 8.0])


def test_explore_resample_probability_one_draws_from_the_range_distribution():
    spec = HPSpec("kl_ic_scale", 1e-6, 1e-2, None, "log", 0.3)
    table = {"kl_ic_scale": np.full(4001, 1e-2)}
    sources = np.zeros(4001, dtype=int)
    new = explore(table, sources, [spec], rng=np.random.default_rng(0), resample_probability=1.0)
    logs = np.log10(new["kl_ic_scale"][1:])
    assert logs.min() >= -6 and logs.max() <= -2
    per_decade = np.histogram(logs, bins=[-6, -5, -4, -3, -2])[0] / logs.size
    np.testing.assert_allclose(per_decade, 0.25, atol=0.04)


def test_explore_resample_probability_half_resamples_about_half():
    spec = HPSpec("kl_ic_scale", 1e-6, 1e-2, None, "log", 0.1)
    table = {"kl_ic_scale": np.full(2001, 1e-4)}
    new = explore(
        table,
        np.zeros(2001, dtype=int),
        [spec],
        rng=np.random.default_rng(1),
        resample_probability=0.5,
    )["kl_ic_scale"][1:]
    outside_perturbation = (new < 0.9e-4) | (new > 1.1e-4)
    # a resampled value lands inside [0.9e-4, 1.1e-4] with probability ~0.01
    assert abs(outside_perturbation.mean() - 0.5) < 0.05


def test_explore_is_deterministic_for_a_seed():
    table = {"lr_init": np.array([1e-3, 2e-3, 3e-3])}
    sources = np.array([1, 1, 1])
    a = explore(table, sources, [LR], rng=np.random.default_rng(9), resample_probability=0.3)
    b = explore(table, sources, [LR], rng=np.random.default_rng(9), resample_probability=0.3)
    np.testing.assert_array_equal(a["lr_init"], b["lr_init"])


@pytest.mark.parametrize(
    ("table", "sources", "kwargs", "error", "match"),
    [
        ({"lr_init": np.ones(3) * 1e-3}, np.array([0, 1, 3]), {}, ValueError, "sources"),
        ({"lr_init": np.ones(3) * 1e-3}, np.array([0.0, 1.0, 2.0]), {}, ValueError, "integer"),
        ({"lr_init": np.ones(2) * 1e-3}, np.array([0, 1, 2]), {}, ValueError, "lr_init"),
        ({"cd_rate": np.ones(3)}, np.array([0, 1, 2]), {}, ValueError, "lr_init"),
        (
            {"lr_init": np.ones(3) * 1e-3},
            np.array([0, 1, 2]),
            {"resample_probability": 1.5},
            ConfigError,
            "pbt.explore.resample_probability",
        ),
    ],
)
def test_explore_rejects_inconsistent_inputs(table, sources, kwargs, error, match):
    with pytest.raises(error, match=match):
        explore(table, sources, [LR], rng=np.random.default_rng(0), **kwargs)


# ---------------------------------------------------------------- smoothing


def test_smooth_metric_sequence():
    smoothed, previous = [], None
    for value in [4.0, 2.0, 2.0, NAN, 1.0]:
        previous = smooth_metric(value, previous)
        smoothed.append(previous)
    np.testing.assert_allclose(smoothed[:3], [4.0, 2.6, 2.18])
    assert math.isnan(smoothed[3]) and math.isnan(smoothed[4])  # a diverged worker stays diverged
    assert smooth_metric(-3.0, None) == -3.0


# ---------------------------------------------------------------- stopping


def decide(best_per_generation, patience=3, ratio=0.01, max_generations=100):
    return should_stop(
        best_per_generation,
        patience=patience,
        min_improvement_ratio=ratio,
        generation=len(best_per_generation),
        max_generations=max_generations,
    )


def stop_points(sequence, **kwargs):
    """For each prefix length, whether should_stop says stop."""
    return [decide(sequence[: n + 1], **kwargs).stop for n in range(len(sequence))]


def test_should_stop_exactly_after_patience_flat_generations():
    sequence = [10.0, 9.0, 8.95, 8.94, 8.93]
    assert stop_points(sequence) == [False, False, False, False, True]
    decision = decide(sequence)
    assert "patience 3" in decision.reason and "0.01" in decision.reason


def test_should_stop_counter_resets_on_a_real_improvement():
    sequence = [10.0, 9.99, 9.99, 5.0, 4.999, 4.999, 4.999]
    assert stop_points(sequence) == [False] * 6 + [True]


def test_should_stop_slow_creep_is_measured_against_the_best_before():
    # each step gains 0.5 % of the previous best: below the 1 % bar, so it counts as flat
    assert stop_points([10.0, 9.95, 9.90, 9.85]) == [False, False, False, True]


def test_should_stop_ratio_zero_needs_a_strict_decrease():
    assert stop_points([1.0, 1.0, 1.0], patience=2, ratio=0.0) == [False, False, True]
    assert stop_points([1.0, 0.999, 0.998], patience=2, ratio=0.0) == [False] * 3


def test_should_stop_at_max_generations():
    improving = [10.0, 5.0, 2.0]
    kwargs = dict(patience=3, min_improvement_ratio=0.01, max_generations=3)
    assert not should_stop(improving[:2], generation=2, **kwargs).stop
    decision = should_stop(improving, generation=3, **kwargs)
    assert decision.stop and "max_generations" in decision.reason


def test_should_stop_nan_generations_count_as_no_improvement():
    assert stop_points([10.0, NAN, NAN, NAN]) == [False, False, False, True]
    assert stop_points([NAN, NAN], patience=2) == [False, True]
    # a NaN generation between real improvements does not end the search
    assert stop_points([10.0, NAN, 5.0, NAN, 2.0]) == [False] * 5


def test_should_stop_negative_losses_use_the_magnitude_of_the_best():
    # gains of 0.5 on |-100| = 0.5 %: flat under a 1 % bar (without abs() they would count)
    assert stop_points([-100.0, -100.5, -101.0, -101.5]) == [False, False, False, True]
    assert stop_points([-100.0, -102.0, -104.1, -106.2]) == [False] * 4
    assert stop_points([-100.0, -99.0, -98.0, -97.0]) == [False, False, False, True]


def test_should_stop_continues_before_any_generation():
    decision = decide([])
    assert not decision.stop and "0 of 3" in decision.reason


@pytest.mark.parametrize(
    ("patience", "ratio", "match"), [(0, 0.01, "pbt.patience"), (3, -0.1, "pbt.min_improvement")]
)
def test_should_stop_rejects_bad_settings(patience, ratio, match):
    with pytest.raises(ConfigError, match=match):
        decide([1.0], patience=patience, ratio=ratio)


# ---------------------------------------------------------------- best worker


def test_best_worker_ignores_diverged_and_takes_first_tie():
    assert best_worker(np.array([3.0, NAN, 1.0, 1.0, -INF])) == 2
    with pytest.raises(ValueError, match="no finite score"):
        best_worker(np.array([NAN, INF]))


def test_update_best_across_generations():
    best, changed = update_best(None, 0, np.array([NAN, NAN]))
    assert best is None and not changed
    history = []
    for generation, scores in enumerate(
        [[5.0, 3.0], [4.0, NAN], [2.5, 9.0], [NAN, NAN], [2.5, 3.0], [-1.0, 0.0]], start=1
    ):
        best, changed = update_best(best, generation, np.array(scores))
        history.append(((best.generation, best.worker, best.score), changed))
    assert history == [
        ((1, 1, 3.0), True),
        ((1, 1, 3.0), False),
        ((3, 0, 2.5), True),
        ((3, 0, 2.5), False),
        ((3, 0, 2.5), False),  # a tie does not replace the earlier best
        ((6, 0, -1.0), True),
    ]


def test_update_best_does_not_modify_the_previous_snapshot():
    previous = BestSnapshot(generation=0, worker=1, score=3.0)
    new, changed = update_best(previous, 1, np.array([1.0, 2.0]))
    assert changed and new == BestSnapshot(1, 0, 1.0)
    assert previous == BestSnapshot(0, 1, 3.0)
