"""`FixedPoints`: the points found and what their linearisation says (stability, frequencies, decay).

Shape legend: P points found, M initial states, H state size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FixedPoints"]

_OSCILLATION_EPS = 1e-9  # |imag(lambda)| below this counts as a real (non-oscillating) eigenvalue


@dataclass
class FixedPoints:
    """Fixed (or slow) points of a map F and its linearisation at each of them.

    Attributes:
        states: (P, H) the points, slowest first.
        speeds: (P,) q = 0.5 ||F(h) - h||^2 at each point.
        jacobians: (P, H, H) dF/dh at each point (row i: derivatives of F_i).
        eigenvalues: (P, H) complex eigenvalues of each Jacobian, largest modulus first.
        stable: (P,) True where every |lambda| < 1 (discrete time).
        candidate_states: (M, H) where the optimisation ended, for every initial state.
        candidate_speeds: (M,) the speed there (kept or not).
        bin_ms: bin width in ms; frequencies are in Hz when known, in cycles per bin otherwise.
    """

    states: Tensor
    speeds: Tensor
    jacobians: Tensor
    eigenvalues: Tensor
    stable: Tensor
    candidate_states: Tensor
    candidate_speeds: Tensor
    bin_ms: float | None = None

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @property
    def spectral_radius(self) -> Tensor:
        """(P,) max |lambda| of each point (< 1: stable)."""
        return self.eigenvalues.abs().amax(dim=-1) if len(self) else self.speeds.new_zeros(0)

    @property
    def frequency_unit(self) -> str:
        """'Hz' when the bin width is known, else 'cycles/bin'."""
        return "Hz" if self.bin_ms is not None else "cycles/bin"

    def frequencies(self) -> Tensor:
        """(P, H) oscillation frequency of each eigenvalue, angle(lambda) / (2 pi dt), signed.

        In Hz when `bin_ms` is known, in cycles per bin otherwise.
        """
        cycles_per_bin = torch.angle(self.eigenvalues) / (2.0 * math.pi)
        return cycles_per_bin if self.bin_ms is None else cycles_per_bin / (self.bin_ms / 1000.0)

    def time_constants(self) -> Tensor:
        """(P, H) decay time -dt / ln|lambda| of each mode (ms, or bins without `bin_ms`).

        Negative for growing modes, infinite for |lambda| = 1.
        """
        bins = -1.0 / torch.log(self.eigenvalues.abs())
        return bins if self.bin_ms is None else bins * self.bin_ms

    def main_frequency(self) -> Tensor:
        """(P,) frequency (>= 0) of the least damped oscillating mode, 0 where all modes are real."""
        if not len(self):
            return self.speeds.new_zeros(0)
        oscillating = self.eigenvalues.imag.abs() > _OSCILLATION_EPS
        modulus = torch.where(oscillating, self.eigenvalues.abs(), -1.0)
        best = modulus.argmax(dim=-1, keepdim=True)
        freq = self.frequencies().abs().gather(-1, best).squeeze(-1)
        return torch.where(oscillating.any(dim=-1), freq, 0.0)

    def summary_table(self) -> str:
        """One line per point: speed, max |lambda|, stability and main frequency."""
        unit = self.frequency_unit
        lines = [f"{'point':>5}  {'speed':>9}  {'max|lambda|':>11}  {'stable':>6}  freq ({unit})"]
        radius, freq = self.spectral_radius, self.main_frequency()
        for i in range(len(self)):
            lines.append(
                f"{i:>5}  {self.speeds[i].item():>9.2e}  {radius[i].item():>11.4f}  "
                f"{'yes' if self.stable[i] else 'no':>6}  {freq[i].item():.4g}"
            )
        return "\n".join(lines)
