"""Fixed and slow points of a trained LFADS generator (Sussillo & Barak 2013, "Opening the black box").

The generator is a discrete-time map g_t = F(g_{t-1}, u_t). With the input held constant (zero by
default), its fixed points h* = F(h*) and the linearisation F(h* + d) ~ h* + J d around them
describe the dynamics the model has learned: |lambda| < 1 for every eigenvalue lambda of J means a
stable point, an eigenvalue pair lambda = |lambda| e^{+-i theta} an oscillation of theta / (2 pi)
cycles per bin, and |lambda| near 1 a slow (integrating) direction.

Points are found by minimising the speed q(h) = 0.5 ||F(h) - h||^2 from many initial states at once:
Adam first (robust, stays near the states the network visits), then damped Gauss-Newton steps
(Levenberg-Marquardt) that bring true fixed points to machine precision.

Shape legend: K workers, B trials, T bins, M initial states, P points found, H state size (G for the
generator), U inferred inputs, E external inputs.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from autolfads._atomic import atomic_path
from autolfads.data import read_sessions
from autolfads.errors import UsageError
from autolfads.model.gru_kernels import gru_step_reference
from autolfads.model.lfads import LFADSNetwork
from autolfads.outputs.checkpoint import LFADS

__all__ = [
    "FixedPoints",
    "find_fixed_points",
    "step_jacobians",
    "generator_step",
    "GeneratorMap",
    "fixed_points_command",
]

StepFn = Callable[[Tensor], Tensor]

_OSCILLATION_EPS = 1e-9  # |imag(lambda)| below this counts as a real (non-oscillating) eigenvalue
_PLOTTED_TRAJECTORIES = 50


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


def find_fixed_points(
    step: StepFn,
    initial_states: Tensor,
    *,
    n_iters: int = 1000,
    lr: float = 1e-2,
    lr_final: float = 1e-3,
    n_polish: int = 25,
    speed_tol: float = 1e-8,
    dedupe_tol: float = 1e-3,
    bin_ms: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> FixedPoints:
    """Fixed points of a map F by minimising q(h) = 0.5 ||F(h) - h||^2 from every initial state.

    Args:
        step: F, mapping states (M, H) to next states (M, H) row by row (row m of the output depends
            on row m of the input only), differentiable by autograd.
        initial_states: (M, H) where the M searches start, all run as one batch.
        n_iters: Adam steps; the learning rate decays geometrically from `lr` to `lr_final`.
        n_polish: Levenberg-Marquardt steps after Adam (0 to skip).
        speed_tol: points with q below this are kept.
        dedupe_tol: kept points closer than this (Euclidean) are one point; the slowest stays.
        bin_ms: bin width in ms, for frequencies in Hz.
        dtype: precision of the search (float64 lets q reach ~1e-30 at true fixed points).
    Returns:
        The kept points with their Jacobians, eigenvalues and stability, plus every candidate.
    """
    _check_search_settings(initial_states, n_iters, lr, lr_final, n_polish, speed_tol, dedupe_tol)
    if bin_ms is not None and not bin_ms > 0:
        raise ValueError(f"`bin_ms` must be > 0 (or None), got {bin_ms!r}")
    h = initial_states.detach().to(dtype)
    _check_step_shape(step, h)
    stop_tol = speed_tol * 1e-12  # well below the tolerance: one more Newton-like step at most
    h = _adam_search(step, h, n_iters, lr, lr_final, stop_tol)
    h = _levenberg_marquardt(step, h, n_polish, stop_tol)
    with torch.no_grad():
        speeds = _speed(step, h)
    keep = _deduplicate(h, speeds, speeds < speed_tol, dedupe_tol)
    jacobians = step_jacobians(step, h[keep])
    eigenvalues = _sorted_eigenvalues(jacobians)
    return FixedPoints(
        states=h[keep],
        speeds=speeds[keep],
        jacobians=jacobians,
        eigenvalues=eigenvalues,
        stable=(eigenvalues.abs() < 1.0).all(dim=-1),
        candidate_states=h,
        candidate_speeds=speeds,
        bin_ms=bin_ms,
    )


def step_jacobians(step: StepFn, states: Tensor, max_rows: int = 16384) -> Tensor:
    """dF/dh at each state: (P, H) -> (P, H, H), row i holding the derivatives of F_i.

    Every state is copied H times and copy i is differentiated through output unit i only, so one
    backward pass gives all rows (rows of `step` are independent). `max_rows` bounds P * H per
    pass. Plain autograd: any differentiable `step` works, custom autograd Functions included.
    A `step` with a `jacobian(states)` method (such as `GeneratorMap`) supplies its own instead.
    """
    p, h = states.shape
    if p == 0:
        return states.new_zeros(0, h, h)
    closed_form = getattr(step, "jacobian", None)
    if callable(closed_form):
        return closed_form(states.detach())
    chunk = max(1, max_rows // h)
    with torch.enable_grad():
        blocks = [_jacobian_block(step, states[i : i + chunk]) for i in range(0, p, chunk)]
    return torch.cat(blocks, dim=0)


def _jacobian_block(step: StepFn, states: Tensor) -> Tensor:
    p, h = states.shape
    copies = states.detach().repeat(h, 1).requires_grad_(True)  # (H * P, H), copy i = rows i*P...
    picked = (
        step(copies).reshape(h, p, h).diagonal(dim1=0, dim2=2)
    )  # (P, H): [p, i] = F_i of copy i
    (grad,) = torch.autograd.grad(picked.sum(), copies)
    return grad.reshape(h, p, h).permute(1, 0, 2)  # (P, H, H)


def generator_step(
    model: LFADS | LFADSNetwork, worker: int = 0, inputs: Tensor | None = None
) -> GeneratorMap:
    """The trained generator's one-step map F(g) = GRU_gen(g, u) with a constant input u.

    Args:
        model: a loaded `LFADS` checkpoint or an `LFADSNetwork` (K workers).
        worker: which of the K workers (0 for a checkpoint).
        inputs: (U + E,) the constant generator input: inferred inputs first, then external
            inputs; zeros when None.
    Returns:
        A `GeneratorMap`: called on states (M, G) it gives the next states (M, G) in their dtype
        and on their device; `.jacobian(states)` gives dF/dg in closed form. The weights are
        copied (detached): optimising states never touches the model.
    """
    network = model.network if isinstance(model, LFADS) else model
    if not 0 <= worker < network.n_workers:
        raise ValueError(f"`worker` must be in [0, {network.n_workers}), got {worker}")
    cell = network.generator
    return GeneratorMap(
        drive=_generator_drive(network, worker, inputs),
        w_gate=cell.gate_weight[worker].detach().clone(),
        w_cand=cell.candidate_weight[worker].detach().clone(),
        clip=cell.clip,
    )


class GeneratorMap:
    """F(g) for one clipped-GRU generator with a fixed projected input, and its exact Jacobian.

    Args:
        drive: (3G,) the projected input x W_x + b (constant over steps).
        w_gate: (G, 2G) recurrent weights of the reset and update gates.
        w_cand: (G, G) recurrent weights of the candidate.
        clip: state bound.
    """

    def __init__(self, drive: Tensor, w_gate: Tensor, w_cand: Tensor, clip: float) -> None:
        self.drive, self.w_gate, self.w_cand, self.clip = drive, w_gate, w_cand, float(clip)

    def __call__(self, h: Tensor) -> Tensor:
        """Next states (M, G) of states h (M, G), in h's dtype and on its device."""
        x = self.drive.to(h).expand(1, h.shape[0], self.drive.shape[0])  # (1, M, 3G)
        w_gate, w_cand = self.w_gate.to(h)[None], self.w_cand.to(h)[None]
        return gru_step_reference(x, h[None], w_gate, w_cand, self.clip)[0]

    def jacobian(self, h: Tensor) -> Tensor:
        """dF/dg at states h (M, G): (M, G, G), [m, j, i] = dF_j / dg_i (closed form, no autograd).

        With r, u the gates, c the candidate and p = c + u (g - c) before clipping:
        dF_j/dg_i = [|p_j| < clip] ((1 - u_j) dc_j/dg_i + u_j delta_ij + (g_j - c_j) du_j/dg_i),
        dc_j/dg_i = (1 - c_j^2) sum_k W_c[k, j] (r_k delta_ki + g_k r_k (1 - r_k) W_r[i, k]),
        du_j/dg_i = u_j (1 - u_j) W_u[i, j].
        """
        n = h.shape[-1]
        x, w_gate, w_cand = self.drive.to(h), self.w_gate.to(h), self.w_cand.to(h)
        ru = torch.sigmoid(x[: 2 * n] + h @ w_gate)  # (M, 2G)
        r, u = ru[:, :n], ru[:, n:]
        c = torch.tanh(x[2 * n :] + (r * h) @ w_cand)  # (M, G)
        inside = ((c + u * (h - c)).abs() < self.clip).to(h)
        # d(r * g)_k / dg_i as (M, k, i), then through W_c and tanh
        d_rh = torch.diag_embed(r) + (h * r * (1 - r)).unsqueeze(-1) * w_gate[:, :n].T
        d_c = (1 - c * c).unsqueeze(-1) * (w_cand.T @ d_rh)  # (M, G, G)
        d_u = (u * (1 - u)).unsqueeze(-1) * w_gate[:, n:].T  # (M, G, G)
        jac = (1 - u).unsqueeze(-1) * d_c + torch.diag_embed(u) + (h - c).unsqueeze(-1) * d_u
        return inside.unsqueeze(-1) * jac


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
    from autolfads.train.run import check_device  # the training stack is only needed here

    ckpt = Path(ckpt)
    _check_inputs_exist(ckpt, data)
    if n_inits < 1:
        raise UsageError(f"`n_inits` must be >= 1, got {n_inits}")
    if bin_ms is not None and not bin_ms > 0:
        raise UsageError(f"`bin_ms` must be > 0, got {bin_ms}")
    try:  # the search settings, before any work
        _check_search_settings(
            torch.zeros(1, 1), n_iters, 1e-2, 1e-3, n_polish, speed_tol, dedupe_tol
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    check_device(device)
    model = LFADS.load_from_checkpoint(ckpt, device=device)
    if data:
        trajectories = _visited_states_on_data(model, data, seed)
    else:
        trajectories = _visited_states_from_prior(model, n_inits, seed)
    inits = _initial_states(trajectories, n_inits, noise, seed).to(device)
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
    axes = _principal_axes(trajectories)
    _write_h5(out / "fixed_points.h5", found, inits.cpu(), axes, ckpt)
    _plot(out / "fixed_points.png", found, trajectories, axes, seed)
    _print_summary(found, speed_tol, out)
    return out


# --- search ---------------------------------------------------------------------------------


def _check_search_settings(
    initial_states: Tensor,
    n_iters: int,
    lr: float,
    lr_final: float,
    n_polish: int,
    speed_tol: float,
    dedupe_tol: float,
) -> None:
    if initial_states.dim() != 2 or initial_states.shape[0] < 1 or initial_states.shape[1] < 1:
        raise ValueError(
            f"`initial_states` must be (M, H) with M, H >= 1, got shape {tuple(initial_states.shape)}"
        )
    for name, value in (("n_iters", n_iters), ("n_polish", n_polish)):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0, got {value}")
    for name, value in (("lr", lr), ("lr_final", lr_final), ("speed_tol", speed_tol)):
        if not value > 0:
            raise ValueError(f"`{name}` must be > 0, got {value}")
    if not dedupe_tol >= 0:
        raise ValueError(f"`dedupe_tol` must be >= 0, got {dedupe_tol}")


def _check_step_shape(step: StepFn, h: Tensor) -> None:
    with torch.no_grad():
        out = step(h[:1])
    if out.shape != h[:1].shape:
        raise ValueError(
            f"`step` must map states (M, H) to (M, H); got {tuple(out.shape)} from {tuple(h[:1].shape)}"
        )


def _speed(step: StepFn, h: Tensor) -> Tensor:
    """(M,) q(h) = 0.5 ||F(h) - h||^2 of each row."""
    return 0.5 * (step(h) - h).pow(2).sum(dim=-1)


def _adam_search(
    step: StepFn, h: Tensor, n_iters: int, lr: float, lr_final: float, stop_tol: float
) -> Tensor:
    """Adam on the summed speed (rows do not interact), learning rate decaying to `lr_final`.

    Written out (a few lines) rather than `torch.optim.Adam`, whose first step imports the
    compiler stack: seconds of start-up for a command that is otherwise quick.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    decay = (lr_final / lr) ** (1.0 / max(n_iters, 1))
    first, second = torch.zeros_like(h), torch.zeros_like(h)
    for i in range(1, n_iters + 1):
        with torch.enable_grad():
            states = h.detach().requires_grad_(True)
            speeds = _speed(step, states)
            if speeds.max().item() < stop_tol:
                break
            (grad,) = torch.autograd.grad(speeds.sum(), states)
        first.lerp_(grad, 1 - beta1)
        second.lerp_(grad * grad, 1 - beta2)
        size = lr * decay ** (i - 1) / (1 - beta1**i)
        h = h - size * first / ((second / (1 - beta2**i)).sqrt() + eps)
    return h.detach()


def _levenberg_marquardt(step: StepFn, h: Tensor, n_steps: int, stop_tol: float) -> Tensor:
    """Damped Gauss-Newton on the residual r = F(h) - h, one damping factor per row.

    d = -(A^T A + mu I)^{-1} A^T r with A = J - I; a step is kept only if it lowers q, and mu
    shrinks after a kept step and grows after a refused one. Converges quadratically to fixed
    points and still descends towards slow points (local minima of q with q > 0). Only rows still
    above `stop_tol` and not stuck (mu at its ceiling) are worked on: the Jacobians are the cost.
    """
    max_damping = 1e8
    h = h.clone()
    eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
    damping = torch.full((h.shape[0],), 1e-2, dtype=h.dtype, device=h.device)
    with torch.no_grad():
        speeds = _speed(step, h)
    for _ in range(n_steps):
        active = torch.nonzero((speeds >= stop_tol) & (damping < max_damping)).squeeze(1)
        if active.numel() == 0:
            break
        x, q, mu = h[active], speeds[active], damping[active]
        a = step_jacobians(step, x) - eye  # (A, H, H)
        with torch.no_grad():
            residual = step(x) - x  # (A, H)
            normal = a.transpose(1, 2) @ a + mu[:, None, None] * eye
            gradient = (a.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1)
            trial = x - torch.linalg.solve(normal, gradient)
            trial_q = _speed(step, trial)
        better = trial_q < q
        h[active] = torch.where(better[:, None], trial, x)
        speeds[active] = torch.where(better, trial_q, q)
        damping[active] = torch.where(better, mu / 3.0, mu * 2.0).clamp(1e-12, max_damping)
    return h


def _deduplicate(h: Tensor, speeds: Tensor, keep: Tensor, tol: float) -> Tensor:
    """Indices of kept rows, slowest first, dropping any row within `tol` of a slower kept row."""
    order = torch.argsort(speeds)
    order = order[keep[order]]
    if order.numel() == 0:
        return order
    distances = torch.cdist(h[order], h[order])  # (P0, P0), in speed order
    chosen: list[int] = []
    for i in range(order.numel()):
        if not chosen or bool((distances[i, chosen] > tol).all()):
            chosen.append(i)
    return order[chosen]


def _sorted_eigenvalues(jacobians: Tensor) -> Tensor:
    """(P, H) complex eigenvalues of each Jacobian, largest modulus first."""
    eig = torch.linalg.eigvals(jacobians)
    order = torch.argsort(eig.abs(), dim=-1, descending=True)
    return eig.gather(-1, order)


# --- the generator --------------------------------------------------------------------------


def _generator_drive(network: LFADSNetwork, worker: int, inputs: Tensor | None) -> Tensor:
    """(3G,) projected constant input: bias + u W_co + e W_ext for inputs [u (U), e (E)]."""
    s, cell = network.structure, network.generator
    n_co = s.co_dim if s.use_controller else 0
    width = n_co + s.ext_input_dim
    drive = cell.bias[worker].detach().clone()
    if inputs is None:
        return drive
    inputs = torch.as_tensor(inputs)
    if inputs.shape != (width,):
        raise ValueError(
            f"`inputs` must have shape ({width},) (co_dim {n_co} + ext_input_dim "
            f"{s.ext_input_dim}), got {tuple(inputs.shape)}"
        )
    inputs = inputs.detach().to(drive)
    if n_co:
        drive = drive + inputs[:n_co] @ network.co_to_gen.weight[worker].detach()
    if s.ext_input_dim:
        drive = drive + inputs[n_co:] @ cell.input_weight[worker].detach()
    return drive


def _visited_states_on_data(model: LFADS, data: Sequence[str | Path], seed: int) -> Tensor:
    """(n, T, G) generator states of one posterior sample of every trial of every session."""
    cfg_model = model.config.get("model", {})
    sessions = read_sessions(
        list(data),
        reconstruction=model.structure.reconstruction,
        allow_noninteger=bool(cfg_model.get("allow_noninteger", False)),
    )
    model.check_sessions(sessions)
    posterior = model.posterior(sessions, n_samples=1, seed=seed)
    states = [split["gen_states"] for session in posterior for split in session.values()]
    return torch.from_numpy(np.concatenate(states, axis=0)).double()


def _visited_states_from_prior(model: LFADS, n_trajectories: int, seed: int) -> Tensor:
    """(n, T, G) zero-input generator trajectories from initial conditions drawn from the IC prior."""
    net = model.network
    device = next(net.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        mean = net.ic_prior.mean[0]  # (I,)
        std = net.ic_prior.ic_prior_var.sqrt()
        noise = torch.randn(n_trajectories, mean.shape[0], generator=g, device=device)
        ic = mean + std * noise  # (n, I)
        h = net.ic_to_gen(ic[None])[0]  # (n, G)
        step = generator_step(model)
        states = []
        for _ in range(model.structure.recon_seq_len):
            h = step(h)
            states.append(h)
    return torch.stack(states, dim=1).cpu().double()


def _initial_states(trajectories: Tensor, n_inits: int, noise: float, seed: int) -> Tensor:
    """(n_inits, G) visited states drawn at random (without replacement when possible), jittered."""
    states = trajectories.reshape(-1, trajectories.shape[-1])  # (n T, G)
    g = torch.Generator().manual_seed(seed)
    if states.shape[0] >= n_inits:
        idx = torch.randperm(states.shape[0], generator=g)[:n_inits]
    else:
        idx = torch.randint(states.shape[0], (n_inits,), generator=g)
    jitter = torch.randn(n_inits, states.shape[1], generator=g, dtype=states.dtype)
    return states[idx] + noise * states.std() * jitter


# --- outputs --------------------------------------------------------------------------------


def _check_inputs_exist(ckpt: Path, data: Sequence[str | Path]) -> None:
    if not ckpt.is_file():
        raise UsageError(f"{ckpt}: checkpoint not found")
    for item in data:
        text = os.fspath(item)
        if not Path(text).exists() and not glob.has_magic(text):  # patterns: read_sessions
            raise UsageError(f"{text}: data file not found")


def _to_cpu(found: FixedPoints) -> FixedPoints:
    fields = {
        name: getattr(found, name).cpu()
        for name in FixedPoints.__dataclass_fields__
        if isinstance(getattr(found, name), Tensor)
    }
    return FixedPoints(**fields, bin_ms=found.bin_ms)


def _principal_axes(trajectories: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (G,), axes (G, 2)) of the visited states' top two principal components."""
    states = trajectories.reshape(-1, trajectories.shape[-1]).double()
    mean = states.mean(dim=0)
    centred = states - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    axes = vectors.flip(-1)[:, :2]
    if axes.shape[1] < 2:  # a one-unit generator: the second axis is empty
        axes = torch.cat([axes, torch.zeros_like(axes)], dim=1)
    return mean, axes


def _write_h5(
    path: Path, found: FixedPoints, inits: Tensor, axes: tuple[Tensor, Tensor], ckpt: Path
) -> None:
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


def _plot(
    path: Path,
    found: FixedPoints,
    trajectories: Tensor,
    axes: tuple[Tensor, Tensor],
    seed: int,
) -> None:
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


def _print_summary(found: FixedPoints, speed_tol: float, out: Path) -> None:
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
