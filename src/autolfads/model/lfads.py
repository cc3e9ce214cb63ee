"""The LFADS model (Sussillo et al. 2016; Pandarinath et al. 2018), K workers batched.

Generative model, per trial:
    g_0 = W_g0 z,  z ~ N(mu_ic, var_ic)                 initial condition (IC)
    u_t ~ q(u_t | data)  with AR(1) prior p(u)            inferred inputs (controller output, U = co_dim)
    g_t = GRU_gen(g_{t-1}, [u_t, e_t])                    generator (e_t external inputs)
    f_t = W_fac g_t                                       factors, unit-norm rows of W_fac
    y_t ~ P(theta_t),  theta_t = W_out^s f_t + b^s        observation model, per-session read-out s

Inference: a bidirectional GRU over the read-in data gives the IC posterior; another gives, per step and
lagged by `ci_lag`, the controller's input; the controller GRU also sees the previous factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from autolfads.model.batched import (
    BatchedLinear,
    BidirectionalGRU,
    ClippedGRUCell,
    cell_inputs,
    dropout_mask_like,
    lagged_dropout,
    normal_like,
    worker_dropout,
)
from autolfads.model.fused import kernels_for
from autolfads.model.generator_loop import LoopWeights, controlled_generator
from autolfads.model.observations import ObservationModel, build_observation_model
from autolfads.model.priors import AR1Prior, GaussianICPrior
from autolfads.model.structure import LFADSStructure

__all__ = ["LFADSOutput", "LFADSNetwork", "FactorReadout"]


@dataclass
class LFADSOutput:
    """Everything one forward pass infers, for K workers and B trials (T = recon_seq_len)."""

    params: Tensor  # (K, B, T, N, P) raw observation-model parameters
    factors: Tensor  # (K, B, T, F)
    ic_mean: Tensor  # (K, B, ic_dim)
    ic_var: Tensor  # (K, B, ic_dim)
    gen_init: Tensor  # (K, B, G)
    gen_states: Tensor  # (K, B, T, G)
    gen_inputs: Tensor  # (K, B, T, U + E)
    con_states: Tensor  # (K, B, T, C) (C = 0 without controller)
    co_mean: Tensor  # (K, B, T, U)
    co_var: Tensor  # (K, B, T, U)
    co_sample: Tensor  # (K, B, T, U)

    def as_dict(self) -> dict[str, Tensor]:
        """The fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FactorReadout(nn.Module):
    """Factors f = g W with each factor's weight vector (a column of W) of unit norm.

    Shapes: g (K, ..., G) -> f (K, ..., F).
    """

    def __init__(self, n_workers: int, gen_dim: int, fac_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_workers, gen_dim, fac_dim))

    def normalized_weight(self) -> Tensor:
        """(K, G, F) weight whose columns have unit L2 norm."""
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def forward(self, g: Tensor) -> Tensor:
        k, *mid, gdim = g.shape
        if g.dim() == 4 and not _rows_are_a_view(g) and _rows_are_a_view(g.transpose(1, 2)):
            # states stored time-major (the loop's tape): multiply in that order, no copy
            out = torch.bmm(g.transpose(1, 2).reshape(k, -1, gdim), self.normalized_weight())
            return out.view(k, mid[1], mid[0], -1).transpose(1, 2)
        out = torch.bmm(g.reshape(k, -1, gdim), self.normalized_weight())
        return out.reshape(k, *mid, -1)


def _rows_are_a_view(x: Tensor) -> bool:
    """True if x (K, ..., n) flattens to (K, M, n) rows without a copy."""
    try:
        x.view(x.shape[0], -1, x.shape[-1])
    except RuntimeError:
        return False
    return True


def _gaussian_params(raw: Tensor, var_min: float = 0.0) -> tuple[Tensor, Tensor]:
    """Split (..., 2D) into mean (..., D) and variance exp(logvar) + var_min."""
    mean, logvar = raw.chunk(2, dim=-1)
    return mean, torch.exp(logvar.clamp(-20.0, 20.0)) + var_min


def _repeat_rows(x: Tensor, samples: int) -> Tensor:
    """(K, B, ...) -> (K, B * S, ...), each row repeated S times in a row."""
    return x.repeat_interleave(samples, dim=1) if samples > 1 else x


def _init_log_variance(head: BatchedLinear, dim: int, variance: float) -> None:
    """Set the log-variance half of a Gaussian posterior head to start at `variance`."""
    with torch.no_grad():
        head.bias[:, dim:] = math.log(variance)


