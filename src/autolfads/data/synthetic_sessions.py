"""Multi-session synthetic data: one latent system recorded in S sessions (stitching).

`autolfads simulate lorenz DIR sessions=5` writes `DIR/sess0.h5` ... `DIR/sess4.h5`; without
`sessions` the command writes one file, as `autolfads.data.synthetic.simulate_to_file`.

One latent system drives a pool of `n_neurons_pool` neurons, each with its own fixed read-out of
the latent. Session s records its own random subset of the pool (`neurons_min` to `neurons_max`
neurons, uniform) on its own number of trials (`trials_min` to `trials_max`, train and valid
together, uniform). Conditions are shared: condition c is the same latent trajectory in every
session (the same initial state), so the sessions' condition averages are one trajectory seen
through different neurons. A session's trials are spread over the conditions as evenly as its
count allows (the remainder to random conditions), grouped by condition, and split into train and
valid (and, with `test_fraction` > 0, test) within each condition as in `autolfads.data.synthetic`.

The systems:

- `lorenz`: the Lorenz system of `synthetic.lorenz`; pool neuron p has log-rate
  `log(base_rate) + gain * c_p . z`, c_p a random unit vector. With the same seed, the pool is
  that of `synthetic.lorenz(n_neurons=n_neurons_pool, n_conditions=...)`: same latents, same
  read-out, same rates.
- `chaotic-rnn`: the chaotic rate RNN of `synthetic.chaotic_rnn` with `n_units` units and no
  inputs; the latent is `tanh(x)` (B, T, n_units). Pool neuron p reads `c_p . tanh(x)`, c_p a
  random unit vector, and the pool's activity is min-max normalised per condition (over all bins
  and pool neurons) to [0, max_rate] Hz, as the single-file simulator does for its units.

Each session file has the single-file keys (docs/data-format.md; spikes, `{split}_truth` in Hz
with `conversion_factor` = 1 / dt, `{split}_inds`, `{split}_condition`) and:

- `{split}_latents` (B, T, D): the shared latent of each trial's condition;
- `pool_neuron_index` (N,): the pool neuron behind each channel, ascending;
- `session_index` (): s; also the file attribute `session`.

Randomness: the seed feeds the four streams of the single-file simulators (model: read-out and
RNN weights; conditions; spike noise; split) and a fifth for the sessions' layout (neurons, trial
counts, which conditions get the remainder trials). The same seed and parameters give the same files.

Shape legend: B trials, T bins, N channels (a session's neurons), P pool neurons, C conditions,
D latent dimensions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolfads.data.synthetic import (
    SIMULATORS,
    Arrays,
    _check_params,
    _defaults,
    _lorenz_rates,
    _minmax,
    _rate_rnn_weights,
    _require,
    _require_fractions,
    _require_positive,
    _resolved_params,
    _run_rate_rnn,
    _session,
    _streams,
    _unit_rows,
    parse_overrides,
    simulate_to_file,
    write_session_file,
)
from autolfads.errors import UsageError

__all__ = [
    "SESSION_SIMULATORS",
    "chaotic_rnn_sessions",
    "lorenz_sessions",
    "simulate_sessions",
    "simulate_sessions_to_dir",
    "write_simulation",
]


@dataclass(frozen=True)
class PoolSampling:
    """How S sessions sample a pool of P neurons and draw their trials (inclusive ranges)."""

    sessions: int
    n_neurons_pool: int
    neurons: tuple[int, int]  # (neurons_min, neurons_max) per session
    trials: tuple[int, int]  # (trials_min, trials_max) per session, train + valid (+ test)
    n_conditions: int
    splits: int = 2  # 3 with a test split: the trials each condition needs at least

    def check(self) -> None:
        """Refuse sizes that cannot be drawn, naming the parameter and its value."""
        (n_min, n_max), (t_min, t_max) = self.neurons, self.trials
        _require(self.sessions >= 1, "sessions", self.sessions, "an integer >= 1")
        _require(self.n_conditions >= 1, "n_conditions", self.n_conditions, "an integer >= 1")
        pool = self.n_neurons_pool
        _require(pool >= 1, "n_neurons_pool", pool, "an integer >= 1")
        in_pool = f"n_neurons_pool={pool}"
        _require(1 <= n_min <= pool, "neurons_min", n_min, f"an integer in [1, {in_pool}]")
        _require(
            n_min <= n_max <= pool,
            "neurons_max",
            n_max,
            f"an integer in [neurons_min={n_min}, {in_pool}]",
        )
        least = self.splits * self.n_conditions  # a train and a valid (and test) trial each
        which = "a train and a valid" if self.splits == 2 else "a train, a valid and a test"
        _require(
            t_min >= least,
            "trials_min",
            t_min,
            f">= {self.splits} * n_conditions = {least} ({which} trial of each condition)",
        )
        _require(t_max >= t_min, "trials_max", t_max, f"an integer >= trials_min={t_min}")

    def layouts(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per session: its pool neurons (N,) ascending and its trials' conditions (B,) sorted."""
        layouts = []
        for _ in range(self.sessions):
            n_neurons = int(rng.integers(self.neurons[0], self.neurons[1] + 1))
            neurons = np.sort(rng.choice(self.n_neurons_pool, n_neurons, replace=False))
            n_trials = int(rng.integers(self.trials[0], self.trials[1] + 1))
            layouts.append((neurons, _trial_conditions(rng, n_trials, self.n_conditions)))
        return layouts


