"""Where the command's searches start: generator states the model visits, drawn and jittered.

Shape legend: n trajectories, T bins, G generator size, I initial-condition size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from autolfads.analysis.fixed_points.generator import generator_step
from autolfads.data import read_sessions
from autolfads.outputs.checkpoint import LFADS

__all__ = ["visited_states_on_data", "visited_states_from_prior", "jittered_initial_states"]


def visited_states_on_data(model: LFADS, data: Sequence[str | Path], seed: int) -> Tensor:
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


def visited_states_from_prior(model: LFADS, n_trajectories: int, seed: int) -> Tensor:
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


def jittered_initial_states(trajectories: Tensor, n_inits: int, noise: float, seed: int) -> Tensor:
    """(n_inits, G) visited states drawn at random (without replacement when possible), jittered."""
    states = trajectories.reshape(-1, trajectories.shape[-1])  # (n T, G)
    g = torch.Generator().manual_seed(seed)
    if states.shape[0] >= n_inits:
        idx = torch.randperm(states.shape[0], generator=g)[:n_inits]
    else:
        idx = torch.randint(states.shape[0], (n_inits,), generator=g)
    jitter = torch.randn(n_inits, states.shape[1], generator=g, dtype=states.dtype)
    return states[idx] + noise * states.std() * jitter
