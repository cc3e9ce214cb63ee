"""Synthetic datasets with known ground truth (README, `autolfads simulate`; `autolfads simulate`).

Every simulator returns the arrays of a session file (docs/data-format.md):

- `train_encod_data`, `valid_encod_data`, `train_recon_data`, `valid_recon_data`: (B, T, N)
  observations; encod and recon are the same array.
- `train_truth`, `valid_truth`: (B, T, N) ground truth, NaN-free, and `conversion_factor`, so
  that `truth / conversion_factor` is the expected observation in the units of the data.
- `train_inds`, `valid_inds`: (B,) original trial indices; trial `c * trials_per_condition + k` is
  trial k of condition c.
- `train_condition`, `valid_condition`: (B,) condition id of each trial.
- simulator-specific truth, e.g. `{split}_latents` (B, T, D) or `{split}_true_inputs` (B, T, 1).

The simulators:

- `chaotic-rnn`, `lorenz`, `oscillator`: integer Poisson spike counts per bin; the truth is the
  firing rate in Hz and `conversion_factor` = 1 / dt (bins per second).
- `calcium`: deconvolved 2-photon events (float, 0 or >= s_min) from Lorenz-driven spikes, at
  the frame rate or, with `subframes=K`, in the sub-frame SBTT layout of RADICaL (each neuron
  observed in one sub-bin per frame, NaN in the others; `autolfads.data.subframe`); the truth is
  the expected event rate in Hz, `conversion_factor` = frame_rate; `scan_offsets` (N,).
- `emg`: positive gamma-distributed, EMG-like signals of muscles with occasional large
  artifacts; the truth is the muscle activation in (0, 1), `conversion_factor` = 1 / amplitude.

`lorenz` and `chaotic-rnn` also have a multi-session form (`sessions=S`: one latent system, S
files with their own neurons and trial counts), in `autolfads.data.synthetic_sessions`.

Trials of one condition share their initial state (and, without inputs or jitter, their truth);
they differ by observation noise. Each condition's trials are split at random into train and
valid, with `round(valid_fraction * trials_per_condition)` valid trials (at least one of each).
With `test_fraction` > 0 (default 0: no test split, and the train/valid split of earlier
versions), `round(test_fraction * trials_per_condition)` more trials of each condition (at least
one) become a test split with a target: `test_encod_data`, `test_recon_data`, `test_truth`,
`test_inds`, `test_condition` and the simulator's other per-trial keys (`test_latents`, ...).
The test trials are for scoring alone: no training or selection reads them.

Randomness: `seed` feeds independent numpy streams for the fixed model (weights, read-out), the
conditions (initial states, pulse times), the observation noise and the split, so the same seed
gives identical arrays.

Shape legend: B trials, T bins, N channels (neurons or muscles).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from autolfads._atomic import atomic_path
from autolfads.data.subframe import scan_offsets_by_row, subframe_index, to_subframe_bins
from autolfads.errors import UsageError

__all__ = [
    "SIMULATORS",
    "calcium",
    "chaotic_rnn",
    "emg",
    "lorenz",
    "oscillator",
    "parse_overrides",
    "simulate",
    "simulate_to_file",
    "write_session_file",
]

Arrays = dict[str, np.ndarray]


# --------------------------------------------------------------------------- simulators


def chaotic_rnn(
    seed: int = 0,
    *,
    n_conditions: int = 400,
    trials_per_condition: int = 10,
    n_neurons: int = 50,
    n_steps: int = 100,
    g: float | None = None,
    inputs: bool = False,
    input_magnitude: float = 20.0,
    max_rate: float = 30.0,
    dt: float = 0.01,
    tau: float = 0.025,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> Arrays:
    """Spikes from a chaotic rate RNN (the LFADS 2018 benchmark).

    The network `x <- (1 - dt/tau) x + (dt/tau) (g W tanh(x) + b u_t)`, W ~ N(0, 1/N), starts
    each condition from x0 ~ N(0, 1). Rates are `tanh(x)` min-max normalised per trial (over
    all bins and neurons) to [0, max_rate] Hz; spikes are Poisson with mean rate * dt per bin.

    Args:
        n_conditions, trials_per_condition: conditions (initial states) and trials of each.
        n_neurons: units N of the RNN, all recorded.
        n_steps: bins T of `dt` seconds each.
        g: gain of the recurrent weights; default 1.5, or 2.5 with `inputs`.
        inputs: if true, each trial gets one pulse of `input_magnitude` at a random bin in
            [T/4, 3T/4) through input weights b ~ N(0, 1); the pulse is stored as
            `{split}_true_inputs` (B, T, 1).
        max_rate: peak rate in Hz.
        dt, tau: bin width and time constant in seconds.
        valid_fraction: fraction of each condition's trials in the valid split.
        test_fraction: fraction of each condition's trials in the test split (0: none).
    """
    _require_sizes(
        n_conditions, trials_per_condition, n_neurons, n_steps, valid_fraction, test_fraction
    )
    _require_positive(max_rate=max_rate, dt=dt, tau=tau)
    gain = g if g is not None else (2.5 if inputs else 1.5)
    model_rng, cond_rng, noise_rng, split_rng = _streams(seed)
    weights, input_weights = _rate_rnn_weights(model_rng, n_neurons)
    x0 = cond_rng.standard_normal((n_conditions, n_neurons))
    condition = np.repeat(np.arange(n_conditions), trials_per_condition)
    extras: Arrays = {}
    if inputs:
        pulse = _pulse_inputs(cond_rng, condition.size, n_steps, input_magnitude)  # (B, T)
        pulses = (pulse, input_weights)
        states = _run_rate_rnn(x0[condition], weights, gain, dt / tau, n_steps, pulses)
        rates = _minmax_rates(states, max_rate)
        extras["true_inputs"] = pulse[:, :, None].astype(np.float32)
    else:
        states = _run_rate_rnn(x0, weights, gain, dt / tau, n_steps)
        rates = _minmax_rates(states, max_rate)[condition]
    return _session(
        rates, dt, condition, noise_rng, split_rng, (valid_fraction, test_fraction), extras
    )


def lorenz(
    seed: int = 0,
    *,
    n_conditions: int = 65,
    trials_per_condition: int = 24,
    n_neurons: int = 29,
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
) -> Arrays:
    """Poisson spikes whose log-rates are linear in the state of a Lorenz system.

    Each condition starts at a random point, runs `burn_in` bins to reach the attractor, then
    records `n_steps` bins (`lorenz_dt` Lorenz time units each, RK4). The latents z are
    normalised to zero mean and unit std per dimension over all conditions and bins, and stored
    as `{split}_latents` (B, T, 3). Rates: `log r = log(base_rate) + gain * C z` with C's rows
    random unit vectors, so log-rates vary by about `gain` around the base.

    Args:
        n_conditions, trials_per_condition: conditions and trials of each (trials share latents).
        n_neurons, n_steps: neurons N and bins T of `dt` seconds.
        base_rate: rate in Hz at z = 0.
        gain: size of the latent modulation of the log-rates.
        sigma, rho, beta: Lorenz parameters.
        lorenz_dt: Lorenz time advanced per bin.
        burn_in: bins run and discarded before recording.
        valid_fraction: fraction of each condition's trials in the valid split.
        test_fraction: fraction of each condition's trials in the test split (0: none).
    """
    _require_sizes(
        n_conditions, trials_per_condition, n_neurons, n_steps, valid_fraction, test_fraction
    )
    _require_positive(dt=dt, base_rate=base_rate, lorenz_dt=lorenz_dt)
    _require(burn_in >= 0, "burn_in", burn_in, "an integer >= 0")
    model_rng, cond_rng, noise_rng, split_rng = _streams(seed)
    system = (sigma, rho, beta), lorenz_dt, burn_in
    latents, rates = _lorenz_rates(
        model_rng, cond_rng, (n_conditions, n_steps, n_neurons), system, base_rate, gain
    )  # (C, T, 3), (C, T, N)
    condition = np.repeat(np.arange(n_conditions), trials_per_condition)
    extras = {"latents": latents[condition].astype(np.float32)}
    return _session(
        rates[condition],
        dt,
        condition,
        noise_rng,
        split_rng,
        (valid_fraction, test_fraction),
        extras,
    )


def oscillator(
    seed: int = 0,
    *,
    n_conditions: int = 50,
    trials_per_condition: int = 10,
    n_neurons: int = 100,
    n_steps: int = 50,
    angle_per_step: float = 0.2,
    amplitude: float = 1.0,
    dt: float = 0.02,
    base_rate: float = 10.0,
    gain: float = 1.0,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> Arrays:
    """Poisson spikes whose log-rates are linear in a 2-D rotating latent.

    The latent is `amplitude * (cos a_t, sin a_t)` with `a_t = phase + angle_per_step * t`, the
    phase uniform in [0, 2 pi) per condition; it is stored as `{split}_latents` (B, T, 2).
    Rates: `log r = log(base_rate) + gain * C z` with C's rows random unit vectors.

    Args:
        n_conditions, trials_per_condition: conditions (phases) and trials of each.
        n_neurons, n_steps: neurons N and bins T of `dt` seconds.
        angle_per_step: rotation per bin in radians.
        amplitude: radius of the latent circle.
        base_rate: rate in Hz at z = 0.
        gain: size of the latent modulation of the log-rates.
        valid_fraction: fraction of each condition's trials in the valid split.
        test_fraction: fraction of each condition's trials in the test split (0: none).
    """
    _require_sizes(
        n_conditions, trials_per_condition, n_neurons, n_steps, valid_fraction, test_fraction
    )
    _require_positive(dt=dt, base_rate=base_rate)
    model_rng, cond_rng, noise_rng, split_rng = _streams(seed)
    readout = gain * _unit_rows(model_rng, n_neurons, 2)
    phase = cond_rng.uniform(0.0, 2.0 * np.pi, n_conditions)
    angle = phase[:, None] + angle_per_step * np.arange(n_steps)  # (C, T)
    latents = amplitude * np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (C, T, 2)
    rates = base_rate * np.exp(latents @ readout.T)
    condition = np.repeat(np.arange(n_conditions), trials_per_condition)
    extras = {"latents": latents[condition].astype(np.float32)}
    return _session(
        rates[condition],
        dt,
        condition,
        noise_rng,
        split_rng,
        (valid_fraction, test_fraction),
        extras,
    )


def calcium(
    seed: int = 0,
    *,
    n_conditions: int = 40,
    trials_per_condition: int = 20,
    n_neurons: int = 40,
    n_frames: int = 50,
    frame_rate: float = 30.0,
    subframes: int = 1,
    sim_subframes: int = 12,
    base_rate: float = 5.0,
    gain: float = 1.0,
    tau: float = 0.4,
    noise_std: float = 0.1,
    s_min: float = 0.3,
    lorenz_dt: float = 0.1,
    speed: float = 1.0,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    burn_in: int = 50,
    n_rows: int = 512,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> Arrays:
    """Deconvolved 2-photon calcium events from Lorenz-driven spikes (RADICaL's synthetic data).

    Time runs on a fine grid of `sim_subframes` (S) bins per imaging frame. Spikes are Poisson
    with rates `log r = log(base_rate) + gain * C z` (Hz), z the normalised Lorenz state
    (advancing `lorenz_dt * speed` time units per frame, i.e. fast relative to the frames). Each spike
    adds 1 to the neuron's fluorescence, which decays with time constant `tau` (GCaMP-like; the
    data unit is one spike's transient). The microscope samples neuron n once per frame, at
    `scan_offsets[n]` of the frame (its scan row), and adds Gaussian noise of `noise_std`. The
    frame-rate deconvolution `s_f = F_f - exp(-1 / (frame_rate * tau)) F_(f-1)` recovers the
    spikes of the frame period before each sample; its positive part, zeroed below `s_min`, is
    the event of that frame, so every event is 0 or >= s_min.

    Layout: with `subframes` = 1 the data are (B, n_frames, N) frame-rate events; with K > 1
    they are (B, n_frames * K, N), each neuron observed in sub-bin `floor(offset * K)` of each
    frame and NaN in the other K - 1 (SBTT; see `autolfads.data.subframe`). The simulation is
    always at S bins per frame, so the same seed with any `subframes` describes the same trials
    (latents, spikes, events, split); K must divide S.

    Truth (at the written resolution, NaN-free): `{split}_truth` is the expected event (spikes of
    the frame period before the neuron's scan time, as weighted by the decay, before noise and
    threshold) times the frame rate, in Hz, with `conversion_factor` = frame_rate, so
    `truth / conversion_factor` is in the units of the data; in an unobserved sub-bin it is the
    value the neuron's event would have if it were scanned there (same phase in the sub-bin).
    `{split}_latents` (B, T, 3) are the Lorenz latents averaged over each written bin;
    `scan_offsets` (N,) the scan times in fractions of a frame.

    Speed: `speed` runs the latent system faster (> 1) or slower (< 1) relative to the frames;
    the frame rate and everything downstream of the latents stay the same. The Lorenz flow is
    the same, only sampled `speed` times further apart in Lorenz time, so every frequency of the
    latents' power spectrum scales by `speed`. At the defaults (lorenz_dt 0.1, 30 Hz) the
    latents' power peaks at about 4 Hz, below the frame rate's Nyquist frequency
    (frame_rate / 2 = 15 Hz); `speed=4` moves the peak to about 16 Hz, above it, where
    frame-rate data alias the dynamics and sub-frame bins (`subframes` > 1) can still resolve
    them. `speed=1` gives the arrays of earlier versions bit for bit.

    Args:
        n_conditions, trials_per_condition: conditions (Lorenz initial states) and trials of each;
            trials of a condition share latents and rates, not spikes or noise.
        n_neurons, n_frames: neurons N and imaging frames per trial.
        frame_rate: frames per second.
        subframes: sub-frame bins K written per frame (1: frame-rate data).
        sim_subframes: fine simulation bins S per frame; a multiple of `subframes`.
        base_rate: firing rate in Hz at z = 0.
        gain: size of the latent modulation of the log-rates.
        tau: decay time constant of the fluorescence, seconds.
        noise_std: std of the fluorescence noise, in units of one spike's transient.
        s_min: deconvolution threshold; smaller positive events become 0.
        lorenz_dt: Lorenz time advanced per frame at speed 1.
        speed: factor on `lorenz_dt`: how fast the latent system runs relative to the frames.
        sigma, rho, beta: Lorenz parameters.
        burn_in: frames run and discarded before recording.
        n_rows: image rows; neurons sit at random rows, scanned at `row / n_rows` of the frame.
        valid_fraction: fraction of each condition's trials in the valid split.
        test_fraction: fraction of each condition's trials in the test split (0: none).
    """
    _require_sizes(
        n_conditions, trials_per_condition, n_neurons, n_frames, valid_fraction, test_fraction
    )
    _require_positive(frame_rate=frame_rate, base_rate=base_rate, tau=tau, lorenz_dt=lorenz_dt)
    _require_positive(s_min=s_min, speed=speed)
    _require(noise_std >= 0, "noise_std", noise_std, "a number >= 0")
    _require(burn_in >= 0, "burn_in", burn_in, "an integer >= 0")
    _require(n_rows >= 1, "n_rows", n_rows, "an integer >= 1")
    _require_subframes(subframes, sim_subframes)
    model_rng, cond_rng, noise_rng, split_rng = _streams(seed)
    readout = gain * _unit_rows(model_rng, n_neurons, 3)
    scan_offsets = scan_offsets_by_row(n_neurons, model_rng, n_rows=n_rows)
    start = cond_rng.standard_normal((n_conditions, 3)) * 5.0 + np.array([0.0, 0.0, 25.0])
    # fine grid: one leading frame (the window of the first event) + n_frames, S bins each
    step = lorenz_dt * speed  # Lorenz time per frame
    fine = _fine_lorenz(start, (sigma, rho, beta), step, burn_in, n_frames + 1, sim_subframes)
    rates = base_rate * np.exp(fine @ readout.T)  # (C, (T + 1) S, N) in Hz
    counts = rates / (frame_rate * sim_subframes)  # expected spikes per fine bin
    fine_decay = math.exp(-1.0 / (frame_rate * sim_subframes * tau))
    scan_bin = subframe_index(scan_offsets, sim_subframes)  # (N,) fine bin of each neuron's scan
    frame_scans = _scan_bins(scan_bin, n_frames, sim_subframes, 1)  # (T, N)
    written_scans = _scan_bins(scan_bin, n_frames, sim_subframes, subframes)  # (T K, N)
    condition = np.repeat(np.arange(n_conditions), trials_per_condition)
    frame_decay = math.exp(-1.0 / (frame_rate * tau))
    events = _calcium_events(
        counts, condition, frame_scans, fine_decay, frame_decay, (noise_std, s_min), noise_rng
    )  # (B, T, N)
    expected = _decayed_sums(counts, written_scans, fine_decay, sim_subframes)  # (C, T K, N)
    truth = (expected * frame_rate).astype(np.float32)  # Hz
    latents = _bin_means(fine[:, sim_subframes:], n_frames * subframes)  # (C, T K, 3)
    if subframes > 1:
        events = to_subframe_bins(events, scan_offsets, subframes)
    extras = {"latents": latents[condition].astype(np.float32)}
    fractions = (valid_fraction, test_fraction)
    arrays = _split_session(
        events, truth[condition], condition, split_rng, fractions, extras, frame_rate
    )
    arrays["scan_offsets"] = scan_offsets
    return arrays


def emg(
    seed: int = 0,
    *,
    n_conditions: int = 20,
    trials_per_condition: int = 20,
    n_muscles: int = 12,
    n_steps: int = 100,
    dt: float = 0.01,
    n_latents: int = 3,
    n_bumps: int = 3,
    bump_width: float = 0.08,
    time_jitter: float = 0.02,
    weight_max: float = 1.5,
    bias: float = -3.0,
    amplitude: float = 1.0,
    gamma_shape: float = 5.0,
    artifact_rate: float = 0.002,
    artifact_min: float = 10.0,
    artifact_max: float = 30.0,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> Arrays:
    """Rectified, smoothed EMG-like signals of muscles driven by a few smooth latents.

    Each of `n_latents` latents is, per condition, a sum of `n_bumps` Gaussian bumps (heights
    uniform in [1, 3], centres uniform over the middle 80 % of the trial, widths `bump_width`
    x [0.5, 1.5] s); each trial shifts every bump by N(0, time_jitter) seconds, so trials of a
    condition differ a little. Muscle activations are `a = sigmoid(W z + bias)` in (0, 1), W
    (M, D) non-negative, uniform in [0, weight_max]. The observation of each bin is
    Gamma-distributed with mean `amplitude * a` and shape `gamma_shape` (coefficient of
    variation 1 / sqrt(shape)); with probability `artifact_rate` per channel and bin a
    movement-like artifact adds `U(artifact_min, artifact_max)` times the mean signal. All
    finite values are > 0 (the support of the gamma).

    Truth: `{split}_truth` (B, T, M) are the activations a, and `conversion_factor` =
    1 / amplitude, so `truth / conversion_factor` is the mean signal in the units of the data
    (1 by default). `{split}_latents` (B, T, D) are the latents, `{split}_artifacts` (B, T, M)
    marks the bins with an artifact.

    Args:
        n_conditions, trials_per_condition: conditions (bump patterns) and trials of each.
        n_muscles, n_steps: muscles (channels) M and bins T of `dt` seconds.
        n_latents, n_bumps: latent signals D and bumps per latent.
        bump_width: typical bump std in seconds.
        time_jitter: std in seconds of each trial's shift of each bump.
        weight_max, bias: range of the mixing weights and offset of the activation's drive.
        amplitude: signal at activation 1, in data units.
        gamma_shape: shape parameter of the gamma observations.
        artifact_rate: probability of an artifact per channel and bin (0: none).
        artifact_min, artifact_max: artifact size range, in multiples of the mean signal.
        valid_fraction: fraction of each condition's trials in the valid split.
        test_fraction: fraction of each condition's trials in the test split (0: none).
    """
    _require_sizes(
        n_conditions, trials_per_condition, n_muscles, n_steps, valid_fraction, test_fraction
    )
    _require_positive(dt=dt, bump_width=bump_width, amplitude=amplitude, gamma_shape=gamma_shape)
    _require_positive(weight_max=weight_max)
    _require(n_latents >= 1, "n_latents", n_latents, "an integer >= 1")
    _require(n_bumps >= 1, "n_bumps", n_bumps, "an integer >= 1")
    _require(time_jitter >= 0, "time_jitter", time_jitter, "a number >= 0")
    _require(0 <= artifact_rate <= 1, "artifact_rate", artifact_rate, "a probability in [0, 1]")
    _require(artifact_min >= 0, "artifact_min", artifact_min, "a number >= 0")
    _require(
        artifact_max >= artifact_min,
        "artifact_max",
        artifact_max,
        f">= artifact_min={artifact_min}",
    )
    model_rng, cond_rng, noise_rng, split_rng = _streams(seed)
    weights = model_rng.uniform(0.0, weight_max, (n_muscles, n_latents))
    condition = np.repeat(np.arange(n_conditions), trials_per_condition)
    duration = n_steps * dt
    bumps = _random_bumps(cond_rng, n_conditions, n_latents, n_bumps, duration, bump_width)
    latents = _bump_latents(cond_rng, bumps, condition, n_steps, dt, time_jitter)  # (B, T, D)
    activations = 1.0 / (1.0 + np.exp(-(latents @ weights.T + bias)))  # (B, T, M)
    mean = amplitude * activations
    data = noise_rng.gamma(gamma_shape, mean / gamma_shape)
    artifacts = noise_rng.random(data.shape) < artifact_rate
    sizes = noise_rng.uniform(artifact_min, artifact_max, int(artifacts.sum()))
    data[artifacts] += sizes * mean.mean()
    data = np.maximum(data.astype(np.float32), np.finfo(np.float32).tiny)  # gamma support: > 0
    extras = {"latents": latents.astype(np.float32), "artifacts": artifacts}
    fractions = (valid_fraction, test_fraction)
    return _split_session(
        data, activations, condition, split_rng, fractions, extras, 1.0 / amplitude
    )


SIMULATORS: dict[str, Callable[..., Arrays]] = {
    "chaotic-rnn": chaotic_rnn,
    "lorenz": lorenz,
    "oscillator": oscillator,
    "calcium": calcium,
    "emg": emg,
}
"""Simulator name (as on the command line) -> function(seed, **params) returning the arrays."""


# --------------------------------------------------------------------------- public entry points


def simulate(name: str, *, seed: int = 0, **params: object) -> Arrays:
    """Run simulator `name` with `params` overriding its defaults; see `SIMULATORS`.

    Raises:
        UsageError: unknown simulator or parameter, or a value of the wrong type or range.
    """
    function = _lookup(name)
    return function(seed, **_check_params(name, function, params))


def simulate_to_file(
    name: str,
    out: str | Path,
    *,
    seed: int = 0,
    overrides: Sequence[str] = (),
) -> Path:
    """Simulate `name` and write the session file `out` atomically.

    Args:
        name: a key of `SIMULATORS`, e.g. 'chaotic-rnn'.
        out: the HDF5 file to write; replaced if it exists.
        seed: random seed; the same seed and overrides give the same file contents.
        overrides: "key=value" strings, values parsed as true/false, int or float.

    Returns:
        `out` as a Path. The file's attributes record the simulator, seed and parameters.

    Raises:
        UsageError: unknown simulator or parameter, or a malformed or out-of-range value;
            nothing is written then.
    """
    function = _lookup(name)
    params = _check_params(name, function, parse_overrides(overrides))
    arrays = function(seed, **params)
    attrs = {"simulator": name, "seed": seed, "params": _resolved_params(function, params)}
    return write_session_file(out, arrays, attrs)


def write_session_file(
    out: str | Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, object]
) -> Path:
    """Write `arrays` as the datasets of the HDF5 file `out`, atomically, with `attrs` as its
    attributes (a mapping value is stored as JSON). Returns `out` as a Path."""
    out = Path(out)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as file:
            for key, value in arrays.items():
                _write_array(file, key, value)
            for key, value in attrs.items():
                file.attrs[key] = json.dumps(value) if isinstance(value, Mapping) else value
    return out


def parse_overrides(overrides: Sequence[str]) -> dict[str, bool | int | float]:
    """Parse "key=value" strings; values become bool (true/false), int or float.

    Raises:
        UsageError: an item is not `key=value` or its value is not a number or boolean.
    """
    params: dict[str, bool | int | float] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"override {item!r} is not key=value (e.g. n_conditions=100)")
        params[key] = _parse_value(key, text.strip())
    return params


# --------------------------------------------------------------------------- parameters


def _lookup(name: str) -> Callable[..., Arrays]:
    if name not in SIMULATORS:
        raise UsageError(f"unknown simulator {name!r}; expected one of: {', '.join(SIMULATORS)}")
    return SIMULATORS[name]


def _parse_value(key: str, text: str) -> bool | int | float:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise UsageError(f"override {key}={text!r}: expected a number or true/false")


def _defaults(function: Callable[..., Arrays]) -> dict[str, object]:
    """Keyword parameters of a simulator and their defaults (without `seed`)."""
    signature = inspect.signature(function)
    return {name: p.default for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}


def _check_params(name: str, function: Callable[..., Arrays], params: Mapping) -> dict:
    """Check names and types of `params` against the simulator's defaults; ints become floats."""
    defaults = _defaults(function)
    checked = {}
    for key, value in params.items():
        if key not in defaults:
            raise UsageError(
                f"simulator {name!r} has no parameter {key!r}; "
                f"valid parameters: {', '.join(defaults)}"
            )
        checked[key] = _coerce(name, key, value, defaults[key])
    return checked


def _coerce(name: str, key: str, value: object, default: object) -> object:
    """`value` converted to the type of `default` (bool, int, or float; None means float)."""
    is_number = isinstance(value, (int, float, np.integer, np.floating))
    is_bool = isinstance(value, (bool, np.bool_))
    if isinstance(default, bool):
        ok, expected = is_bool, "true or false"
        value = bool(value) if ok else value
    elif isinstance(default, int):
        ok, expected = isinstance(value, (int, np.integer)) and not is_bool, "an integer"
        value = int(value) if ok else value
    else:
        ok, expected = is_number and not is_bool and math.isfinite(value), "a finite number"
        value = float(value) if ok else value
    if not ok:
        raise UsageError(f"simulator {name!r}: parameter {key}={value!r}; expected {expected}")
    return value


def _resolved_params(function: Callable[..., Arrays], params: Mapping) -> dict:
    return {**_defaults(function), **params}


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise UsageError(f"parameter {key}={value!r}; expected {expected}")


def _require_positive(**values: float) -> None:
    for key, value in values.items():
        _require(value > 0, key, value, "a number > 0")


def _require_subframes(subframes: int, sim_subframes: int) -> None:
    _require(subframes >= 1, "subframes", subframes, "an integer >= 1")
    _require(
        sim_subframes >= 1 and sim_subframes % subframes == 0,
        "sim_subframes",
        sim_subframes,
        f"a positive multiple of subframes={subframes}",
    )


def _require_sizes(
    n_conditions: int,
    trials: int,
    n_neurons: int,
    n_steps: int,
    valid_fraction: float,
    test_fraction: float = 0.0,
) -> None:
    _require(n_conditions >= 1, "n_conditions", n_conditions, "an integer >= 1")
    if test_fraction > 0:
        expected = "an integer >= 3 with test_fraction > 0 (train, valid and test)"
        _require(trials >= 3, "trials_per_condition", trials, expected)
    _require(trials >= 2, "trials_per_condition", trials, "an integer >= 2 (train and valid)")
    _require(n_neurons >= 1, "n_neurons", n_neurons, "an integer >= 1")
    _require(n_steps >= 1, "n_steps", n_steps, "an integer >= 1")
    _require_fractions(valid_fraction, test_fraction)


def _require_fractions(valid_fraction: float, test_fraction: float) -> None:
    _require(0.0 < valid_fraction < 1.0, "valid_fraction", valid_fraction, "a number in (0, 1)")
    _require(0.0 <= test_fraction < 1.0, "test_fraction", test_fraction, "a number in [0, 1)")
    _require(
        valid_fraction + test_fraction < 1.0,
        "test_fraction",
        test_fraction,
        f"< 1 - valid_fraction = {1.0 - valid_fraction:g} (some trials must train)",
    )


# --------------------------------------------------------------------------- dynamics


def _streams(seed: int, n: int = 4) -> list[np.random.Generator]:
    """Independent generators for the model, the conditions, the spike noise and the split.

    `n` > 4 adds more streams after these four (which stay the same for any `n`).
    """
    _require(isinstance(seed, (int, np.integer)) and seed >= 0, "seed", seed, "an integer >= 0")
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _pulse_inputs(
    rng: np.random.Generator, n_trials: int, n_steps: int, magnitude: float
) -> np.ndarray:
    """(B, T) inputs, zero except one pulse per trial at a bin t with T/4 <= t < 3T/4."""
    first, stop = -(-n_steps // 4), -(-3 * n_steps // 4)  # ceil(T/4), ceil(3T/4)
    _require(stop > first, "n_steps", n_steps, "at least 2 bins for an input pulse")
    inputs = np.zeros((n_trials, n_steps))
    inputs[np.arange(n_trials), rng.integers(first, stop, n_trials)] = magnitude
    return inputs


def _run_rate_rnn(
    x0: np.ndarray,
    weights: np.ndarray,
    gain: float,
    alpha: float,
    n_steps: int,
    pulses: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """States (B, T, N) of `x <- (1 - alpha) x + alpha (gain W tanh(x) + b u_t)` from x0 (B, N).

    `pulses` is (u, b): inputs u (B, T) and input weights b (N,). Bin t holds the state after the
    update driven by u_t, so a pulse shows in its own bin.
    """
    n_trials, n_neurons = x0.shape
    states = np.empty((n_trials, n_steps, n_neurons), dtype=np.float32)
    x = x0.astype(np.float64)
    recurrent = np.ascontiguousarray(gain * weights.T)  # (N, N), so that drive = tanh(x) @ it
    for t in range(n_steps):
        drive = np.tanh(x) @ recurrent
        if pulses is not None:
            inputs, input_weights = pulses
            drive += inputs[:, t, None] * input_weights
        x = (1.0 - alpha) * x + alpha * drive
        states[:, t] = x
    return states


def _rate_rnn_weights(rng: np.random.Generator, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Recurrent weights W (N, N) ~ N(0, 1/N) and input weights b (N,) ~ N(0, 1) of the rate RNN."""
    weights = rng.standard_normal((n_units, n_units)) / math.sqrt(n_units)
    return weights, rng.standard_normal(n_units)


def _minmax_rates(states: np.ndarray, max_rate: float) -> np.ndarray:
    """tanh(states) (B, T, N) rescaled per trial so its minimum is 0 and maximum `max_rate`."""
    return _minmax(np.tanh(states), max_rate)


def _minmax(activity: np.ndarray, max_rate: float) -> np.ndarray:
    """`activity` (B, T, N) rescaled per trial (over bins and channels) to [0, max_rate]."""
    low = activity.min(axis=(1, 2), keepdims=True)
    high = activity.max(axis=(1, 2), keepdims=True)
    return (activity - low) / np.maximum(high - low, 1e-12) * max_rate


def _lorenz_velocity(state: np.ndarray, sigma: float, rho: float, beta: float) -> np.ndarray:
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def _integrate_lorenz(
    start: np.ndarray, params: tuple[float, float, float], step: float, n_steps: int
) -> np.ndarray:
    """(C, n_steps, 3) Lorenz states, one per `step` time units, by RK4 with 5 substeps a bin."""
    substeps = 5
    h = step / substeps
    states = np.empty((start.shape[0], n_steps, 3))
    s = start.astype(np.float64)
    for t in range(n_steps):
        for _ in range(substeps):
            k1 = _lorenz_velocity(s, *params)
            k2 = _lorenz_velocity(s + 0.5 * h * k1, *params)
            k3 = _lorenz_velocity(s + 0.5 * h * k2, *params)
            k4 = _lorenz_velocity(s + h * k3, *params)
            s = s + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        states[:, t] = s
    return states


def _lorenz_rates(
    model_rng: np.random.Generator,
    cond_rng: np.random.Generator,
    sizes: tuple[int, int, int],
    system: tuple[tuple[float, float, float], float, int],
    base_rate: float,
    gain: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Lorenz latents (C, T, 3) and the log-linear rates (C, T, N) in Hz they drive.

    Each condition starts at a random point and runs `burn_in` bins before T are recorded; the
    read-out (N, 3) is `gain` times random unit rows, `log r = log(base_rate) + readout z`.

    Args:
        sizes: (C, T, N) conditions, bins and neurons.
        system: ((sigma, rho, beta), Lorenz time per bin, burn-in bins).
    """
    n_conditions, n_steps, n_neurons = sizes
    params, lorenz_dt, burn_in = system
    readout = gain * _unit_rows(model_rng, n_neurons, 3)
    start = cond_rng.standard_normal((n_conditions, 3)) * 5.0 + np.array([0.0, 0.0, 25.0])
    states = _integrate_lorenz(start, params, lorenz_dt, burn_in + n_steps)[:, burn_in:]
    latents = _standardise(states)  # (C, T, 3)
    return latents, base_rate * np.exp(latents @ readout.T)


_MAX_BURN_IN_STEP = 0.25
"""Largest Lorenz time of one RK4 bin (5 substeps) of the calcium burn-in; larger frames split."""


def _fine_lorenz(
    start: np.ndarray,
    params: tuple[float, float, float],
    step_per_frame: float,
    burn_in: int,
    n_frames: int,
    per_frame: int,
) -> np.ndarray:
    """(C, n_frames * per_frame, 3) normalised Lorenz latents on a grid of `per_frame` bins a frame.

    The burn-in (discarded) runs at one RK4 bin per frame, or, where a frame is more than
    `_MAX_BURN_IN_STEP` Lorenz time units (a fast `speed`: RK4 diverges from about 0.8), at the
    fewest equal bins per frame that are not; the recording runs at `per_frame` bins a frame.
    """
    if burn_in > 0:
        bins = max(1, math.ceil(step_per_frame / _MAX_BURN_IN_STEP))  # 1 at speed 1
        burned = _integrate_lorenz(start, params, step_per_frame / bins, burn_in * bins)
        start = burned[:, -1]
    states = _integrate_lorenz(start, params, step_per_frame / per_frame, n_frames * per_frame)
    return _standardise(states)


def _calcium_events(
    counts: np.ndarray,
    condition: np.ndarray,
    scans: np.ndarray,
    fine_decay: float,
    frame_decay: float,
    noise: tuple[float, float],
    rng: np.random.Generator,
    chunk: int = 64,
) -> np.ndarray:
    """(B, T, N) float32 deconvolved events of each frame: 0 or >= s_min.

    `counts` (C, (T + 1) S, N) are the expected spikes per fine bin of each condition (the first
    frame holds the window of the first event); `scans` (T, N) the fine bin at which each neuron
    is sampled in each frame; `noise` is (noise_std, s_min). Trials are drawn `chunk` at a time
    to bound memory.
    """
    noise_std, s_min = noise
    per_frame = counts.shape[1] // (scans.shape[0] + 1)
    events = np.empty((condition.size, *scans.shape), dtype=np.float32)
    for first in range(0, condition.size, chunk):
        trials = condition[first : first + chunk]
        spikes = rng.poisson(counts[trials]).astype(np.float32)  # (b, (T + 1) S, N)
        window = _decayed_sums(spikes, scans, fine_decay, per_frame)  # (b, T, N)
        eps = rng.standard_normal((trials.size, scans.shape[0] + 1, scans.shape[1]))
        # F_f = c_f + noise_std eps_f, and c_f - frame_decay c_(f-1) = window_f exactly, so the
        # deconvolved F_f - frame_decay F_(f-1) is:
        s = window + noise_std * (eps[:, 1:] - frame_decay * eps[:, :-1])
        s = s.astype(np.float32)  # threshold after rounding, so kept events stay >= s_min
        keep = s >= np.float64(s_min)  # compared in float64: float32(s_min) may be < s_min
        events[first : first + chunk] = np.where(keep, s, np.float32(0.0))
    return events


def _scan_bins(scan_bin: np.ndarray, n_frames: int, per_frame: int, subframes: int) -> np.ndarray:
    """(T K, N) fine bins of the scans of each neuron in each written bin (frame f, sub-bin k).

    The real scan of frame f (1-based on the fine grid, after the leading frame) is at
    `f S + scan_bin`; in the other sub-bins of the frame the neuron is placed at the same phase
    within its sub-bin, so the written bin holding the real scan gets exactly that fine bin.
    """
    width = per_frame // subframes  # fine bins per written bin
    starts = np.arange(1, n_frames + 1)[:, None] * per_frame + np.arange(subframes) * width
    return starts.reshape(-1, 1) + (scan_bin % width)[None, :]


def _decayed_sums(
    fine: np.ndarray, scans: np.ndarray, fine_decay: float, per_frame: int
) -> np.ndarray:
    """Sum of `fine_decay**age * fine` over the `per_frame` fine bins up to and with each scan.

    This is what a frame-rate deconvolution recovers of the spikes of the frame period before
    a sample. `fine` is (b, n_fine, N), `scans` (T', N) fine bin indices >= per_frame - 1;
    returns (b, T', N).
    """
    total = np.zeros((fine.shape[0], *scans.shape))
    for age in range(per_frame):
        total += fine_decay**age * np.take_along_axis(fine, (scans - age)[None], axis=1)
    return total


def _bin_means(fine: np.ndarray, n_bins: int) -> np.ndarray:
    """Means of (C, n_bins * w, D) over consecutive groups of w bins: (C, n_bins, D)."""
    n, n_fine, dims = fine.shape
    return fine.reshape(n, n_bins, n_fine // n_bins, dims).mean(axis=2)


def _random_bumps(
    rng: np.random.Generator,
    n_conditions: int,
    n_latents: int,
    n_bumps: int,
    duration: float,
    width: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heights, centres (s) and widths (s) of the bumps, each (C, D, n_bumps)."""
    shape = (n_conditions, n_latents, n_bumps)
    heights = rng.uniform(1.0, 3.0, shape)
    centres = rng.uniform(0.1 * duration, 0.9 * duration, shape)
    widths = width * rng.uniform(0.5, 1.5, shape)
    return heights, centres, widths


def _bump_latents(
    rng: np.random.Generator,
    bumps: tuple[np.ndarray, np.ndarray, np.ndarray],
    condition: np.ndarray,
    n_steps: int,
    dt: float,
    jitter: float,
) -> np.ndarray:
    """(B, T, D) sums of Gaussian bumps, each trial's bumps shifted by N(0, jitter) seconds."""
    heights, centres, widths = (b[condition] for b in bumps)  # (B, D, n_bumps)
    centres = centres + jitter * rng.standard_normal(centres.shape)
    t = (np.arange(n_steps) + 0.5) * dt  # bin centres
    z = (t[:, None, None, None] - centres) / widths  # (T, B, D, n_bumps)
    return (heights * np.exp(-0.5 * z**2)).sum(axis=-1).transpose(1, 0, 2)


def _standardise(latents: np.ndarray) -> np.ndarray:
    """Zero mean, unit std per last-axis dimension over all other axes."""
    flat = latents.reshape(-1, latents.shape[-1])
    return (latents - flat.mean(axis=0)) / np.maximum(flat.std(axis=0), 1e-12)


def _unit_rows(rng: np.random.Generator, n_rows: int, n_cols: int) -> np.ndarray:
    """(n_rows, n_cols) Gaussian matrix with each row scaled to unit length."""
    matrix = rng.standard_normal((n_rows, n_cols))
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


# --------------------------------------------------------------------------- session layout


def _session(
    rates_hz: np.ndarray,
    dt: float,
    condition: np.ndarray,
    noise_rng: np.random.Generator,
    split_rng: np.random.Generator,
    fractions: tuple[float, float],
    extras: Mapping[str, np.ndarray],
) -> Arrays:
    """Poisson spikes from rates (B, T, N) in Hz, split within conditions, in docs/data-format.md
    layout; `fractions` is (valid_fraction, test_fraction)."""
    counts = noise_rng.poisson(rates_hz * dt).astype(np.int32)
    return _split_session(counts, rates_hz, condition, split_rng, fractions, extras, 1.0 / dt)


def _split_session(
    data: np.ndarray,
    truth: np.ndarray,
    condition: np.ndarray,
    split_rng: np.random.Generator,
    fractions: tuple[float, float],
    extras: Mapping[str, np.ndarray],
    conversion_factor: float,
) -> Arrays:
    """Data and truth (B, T, N) and per-trial `extras`, split within conditions (docs/data-format.md).

    `fractions` is (valid_fraction, test_fraction); with test_fraction 0 there are no test keys.
    encod and recon data are the same array; the truth is stored as float32.
    """
    train, valid, test = _split_within_conditions(split_rng, condition, *fractions)
    arrays: Arrays = {"conversion_factor": np.asarray(conversion_factor)}
    splits = [("train", train), ("valid", valid)] + ([("test", test)] if test.size else [])
    for split, inds in splits:
        arrays[f"{split}_encod_data"] = data[inds]
        arrays[f"{split}_recon_data"] = arrays[f"{split}_encod_data"]
        arrays[f"{split}_truth"] = truth[inds].astype(np.float32)
        arrays[f"{split}_inds"] = inds.astype(np.int64)
        arrays[f"{split}_condition"] = condition[inds].astype(np.int64)
        for key, value in extras.items():
            arrays[f"{split}_{key}"] = value[inds]
    return arrays


def _split_within_conditions(
    rng: np.random.Generator,
    condition: np.ndarray,
    valid_fraction: float,
    test_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, valid, test) trial indices, split within each condition c of n_c trials:
    `round(valid_fraction * n_c)` random trials go to valid (at least one) and, with
    `test_fraction` > 0, the next `round(test_fraction * n_c)` of the same random order to test
    (at least one), always leaving at least one train trial.

    The random order is the same for any `test_fraction`, so with 0 (test empty) the split is
    the two-way split of earlier versions, trial for trial.

    Trials are grouped by condition: `condition` (B,) is sorted, condition c has n_c >= 2
    consecutive trials (>= 3 with a test split; the same number for every condition in the
    single-file simulators).
    """
    counts = np.bincount(condition)  # (C,) trials of each condition
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keys = rng.random((counts.size, counts.max()))  # one random order per condition
    split = np.zeros(condition.size, dtype=np.int8)  # 0 train, 1 valid, 2 test
    for c, n_c in enumerate(counts):
        reserve = 1 if test_fraction > 0 else 0  # a trial kept back for test
        n_valid = min(max(round(valid_fraction * n_c), 1), n_c - 1 - reserve)
        n_test = min(max(round(test_fraction * n_c), 1), n_c - 1 - n_valid) if reserve else 0
        order = first[c] + np.argsort(keys[c, :n_c])
        split[order[:n_valid]] = 1
        split[order[n_valid : n_valid + n_test]] = 2
    return tuple(np.flatnonzero(split == k) for k in range(3))  # type: ignore[return-value]


def _write_array(file: h5py.File, key: str, value: np.ndarray) -> None:
    """Write one dataset; large arrays are gzip-compressed (spike counts shrink ~10x)."""
    value = np.asarray(value)
    if value.ndim >= 2:
        file.create_dataset(key, data=value, compression="gzip", compression_opts=1, shuffle=True)
    else:
        file.create_dataset(key, data=value)
