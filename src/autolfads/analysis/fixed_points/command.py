"""`autolfads fixed-points`: load a checkpoint, search from visited states, write h5 + plot + table.

Shape legend: M initial states (`n_inits`), G generator size.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from autolfads.analysis.fixed_points.generator import generator_step
from autolfads.analysis.fixed_points.outputs import (
    plot_fixed_points,
    principal_axes,
    print_summary,
    write_h5,
)
from autolfads.analysis.fixed_points.points import FixedPoints
from autolfads.analysis.fixed_points.search import check_search_settings, find_fixed_points
from autolfads.analysis.fixed_points.starts import (
    jittered_initial_states,
    visited_states_from_prior,
    visited_states_on_data,
)
from autolfads.errors import UsageError
from autolfads.outputs.checkpoint import LFADS

__all__ = ["fixed_points_command"]


def fixed_points_command(
    ckpt: str | Path,
    data: Sequence[str | Path] = (),
    out: str | Path | None = None,
    *,
    n_inits: int = 256,
    device: str = "cpu",
    seed: int = 0,
    bin_ms: float | None = None,
    n_iters: int = 1000,
    n_polish: int = 25,
    speed_tol: float = 1e-8,
    dedupe_tol: float = 1e-3,
    noise: float = 0.01,
) -> Path:
    """`autolfads fixed-points CKPT [DATA...] [-o OUT]`: fixed points of a saved model's generator.

    The searches start from generator states the model visits: on DATA (one posterior sample per
    trial, `{split}_gen_states` of every session and split) or, without data, along zero-input
    trajectories started from IC-prior samples. `n_inits` of them are drawn at random and jittered
    by `noise` times the states' standard deviation. The generator's input is zero throughout.

    Writes OUT/fixed_points.h5 (states, speeds, jacobians, eigenvalues_real/imag, stable, ...) and
    OUT/fixed_points.png (points over the trajectories in their top two principal components),
    prints one line per point, and returns OUT (default: `fixed_points/` next to CKPT).

    Raises:
        UsageError: CKPT or a DATA file does not exist, or a setting is out of range.
        DataError: DATA whose dimensions disagree with the checkpoint.
    """
    from autolfads.config import check_device

    ckpt = Path(ckpt)
    _check_inputs_exist(ckpt, data)
    _check_command_settings(n_inits, bin_ms, n_iters, n_polish, speed_tol, dedupe_tol)
    check_device(device)
    model = LFADS.load_from_checkpoint(ckpt, device=device)
    if data:
        trajectories = visited_states_on_data(model, data, seed)
    else:
        trajectories = visited_states_from_prior(model, n_inits, seed)
    inits = jittered_initial_states(trajectories, n_inits, noise, seed).to(device)
    found = find_fixed_points(
        generator_step(model),
        inits,
        n_iters=n_iters,
        n_polish=n_polish,
        speed_tol=speed_tol,
        dedupe_tol=dedupe_tol,
        bin_ms=bin_ms,
    )
    found = _to_cpu(found)
    out = Path(out) if out is not None else ckpt.parent / "fixed_points"
    axes = principal_axes(trajectories)
    write_h5(out / "fixed_points.h5", found, inits.cpu(), axes, ckpt)
    plot_fixed_points(out / "fixed_points.png", found, trajectories, axes, seed)
    print_summary(found, speed_tol, out)
    return out


def _check_inputs_exist(ckpt: Path, data: Sequence[str | Path]) -> None:
    """Raise UsageError naming CKPT or the first DATA file (not a glob pattern) that is missing."""
    if not ckpt.is_file():
        raise UsageError(f"{ckpt}: checkpoint not found")
    for item in data:
        text = os.fspath(item)
        if not Path(text).exists() and not glob.has_magic(text):  # patterns: read_sessions
            raise UsageError(f"{text}: data file not found")


def _check_command_settings(
    n_inits: int,
    bin_ms: float | None,
    n_iters: int,
    n_polish: int,
    speed_tol: float,
    dedupe_tol: float,
) -> None:
    """Raise UsageError naming the first setting out of range, before any work is done."""
    if n_inits < 1:
        raise UsageError(f"`n_inits` must be >= 1, got {n_inits}")
    if bin_ms is not None and not bin_ms > 0:
        raise UsageError(f"`bin_ms` must be > 0, got {bin_ms}")
    try:  # the search settings, with the search's default learning rates
        check_search_settings(
            torch.zeros(1, 1), n_iters, 1e-2, 1e-3, n_polish, speed_tol, dedupe_tol
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def _to_cpu(found: FixedPoints) -> FixedPoints:
    """The same points with every tensor moved to the CPU."""
    fields = {
        name: getattr(found, name).cpu()
        for name in FixedPoints.__dataclass_fields__
        if isinstance(getattr(found, name), Tensor)
    }
    return FixedPoints(**fields, bin_ms=found.bin_ms)
