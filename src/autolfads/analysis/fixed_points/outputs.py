"""What the command leaves behind: fixed_points.h5, a plot in the top two principal components, a table.

Shape legend: n trajectories, T bins, M initial states, P points found, G generator size.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from autolfads._atomic import atomic_path
from autolfads.analysis.fixed_points.points import FixedPoints

__all__ = ["principal_axes", "write_h5", "plot_fixed_points", "print_summary"]

_PLOTTED_TRAJECTORIES = 50


def principal_axes(trajectories: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (G,), axes (G, 2)) of the visited states' top two principal components."""
    states = trajectories.reshape(-1, trajectories.shape[-1]).double()
    mean = states.mean(dim=0)
    centred = states - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    axes = vectors.flip(-1)[:, :2]
    if axes.shape[1] < 2:  # a one-unit generator: the second axis is empty
        axes = torch.cat([axes, torch.zeros_like(axes)], dim=1)
    return mean, axes


def write_h5(
    path: Path, found: FixedPoints, inits: Tensor, axes: tuple[Tensor, Tensor], ckpt: Path
) -> None:
    """Write the points, their linearisation, every candidate, the starts (M, G) and the PCA axes."""
    arrays = {
        "states": found.states,
        "speeds": found.speeds,
        "jacobians": found.jacobians,
        "eigenvalues_real": found.eigenvalues.real,
        "eigenvalues_imag": found.eigenvalues.imag,
        "stable": found.stable,
        "spectral_radius": found.spectral_radius,
        "main_frequency": found.main_frequency(),
        "candidate_states": found.candidate_states,
        "candidate_speeds": found.candidate_speeds,
        "initial_states": inits,
        "pca_mean": axes[0],
        "pca_axes": axes[1],
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as file:
            for key, value in arrays.items():
                file.create_dataset(key, data=value.detach().cpu().numpy())
            file.attrs["checkpoint"] = str(ckpt)
            file.attrs["bin_ms"] = found.bin_ms if found.bin_ms is not None else math.nan
            file.attrs["frequency_unit"] = found.frequency_unit


def plot_fixed_points(
    path: Path,
    found: FixedPoints,
    trajectories: Tensor,
    axes: tuple[Tensor, Tensor],
    seed: int,
) -> None:
    """PNG of the points (filled: stable, open: unstable) over some trajectories (n, T, G), in PC 1-2."""
    mean, pcs = axes
    g = torch.Generator().manual_seed(seed)
    shown = torch.randperm(trajectories.shape[0], generator=g)[:_PLOTTED_TRAJECTORIES]
    fig = Figure(figsize=(5.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for trial in trajectories[shown]:
        xy = ((trial - mean) @ pcs).numpy()  # (T, 2)
        ax.plot(xy[:, 0], xy[:, 1], color="0.75", lw=0.6, zorder=1)
    points = ((found.states - mean) @ pcs).numpy()  # (P, 2)
    stable = found.stable.numpy().astype(bool)
    ax.scatter(*points[stable].T, s=40, c="tab:blue", label="stable", zorder=3)
    ax.scatter(
        *points[~stable].T,
        s=40,
        facecolors="none",
        edgecolors="tab:red",
        label="unstable",
        zorder=3,
    )
    ax.set_xlabel("PC 1 of generator states")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{len(found)} fixed point(s), {int(stable.sum())} stable")
    ax.legend(loc="best", frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def print_summary(found: FixedPoints, speed_tol: float, out: Path) -> None:
    """Print how many points were kept and their table (or the slowest speed reached), then OUT."""
    n_candidates = found.candidate_speeds.shape[0]
    if len(found):
        print(
            f"{len(found)} fixed point(s) with speed < {speed_tol:g} from {n_candidates} searches"
        )
        print(found.summary_table())
    else:
        slowest = found.candidate_speeds.min().item()
        print(
            f"no fixed point with speed < {speed_tol:g} from {n_candidates} searches "
            f"(slowest: {slowest:.2e}; raise speed_tol to see slow points)"
        )
    print(f"wrote {out / 'fixed_points.h5'} and {out / 'fixed_points.png'}")