class LFADSNetwork(nn.Module):
    """The LFADS network for K workers: encoders, controller, generator, factors, read-in/out.

    Args:
        structure: dimensions and fixed settings.
        n_workers: K, the number of models batched together.
    """

    def __init__(self, structure: LFADSStructure, n_workers: int = 1) -> None:
        super().__init__()
        s, k = structure, n_workers
        self.structure, self.n_workers = s, k
        enc_in = s.encoder_input_dim
        if s.readin_dim is not None:
            self.readin = nn.ModuleList(BatchedLinear(k, n, enc_in) for n in s.encod_data_dims)
        else:
            self.readin = None
        self.ic_encoder = BidirectionalGRU(k, enc_in, s.ic_enc_dim, s.cell_clip)
        self.ic_posterior = BatchedLinear(k, 2 * s.ic_enc_dim, 2 * s.ic_dim)
        self.ic_prior = GaussianICPrior(k, s.ic_dim, s.ic_prior_var)
        self.ic_to_gen = BatchedLinear(k, s.ic_dim, s.gen_dim)
        if s.use_controller:
            self.ci_encoder = BidirectionalGRU(k, enc_in, s.ci_enc_dim, s.cell_clip)
            self.controller = ClippedGRUCell(k, 2 * s.ci_enc_dim, s.con_dim, s.cell_clip)
            self.factors_to_con = BatchedLinear(k, s.fac_dim, 3 * s.con_dim, bias=False)
            self.con_h0 = nn.Parameter(torch.zeros(k, s.con_dim))
            self.co_posterior = BatchedLinear(k, s.con_dim, 2 * s.co_dim)
            self.co_prior = AR1Prior(k, s.co_dim, s.co_prior_tau, s.co_prior_nvar)
            self.co_to_gen = BatchedLinear(k, s.co_dim, 3 * s.gen_dim, bias=False)
        self.generator = ClippedGRUCell(k, s.ext_input_dim, s.gen_dim, s.cell_clip)
        # Posteriors start with the spread of their priors: a unit initial variance would drown the
        # generator in sampling noise before the encoders have learned anything.
        _init_log_variance(self.ic_posterior, s.ic_dim, s.ic_prior_var)
        if s.use_controller:
            _init_log_variance(self.co_posterior, s.co_dim, s.co_prior_nvar)
        self.factor_readout = FactorReadout(k, s.gen_dim, s.fac_dim)
        self.observation: nn.ModuleList = nn.ModuleList(
            build_observation_model(
                s.reconstruction, k, n, s_min=s.s_min, gamma_prior=s.gamma_prior
            )
            for n in s.recon_data_dims
        )
        self.readout = nn.ModuleList(
            BatchedLinear(k, s.fac_dim, n * obs.n_params)
            for n, obs in zip(s.recon_data_dims, self.observation, strict=True)
        )

    def l2_groups(self) -> dict[str, list[Tensor]]:
        """Recurrent weights penalised by each L2 scale (`l2_<group>_scale`)."""
        groups = {
            "gen": self.generator.recurrent_weights(),
            "ic_enc": self.ic_encoder.recurrent_weights(),
        }
        if self.structure.use_controller:
            groups["con"] = self.controller.recurrent_weights()
            groups["ci_enc"] = self.ci_encoder.recurrent_weights()
        return groups

    def observation_model(self, session: int) -> ObservationModel:
        """The observation model of one session."""
        return self.observation[session]  # type: ignore[return-value]

    def init_readout_bias(self, session: int, mean_data: Tensor) -> None:
        """Start the read-out of `session` at each channel's mean (mean_data (N,))."""
        obs = self.observation_model(session)
        bias = obs.init_bias(mean_data).reshape(-1)  # (N * P,)
        with torch.no_grad():
            self.readout[session].bias.copy_(bias.expand_as(self.readout[session].bias))

    def forward(
        self,
        encod: Tensor,
        session: int = 0,
        ext_input: Tensor | None = None,
        dropout_rate: Tensor | None = None,
        sample: bool = True,
        generator: torch.Generator | None = None,
        samples: int = 1,
    ) -> LFADSOutput:
        """Infer and reconstruct a batch of trials.

        Args:
            encod: (K, B, T_enc, N_enc) encoder input, already augmented (CD, SBTT zeros).
            session: which read-in/read-out to use.
            ext_input: (B, T_rec, E) external inputs, or None.
            dropout_rate: (K,) dropout probability per worker (used in training mode).
            sample: draw IC and inferred inputs from the posterior (True) or use the means.
            generator: source of dropout masks and posterior samples (global RNG when None).
            samples: S posterior samples per trial. The encoders run once per trial; from the
                posteriors on, trial b's samples are rows b * S ... b * S + S - 1.
        Returns:
            LFADSOutput with the reconstruction's raw parameters and all latent variables
            (B * S rows).
        """
        s = self.structure
        k, b, t_enc, _ = encod.shape
        t_rec = s.recon_seq_len
        rate = dropout_rate if dropout_rate is not None else encod.new_zeros(k)
        drop = self.training

        x = encod
        if s.log_input:
            x = torch.log1p(x.clamp_min(0.0))
        if self.readin is not None:
            x = self.readin[session](x)  # (K, B, T_enc, enc_in)
        x = worker_dropout(x, rate, drop, generator)

        # Initial condition.
        cells = cell_inputs(x) if kernels_for(x) is not None else None  # both encoders' input
        ic_fwd, ic_bwd = self.ic_encoder(x, keep_states=False, cells=cells)  # (K, B, H) each
        ic_h = worker_dropout(torch.cat([ic_fwd, ic_bwd], dim=-1), rate, drop, generator)
        ic_mean, ic_var = _gaussian_params(self.ic_posterior(ic_h), s.ic_post_var_min)
        if samples > 1:
            ic_mean, ic_var = _repeat_rows(ic_mean, samples), _repeat_rows(ic_var, samples)
            ext_input = ext_input.repeat_interleave(samples, 0) if ext_input is not None else None
        ic = ic_mean + normal_like(ic_mean, generator) * ic_var.sqrt() if sample else ic_mean
        gen_init = self.ic_to_gen(ic)  # (K, B * S, G)

        # Inputs to the loop, projected for all steps at once.
        ext = None
        if ext_input is not None and s.ext_input_dim > 0:
            ext = ext_input.unsqueeze(0).expand(k, *ext_input.shape)  # (K, B, T_rec, E)
        # (K, B * S, T_rec, 3G); the controller loop takes the bias alone as one (K, 1, 1, 3G) row
        shared = ext is None and s.use_controller
        gen_x = self.generator.project_input(ext, (1, 1) if shared else (b * samples, t_rec))
        # Dropout on the generator states (before the factors), masks for all steps drawn at once.
        # Masks and noise are stored time-major, (K, T, B, .), and used as (K, B, T, .) views: the
        # recurrence reads one step's rows at a time, then one contiguous block.
        masks = None
        if drop:
            like = gen_init.new_empty(k, t_rec + 1, b * samples, s.gen_dim)  # shape only
            masks = dropout_mask_like(like, rate, generator).transpose(1, 2)
        empty = gen_init.new_zeros(k, b * samples, t_rec, 0)
        if s.use_controller:
            ci_fwd, ci_bwd = self.ci_encoder(x, cells=cells)  # (K, B, T_enc, H) each
            ci = lagged_dropout(ci_fwd, ci_bwd, s.ci_lag, t_rec, rate, drop, generator)
            # one row per trial, time-major (the loop reads and writes one step's rows at a time);
            # the loop projects it (x_t W + b) step by step itself
            co_noise = None
            if sample:
                co_noise = torch.randn(
                    k,
                    t_rec,
                    b * samples,
                    s.co_dim,
                    device=x.device,
                    dtype=x.dtype,
                    generator=generator,
                ).transpose(1, 2)
            gen_states, con_states, co_raw, co_sample, dropped_states = controlled_generator(
                ci,
                gen_x,
                gen_init,
                self.con_h0.unsqueeze(1).expand(k, b * samples, s.con_dim),
                self._loop_weights(),
                masks,
                co_noise,
                s.cell_clip,
                samples,
                (self.controller.input_weight, self.controller.bias),
            )
            co_mean, co_var = _gaussian_params(co_raw)
        else:
            gen_states = self.generator.sequence(gen_x, gen_init)
            con_states = co_mean = co_var = co_sample = empty
            dropped_states = gen_states * masks[:, :, 1:] if masks is not None else gen_states

        # The states are views of the recurrence's time-major tapes (K, T, B, G); FactorReadout
        # multiplies in that order: no copy, and their gradient reaches the loop time-major.
        factors_seq = self.factor_readout(dropped_states)
        n_rec = s.recon_data_dims[session]
        params = self.readout[session](factors_seq).reshape(k, b * samples, t_rec, n_rec, -1)
        gen_inputs = co_sample if ext is None else torch.cat([co_sample, ext], dim=-1)
        return LFADSOutput(
            params=params,
            factors=factors_seq,
            ic_mean=ic_mean,
            ic_var=ic_var,
            gen_init=gen_init,
            gen_states=gen_states,
            gen_inputs=gen_inputs,
            con_states=con_states,
            co_mean=co_mean,
            co_var=co_var,
            co_sample=co_sample,
        )

    def _loop_weights(self) -> LoopWeights:
        """The weights of the controller-generator recurrence."""
        # factors fed back to the controller: dropped g -> factors -> controller input, in one map
        feedback = torch.bmm(self.factor_readout.normalized_weight(), self.factors_to_con.weight)
        return LoopWeights(
            feedback=feedback,
            con_gate=self.controller.gate_weight,
            con_cand=self.controller.candidate_weight,
            co_weight=self.co_posterior.weight,
            co_bias=self.co_posterior.bias,
            co_to_gen=self.co_to_gen.weight,
            gen_gate=self.generator.gate_weight,
            gen_cand=self.generator.candidate_weight,
        )
