"""Decisions of population-based training, as pure functions of scores and hyperparameter tables.

After each generation every worker k has a score (its smoothed validation loss; lower is better,
NaN or inf means the worker diverged). *Exploit* decides, for each worker, whose weights it
continues from (an index array `sources` of shape (K,), `sources[k] == k` meaning it keeps its own).
*Explore* perturbs the hyperparameters of the workers that copied. *Stop* decides when the search
has stalled.
Randomness comes only from the keyword-only `rng` (Jaderberg et al. 2017; Keshtkaran et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autolfads.config.rules import RULES, check_value
from autolfads.pbt.hps import HPSpec, HPTable, sample_values

__all__ = [
    "EXPLOIT_METHODS",
    "binary_tournament",
    "truncation",
    "exploit",
    "explore",
    "StopDecision",
    "should_stop",
    "best_worker",
    "BestSnapshot",
    "update_best",
]

EXPLOIT_METHODS = RULES["pbt.exploit.method"].choices


def _as_scores(scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"scores: expected a non-empty (K,) array, found shape {values.shape}")
    return values


def binary_tournament(scores: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """For each worker k, the index it copies from (k itself if it keeps its own weights).

    Each worker meets one other worker with a finite score, chosen uniformly at random, and copies
    it if that worker's score is lower (better), or if its own score is NaN/inf. If no other finite
    worker exists, it keeps itself. A diverged worker is therefore never a source.

    Args:
        scores: (K,) smoothed validation losses; NaN/inf for diverged workers.

    Returns:
        (K,) int64 source indices.
    """
    scores = _as_scores(scores)
    finite = np.isfinite(scores)
    workers = np.arange(scores.size)
    sources = workers.copy()
    for k in workers:
        opponents = np.flatnonzero(finite & (workers != k))
        if opponents.size == 0:
            continue
        opponent = int(rng.choice(opponents))
        if not finite[k] or scores[opponent] < scores[k]:
            sources[k] = opponent
    return sources


def _n_truncated(n_workers: int, quantile: float) -> int:
    # the epsilon keeps e.g. 0.29 * 100 = 28.999... from rounding down to 28
    return int(math.floor(quantile * n_workers + 1e-9))


def truncation(
    scores: np.ndarray, *, quantile: float = 0.25, rng: np.random.Generator
) -> np.ndarray:
    """Truncation selection: the worst `quantile` of workers copy one of the best `quantile`.

    The number of workers in each group is floor(quantile * K). Workers are ranked by score with
    NaN/inf counted as worst (ties keep worker order). Only finite workers of the top group are
    sources; every diverged worker copies one too, even outside the bottom group, since its weights
    are unusable (if floor(quantile * K) is 0, diverged workers copy the best worker and no other
    worker copies). With no finite worker at all, every worker keeps itself.

    Args:
        scores: (K,) smoothed validation losses; NaN/inf for diverged workers.
        quantile: fraction of the population in each of the top and bottom groups, in (0, 0.5].

    Returns:
        (K,) int64 source indices.
    """
    quantile = check_value("pbt.exploit.quantile", quantile)
    scores = _as_scores(scores)
    finite = np.isfinite(scores)
    ranked = np.argsort(np.where(finite, scores, np.inf), kind="stable")  # best first
    n_group = _n_truncated(scores.size, quantile)
    sources = np.arange(scores.size)
    if not finite.any():
        return sources
    # ranked puts finite workers first; with floor(q * K) = 0 the best worker alone is the top
    top = np.array([k for k in ranked[: max(n_group, 1)] if finite[k]], dtype=np.int64)
    copiers = set(ranked[scores.size - n_group :].tolist()) | set(np.flatnonzero(~finite).tolist())
    for k in sorted(copiers):
        sources[k] = int(rng.choice(top))
    return sources


def exploit(
    scores: np.ndarray,
    *,
    method: str = "binary_tournament",
    quantile: float = 0.25,
    rng: np.random.Generator,
) -> np.ndarray:
    """Source index of each worker under `method` (`pbt.exploit.method`).

    Returns:
        (K,) int64 source indices; see `binary_tournament` and `truncation`.

    Raises:
        ConfigError: `method` is not one of `EXPLOIT_METHODS`.
    """
    if method == "binary_tournament":
        return binary_tournament(scores, rng=rng)
    if method == "truncation":
        return truncation(scores, quantile=quantile, rng=rng)
    if method == "none":  # fixed hyperparameters: the population trains as independent models
        return np.arange(len(scores), dtype=np.int64)
    check_value("pbt.exploit.method", method)
    raise AssertionError(f"pbt.exploit.method {method!r} is allowed but not handled")


def _check_sources(sources: np.ndarray, n_workers: int) -> np.ndarray:
    sources = np.asarray(sources)
    if sources.shape != (n_workers,) or not np.issubdtype(sources.dtype, np.integer):
        raise ValueError(
            f"sources: expected ({n_workers},) integer indices, "
            f"found shape {sources.shape} dtype {sources.dtype}"
        )
    if sources.size and (sources.min() < 0 or sources.max() >= n_workers):
        raise ValueError(f"sources: indices must lie in [0, {n_workers}), found {sources.tolist()}")
    return sources


def explore(
    table: HPTable,
    sources: np.ndarray,
    specs: Sequence[HPSpec],
    *,
    rng: np.random.Generator,
    resample_probability: float = 0.0,
) -> HPTable:
    """Hyperparameters after exploit: copied workers take perturbed copies of their sources' HPs.

    Every worker that copied (`sources[k] != k`) takes its source's values from `table` (the values
    before this step), each multiplied by a factor drawn uniformly in [1 - p, 1 + p]
    (p = `spec.explore_scale`) and clipped to [min, max]. With probability `resample_probability`
    a value is instead redrawn from the spec's range distribution (`sample_values`, ignoring
    `init`). HPs in the table without a spec are copied unperturbed. Workers that did not copy keep
    their HPs. The input table is not modified.

    Args:
        table: name -> (K,) current values.
        sources: (K,) source indices from `exploit`.
        specs: the searched hyperparameters; each must be in `table`.

    Returns:
        name -> (K,) float64 new values.
    """
    resample_probability = check_value("pbt.explore.resample_probability", resample_probability)
    n_workers = len(sources)
    sources = _check_sources(sources, n_workers)
    for name, values in table.items():
        if np.shape(values) != (n_workers,):
            raise ValueError(
                f"HP table[{name!r}]: expected shape ({n_workers},), found {np.shape(values)}"
            )
    missing = [spec.name for spec in specs if spec.name not in table]
    if missing:
        raise ValueError(f"HP table: no values for searched HP(s) {missing}; has {sorted(table)}")

    copied = np.flatnonzero(sources != np.arange(n_workers))
    new_table = {name: np.array(values, dtype=np.float64) for name, values in table.items()}
    for name, values in table.items():
        new_table[name][copied] = np.asarray(values, dtype=np.float64)[sources[copied]]
    for spec in specs:
        inherited = new_table[spec.name][copied]
        factors = rng.uniform(1.0 - spec.explore_scale, 1.0 + spec.explore_scale, size=copied.size)
        perturbed = np.clip(inherited * factors, spec.min, spec.max)
        resampled = sample_values(spec, copied.size, rng=rng)
        use_resampled = rng.random(copied.size) < resample_probability
        new_table[spec.name][copied] = np.where(use_resampled, resampled, perturbed)
    return new_table


#: Ranking metrics where a higher value is better; every other metric is a loss (lower is better).
HIGHER_IS_BETTER = ("valid/r2", "valid/bps")


def ranking_scores(metrics: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """(K,) scores to rank workers by `pbt.metric`: lower is better, NaN for a diverged worker.

    A metric where higher is better (`HIGHER_IS_BETTER`) is negated, so that every score is ranked
    the same way (tournaments, the best worker, the stop rule).

    Raises:
        KeyError: `metric` is not among `metrics`.
    """
    if metric not in metrics:
        raise KeyError(
            f"pbt.metric={metric!r}: not computed (available: {', '.join(sorted(metrics))})"
        )
    values = np.asarray(metrics[metric], dtype=np.float64)
    scores = -values if metric in HIGHER_IS_BETTER else values.copy()
    return np.where(np.isfinite(scores), scores, np.nan)


@dataclass(frozen=True)
class StopDecision:
    """Whether population-based training should stop, and why (a readable sentence for the log)."""

    stop: bool
    reason: str


def _is_real_improvement(best_before: float, value: float, min_improvement_ratio: float) -> bool:
    if not math.isfinite(value):
        return False
    gain = best_before - value
    # abs() keeps the relative test meaningful when losses are negative
    return gain > 0 and gain >= min_improvement_ratio * abs(best_before)


def _generations_without_improvement(
    best_per_generation: Sequence[float], min_improvement_ratio: float
) -> int:
    best_before: float | None = None
    stalled = 0
    for value in map(float, best_per_generation):
        if best_before is None:
            # the first finite generation is the baseline; earlier diverged ones count as stalled
            stalled = 0 if math.isfinite(value) else stalled + 1
        elif _is_real_improvement(best_before, value, min_improvement_ratio):
            stalled = 0
        else:
            stalled += 1
        if math.isfinite(value):
            best_before = value if best_before is None else min(best_before, value)
    return stalled


def should_stop(
    best_per_generation: Sequence[float],
    *,
    patience: int,
    min_improvement_ratio: float,
    generation: int = 0,
    max_generations: int | None = None,
) -> StopDecision:
    """Whether to stop the search (`pbt.patience`, `min_improvement_ratio`, `max_generations`).

    Stops after `patience` consecutive generations in which the best score improved by less than
    `min_improvement_ratio * |best seen before|` (a NaN generation counts as no improvement; smaller
    gains still lower the best seen), or once `generation >= max_generations` (when given).

    Args:
        best_per_generation: entry i is the best (lowest finite) score of generation i, NaN if all
            workers diverged.
        generation: the number of generations finished so far (the index of the next one).
    """
    patience = check_value("pbt.patience", patience)
    min_improvement_ratio = check_value("pbt.min_improvement_ratio", min_improvement_ratio)
    if max_generations is not None and generation >= max_generations:
        return StopDecision(True, f"reached max_generations ({max_generations})")
    stalled = _generations_without_improvement(best_per_generation, min_improvement_ratio)
    if stalled >= patience:
        return StopDecision(
            True,
            f"best score improved by less than {min_improvement_ratio:g} (relative) "
            f"for {stalled} generations (patience {patience})",
        )
    return StopDecision(False, f"{stalled} of {patience} generations without improvement")


def best_worker(scores: np.ndarray) -> int:
    """Index of the worker with the lowest finite score (the first one on ties).

    Raises:
        ValueError: no score is finite (the whole population diverged).
    """
    scores = _as_scores(scores)
    finite = np.isfinite(scores)
    if not finite.any():
        raise ValueError(f"scores: no finite score among {scores.size} workers (all diverged)")
    return int(np.argmin(np.where(finite, scores, np.inf)))


@dataclass
class BestSnapshot:
    """The best worker seen so far: the generation it was scored in, its index and its score."""

    generation: int
    worker: int
    score: float


def update_best(
    best: BestSnapshot | None, generation: int, scores: np.ndarray
) -> tuple[BestSnapshot | None, bool]:
    """Keep the best worker seen in any generation.

    Args:
        best: the best so far, or None before the first finite score. It is not modified.
        generation: the generation `scores` belong to.
        scores: (K,) scores of that generation.

    Returns:
        (new best, True) if a worker of this generation is strictly better than `best`,
        else (best, False).
    """
    scores = _as_scores(scores)
    if not np.isfinite(scores).any():
        return best, False
    worker = best_worker(scores)
    score = float(scores[worker])
    if best is not None and score >= best.score:
        return best, False
    return BestSnapshot(generation=generation, worker=worker, score=score), True
