"""NWB files written by pynwb itself, for the tests of `autolfads convert nwb` and
`autolfads nlb-submission`: a units table with spike times (and held-out flags), a trials table
with `split`, an alignment column and condition columns, and a hand-velocity TimeSeries.

Import from a test module as `from nwb_files import ...` after `pytest.importorskip("pynwb")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

TRIAL_S, GAP_S = 1.0, 0.3  # each trial lasts 1 s; 0.3 s between trials
BEHAVIOR_HZ = 1000.0


@dataclass(frozen=True)
class Recording:
    """What a simulated NLB-like NWB file holds.

    Attributes:
        spikes: N sorted arrays of spike times (s).
        heldout: (N,) True for the held-out units (None: no `heldout` column).
        trials: column -> (B_all,) values: start_time, stop_time, split, move_onset_time,
            trial_type, trial_version.
        hand_t, hand_vel: (S,) sample times (s) and (S, 2) values of the behaviour TimeSeries.
    """

    spikes: list[np.ndarray]
    heldout: np.ndarray | None
    trials: dict[str, np.ndarray]
    hand_t: np.ndarray
    hand_vel: np.ndarray


def simulate_recording(
    splits: list[str], heldout: list[bool] | None, seed: int = 0, rate_hz: float = 30.0
) -> Recording:
    """Poisson spike trains over the whole session, one trial per entry of `splits`."""
    rng = np.random.default_rng(seed)
    n_trials = len(splits)
    start = np.arange(n_trials) * (TRIAL_S + GAP_S) + 0.5
    total = start[-1] + TRIAL_S + 1.0  # room for a window reaching past the last trial
    n_units = len(heldout) if heldout is not None else 6
    spikes = []
    for _ in range(n_units):
        rate = rng.uniform(0.3, 1.5) * rate_hz
        spikes.append(np.sort(rng.uniform(0.0, total, size=rng.poisson(rate * total))))
    trials = {
        "start_time": start,
        "stop_time": start + TRIAL_S,
        "split": np.array(splits),
        "move_onset_time": start + rng.uniform(0.3, 0.5, size=n_trials),
        "trial_type": rng.integers(0, 3, size=n_trials),
        "trial_version": rng.integers(0, 2, size=n_trials),
    }
    hand_t = np.arange(0.0, total, 1.0 / BEHAVIOR_HZ)
    hand_vel = np.stack([np.sin(3.0 * hand_t), np.cos(5.0 * hand_t) + hand_t], axis=1)
    return Recording(
        spikes, None if heldout is None else np.array(heldout), trials, hand_t, hand_vel
    )


def write_nwb(path: Path, rec: Recording, behavior: bool = True) -> Path:
    """Write `rec` with pynwb: units (+ `heldout`), trials (+ columns), processing/behavior/hand_vel."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile(
        session_description="simulated NLB-like session",
        identifier=path.stem,
        session_start_time=datetime(2021, 1, 1, tzinfo=timezone.utc),
    )
    if rec.heldout is not None:
        nwb.add_unit_column(name="heldout", description="held out for co-smoothing")
    for n, times in enumerate(rec.spikes):
        extra = {} if rec.heldout is None else {"heldout": bool(rec.heldout[n])}
        nwb.add_unit(spike_times=times, **extra)
    columns = [c for c in rec.trials if c not in ("start_time", "stop_time")]
    for column in columns:
        nwb.add_trial_column(name=column, description=column)
    for b in range(len(rec.trials["start_time"])):
        values = {c: _scalar(rec.trials[c][b]) for c in rec.trials}
        nwb.add_trial(**values)
    if behavior:
        module = nwb.create_processing_module(name="behavior", description="hand kinematics")
        module.add(
            TimeSeries(name="hand_vel", data=rec.hand_vel, timestamps=rec.hand_t, unit="m/s")
        )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _scalar(value):
    """A numpy scalar as the Python value pynwb expects in a table row."""
    return value.item() if isinstance(value, np.generic) else value