def _trial_conditions(rng: np.random.Generator, n_trials: int, n_conditions: int) -> np.ndarray:
    """(B,) sorted condition labels: each condition `B // C` trials, `B % C` random ones one more."""
    counts = np.full(n_conditions, n_trials // n_conditions)
    counts[rng.choice(n_conditions, n_trials % n_conditions, replace=False)] += 1
    return np.repeat(np.arange(n_conditions), counts)


def lorenz_sessions(
    seed: int = 0,
    *,
    sessions: int = 5,
    n_neurons_pool: int = 120,
    neurons_min: int = 25,
    neurons_max: int = 40,
    trials_min: int = 150,
    trials_max: int = 250,
    n_conditions: int = 20,
    n_steps: int = 50,
    dt: float = 0.02,
    base_rate: float = 5.0,
    gain: float = 0.75,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    lorenz_dt: float = 0.015,
    burn_in: int = 300,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> list[Arrays]:
    """S sessions of Poisson spikes from one Lorenz system, each recording part of a neuron pool.

    Args:
        sessions: number of sessions S.
        n_neurons_pool: pool neurons P with a fixed read-out each.
        neurons_min, neurons_max: range of a session's neuron count N (a subset of the pool).
        trials_min, trials_max: range of a session's trial count B (train, valid and test).
        n_conditions: conditions C (latent initial states), shared by all sessions.
        valid_fraction, test_fraction: fractions of each condition's trials in the valid and
            test splits (test 0: none), as in `autolfads.data.synthetic`.
        Others: as in `autolfads.data.synthetic.lorenz`.

    Returns:
        One dict of arrays per session (module docstring).
    """
    sampling = PoolSampling(
        sessions,
        n_neurons_pool,
        (neurons_min, neurons_max),
        (trials_min, trials_max),
        n_conditions,
        splits=3 if test_fraction > 0 else 2,
    )
    sampling.check()
    _require_steps(n_steps, valid_fraction, test_fraction)
    _require_positive(dt=dt, base_rate=base_rate, lorenz_dt=lorenz_dt)
    _require(burn_in >= 0, "burn_in", burn_in, "an integer >= 0")
    model_rng, cond_rng, noise_rng, split_rng, layout_rng = _streams(seed, 5)
    system = (sigma, rho, beta), lorenz_dt, burn_in
    sizes = (n_conditions, n_steps, n_neurons_pool)
    latents, rates = _lorenz_rates(model_rng, cond_rng, sizes, system, base_rate, gain)
    layouts = sampling.layouts(layout_rng)
    fractions = (valid_fraction, test_fraction)
    return _record_sessions(rates, latents, dt, layouts, (noise_rng, split_rng), fractions)


def chaotic_rnn_sessions(
    seed: int = 0,
    *,
    sessions: int = 5,
    n_neurons_pool: int = 120,
    neurons_min: int = 25,
    neurons_max: int = 40,
    trials_min: int = 150,
    trials_max: int = 250,
    n_conditions: int = 20,
    n_units: int = 50,
    n_steps: int = 100,
    g: float = 1.5,
    max_rate: float = 30.0,
    dt: float = 0.01,
    tau: float = 0.025,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> list[Arrays]:
    """S sessions of Poisson spikes from one chaotic rate RNN, each recording part of a neuron pool.

    Args:
        sessions, n_neurons_pool, neurons_min, neurons_max, trials_min, trials_max,
            n_conditions: as in `lorenz_sessions`.
        n_units: units of the RNN (the latent dimension D).
        g: gain of the recurrent weights.
        Others: as in `autolfads.data.synthetic.chaotic_rnn`.

    Returns:
        One dict of arrays per session (module docstring).
    """
    sampling = PoolSampling(
        sessions,
        n_neurons_pool,
        (neurons_min, neurons_max),
        (trials_min, trials_max),
        n_conditions,
        splits=3 if test_fraction > 0 else 2,
    )
    sampling.check()
    _require_steps(n_steps, valid_fraction, test_fraction)
    _require(n_units >= 1, "n_units", n_units, "an integer >= 1")
    _require_positive(max_rate=max_rate, dt=dt, tau=tau)
    model_rng, cond_rng, noise_rng, split_rng, layout_rng = _streams(seed, 5)
    weights, _ = _rate_rnn_weights(model_rng, n_units)
    readout = _unit_rows(model_rng, n_neurons_pool, n_units)  # (P, D)
    x0 = cond_rng.standard_normal((n_conditions, n_units))
    latents = np.tanh(_run_rate_rnn(x0, weights, g, dt / tau, n_steps))  # (C, T, D)
    rates = _minmax(latents @ readout.T, max_rate)  # (C, T, P)
    layouts = sampling.layouts(layout_rng)
    fractions = (valid_fraction, test_fraction)
    return _record_sessions(rates, latents, dt, layouts, (noise_rng, split_rng), fractions)


def _require_steps(n_steps: int, valid_fraction: float, test_fraction: float) -> None:
    _require(n_steps >= 1, "n_steps", n_steps, "an integer >= 1")
    _require_fractions(valid_fraction, test_fraction)


def _record_sessions(
    rates_hz: np.ndarray,
    latents: np.ndarray,
    dt: float,
    layouts: Sequence[tuple[np.ndarray, np.ndarray]],
    rngs: tuple[np.random.Generator, np.random.Generator],
    fractions: tuple[float, float],
) -> list[Arrays]:
    """Each session's spikes, truth and latents from the pool's rates (C, T, P) and latents (C, T, D).

    `layouts` holds per session its pool neurons (N,) and its trials' conditions (B,); `rngs` are
    the noise and split streams, used by the sessions in turn; `fractions` is (valid_fraction,
    test_fraction).
    """
    noise_rng, split_rng = rngs
    arrays = []
    for index, (neurons, condition) in enumerate(layouts):
        extras = {"latents": latents[condition].astype(np.float32)}
        rates = rates_hz[condition][:, :, neurons]  # (B, T, N)
        session = _session(rates, dt, condition, noise_rng, split_rng, fractions, extras)
        session["pool_neuron_index"] = neurons.astype(np.int64)
        session["session_index"] = np.asarray(index, dtype=np.int64)
        arrays.append(session)
    return arrays


SESSION_SIMULATORS: dict[str, Callable[..., list[Arrays]]] = {
    "lorenz": lorenz_sessions,
    "chaotic-rnn": chaotic_rnn_sessions,
}
"""Simulator name -> function(seed, **params) returning one dict of arrays per session."""

_SESSION_FILE = re.compile(r"sess(\d+)\.h5")


def simulate_sessions(name: str, *, seed: int = 0, **params: object) -> list[Arrays]:
    """Run the multi-session form of simulator `name`; `params` override its defaults.

    Raises:
        UsageError: no multi-session form of `name`, an unknown parameter, or a bad value.
    """
    function = _session_lookup(name)
    return function(seed, **_check_params(f"{name} sessions", function, params))


def simulate_sessions_to_dir(
    name: str, out_dir: str | Path, *, seed: int = 0, overrides: Sequence[str] = ()
) -> list[Path]:
    """Simulate the sessions of `name` and write `out_dir/sess{s}.h5`, each atomically.

    Every parameter is checked and every session simulated before anything is written. Files
    of the same names are replaced; the folder is created if missing.

    Args:
        name: a key of `SESSION_SIMULATORS`.
        out_dir: the folder of the session files.
        seed: random seed; the same seed and overrides give the same files.
        overrides: "key=value" strings (`sessions=S` among them, or S = 5).

    Returns:
        The files written, session 0 first. Each file's attributes record the simulator, seed,
        parameters and its session index.

    Raises:
        UsageError: a bad parameter; `out_dir` is a file, or holds a `sess{s}.h5` with s >= S
            (left from another simulation, a glob would pick it up).
    """
    function = _session_lookup(name)
    params = _check_params(f"{name} sessions", function, parse_overrides(overrides))
    sessions = function(seed, **params)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, len(sessions))
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = _resolved_params(function, params)
    attrs = {"simulator": name, "seed": seed, "params": resolved}
    return [
        write_session_file(out_dir / f"sess{s}.h5", arrays, {**attrs, "session": s})
        for s, arrays in enumerate(sessions)
    ]


def write_simulation(
    name: str, out: str | Path, *, seed: int = 0, overrides: Sequence[str] = ()
) -> list[Path]:
    """`autolfads simulate`: the sessions in folder `out` with `sessions=S`, else one file `out`.

    Returns:
        The files written.

    Raises:
        UsageError: as `simulate_to_file` and `simulate_sessions_to_dir`; a multi-session
            parameter without `sessions`.
    """
    params = parse_overrides(overrides)
    if "sessions" in params:
        return simulate_sessions_to_dir(name, out, seed=seed, overrides=overrides)
    if name in SESSION_SIMULATORS:
        _refuse_session_only(name, params)
    return [simulate_to_file(name, out, seed=seed, overrides=overrides)]


def _session_lookup(name: str) -> Callable[..., list[Arrays]]:
    if name not in SESSION_SIMULATORS:
        raise UsageError(
            f"simulator {name!r} has no multi-session form (sessions=S); "
            f"expected one of: {', '.join(SESSION_SIMULATORS)}"
        )
    return SESSION_SIMULATORS[name]


def _refuse_session_only(name: str, params: dict[str, object]) -> None:
    """Name a parameter of the multi-session form given to the single-file simulator."""
    single = _defaults(SIMULATORS[name])
    for key, value in params.items():
        if key not in single and key in _defaults(SESSION_SIMULATORS[name]):
            raise UsageError(
                f"simulator {name!r}: parameter {key}={value!r} needs sessions=S "
                "(a multi-session simulation into a folder)"
            )


def _check_out_dir(out_dir: Path, n_sessions: int) -> None:
    """Refuse a file, or a folder with session files this simulation would not replace."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder; sessions=S writes a folder")
    if not out_dir.is_dir():
        return
    for path in sorted(out_dir.iterdir()):
        match = _SESSION_FILE.fullmatch(path.name)
        if match and int(match.group(1)) >= n_sessions:
            raise UsageError(
                f"{path}: left from another simulation (this one writes sess0.h5 ... "
                f"sess{n_sessions - 1}.h5); remove it or choose another folder"
            )
