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
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from autolfads.model.controller import LoopWeights
from autolfads.model.factors import FactorReadout
from autolfads.model.gru import BidirectionalGRU, ClippedGRUCell
from autolfads.model.linear import BatchedLinear
from autolfads.model.observations import ObservationModel, build_observation_model
from autolfads.model.ops import REFERENCE, Ops
from autolfads.model.priors import CO_PRIORS, IC_PRIORS, ICPrior, InputPrior
from autolfads.model.structure import LFADSStructure
from autolfads.parts import build_part

__all__ = ["LFADSOutput", "LFADSNetwork", "FactorReadout", "MAPS"]

MAPS: dict[str, type[nn.Module]] = {"linear": BatchedLinear}
"""Read-ins and read-outs by name (`model.readin`, `model.readout`): classes called as
`cls(n_workers, in_features, out_features)` mapping (K, ..., in) to (K, ..., out)."""


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
        ops: the operations the recurrences and dropout run with (`autolfads.model.ops`); the
            reference by default. An accelerator replaces them (`autolfads.accel.accelerate`) and
            sets `choose_ops`, which is asked again when the network moves to another dtype or
            device.
    """

    def __init__(self, structure: LFADSStructure, n_workers: int = 1, ops: Ops = REFERENCE) -> None:
        super().__init__()
        s, k = structure, n_workers
        self.structure, self.n_workers = s, k
        enc_in = s.encoder_input_dim
        settings = s.part_settings()
        if s.readin_dim is not None:
            self.readin = nn.ModuleList(
                build_part("model.readin", s.readin, MAPS, nn.Module, k, n, enc_in, **settings)
                for n in s.encod_data_dims
            )
        else:
            self.readin = None
        self.ic_encoder = BidirectionalGRU(k, enc_in, s.ic_enc_dim, s.cell_clip)
        self.ic_posterior = BatchedLinear(k, 2 * s.ic_enc_dim, 2 * s.ic_dim)
        self.ic_prior = build_part(
            "model.ic_prior", s.ic_prior, IC_PRIORS, ICPrior, k, s.ic_dim, **settings
        )
        self.ic_to_gen = BatchedLinear(k, s.ic_dim, s.gen_dim)
        if s.use_controller:
            self.ci_encoder = BidirectionalGRU(k, enc_in, s.ci_enc_dim, s.cell_clip)
            self.controller = ClippedGRUCell(k, 2 * s.ci_enc_dim, s.con_dim, s.cell_clip)
            self.factors_to_con = BatchedLinear(k, s.fac_dim, 3 * s.con_dim, bias=False)
            self.con_h0 = nn.Parameter(torch.zeros(k, s.con_dim))
            self.co_posterior = BatchedLinear(k, s.con_dim, 2 * s.co_dim)
            self.co_prior = build_part(
                "model.co_prior", s.co_prior, CO_PRIORS, InputPrior, k, s.co_dim, **settings
            )
            self.co_to_gen = BatchedLinear(k, s.co_dim, 3 * s.gen_dim, bias=False)
        self.generator = ClippedGRUCell(k, s.ext_input_dim, s.gen_dim, s.cell_clip)
        # Posteriors start with the spread of their priors: a unit initial variance would drown the
        # generator in sampling noise before the encoders have learned anything.
        _init_log_variance(self.ic_posterior, s.ic_dim, s.ic_prior_var)
        if s.use_controller:
            _init_log_variance(self.co_posterior, s.co_dim, s.co_prior_nvar)
        self.factor_readout = FactorReadout(k, s.gen_dim, s.fac_dim)
        self.observation: nn.ModuleList = nn.ModuleList(
            build_observation_model(s.reconstruction, k, n, **settings) for n in s.recon_data_dims
        )
        self.readout = nn.ModuleList(
            build_part("model.readout", s.readout, MAPS, nn.Module, k, s.fac_dim, n * obs.n_params)
            for n, obs in zip(s.recon_data_dims, self.observation, strict=True)
        )
        self.ops = ops
        self.choose_ops: Callable[[nn.Module], Ops] | None = None

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), .cuda(): an accelerator re-chooses
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, "choose_ops", None) is not None:
            self.ops = self.choose_ops(self)
        return out

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
        """Start the read-out of `session` at each channel's mean (mean_data (N,)), where the
        read-out has a (K, N * P) `bias`."""
        obs, readout = self.observation_model(session), self.readout[session]
        if getattr(readout, "bias", None) is None:
            return
        bias = obs.init_bias(mean_data).reshape(-1)  # (N * P,)
        with torch.no_grad():
            readout.bias.copy_(bias.expand_as(readout.bias))

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
        s, ops = self.structure, self.ops
        k, b, t_enc, _ = encod.shape
        t_rec, rows = s.recon_seq_len, encod.shape[1] * samples
        rate = dropout_rate if dropout_rate is not None else encod.new_zeros(k)
        drop = self.training

        x = torch.log1p(encod.clamp_min(0.0)) if s.log_input else encod
        if self.readin is not None:
            x = self.readin[session](x)  # (K, B, T_enc, enc_in)
        x = ops.dropout(x, rate, drop, generator)
        ci_encoder = self.ci_encoder if s.use_controller else None
        ic_fwd, ic_bwd, ci_fwd, ci_bwd = ops.encoders(x, self.ic_encoder, ci_encoder)

        # Initial condition: g_0 = W_g0 z, z ~ q(z | data) = N(ic_mean, ic_var).
        ic_h = ops.dropout(torch.cat([ic_fwd, ic_bwd], dim=-1), rate, drop, generator)
        ic_mean, ic_var = _gaussian_params(self.ic_posterior(ic_h), s.ic_post_var_min)
        if samples > 1:
            ic_mean, ic_var = _repeat_rows(ic_mean, samples), _repeat_rows(ic_var, samples)
            ext_input = ext_input.repeat_interleave(samples, 0) if ext_input is not None else None
        if sample:
            ic = ic_mean + ops.normal(ic_mean.shape, ic_mean, generator) * ic_var.sqrt()
        else:
            ic = ic_mean
        gen_init = self.ic_to_gen(ic)  # (K, B * S, G)

        # Generator inputs (external inputs and bias) for all steps; dropout masks of its states.
        ext = None
        if ext_input is not None and s.ext_input_dim > 0:
            ext = ext_input.unsqueeze(0).expand(k, *ext_input.shape)  # (K, B, T_rec, E)
        # (K, B * S, T_rec, 3G); the controller loop takes the bias alone as one (K, 1, 1, 3G) row
        # (an expanded view would send its gradient through a (K, B * S, T_rec, 3G) buffer)
        shared = ext is None and s.use_controller
        gen_x = self.generator.project_input(ext, (1, 1) if shared else (rows, t_rec))
        masks = None
        if drop:
            masks = ops.state_masks((k, rows, t_rec + 1, s.gen_dim), gen_init, rate, generator)
        empty = gen_init.new_zeros(k, rows, t_rec, 0)
        if s.use_controller:
            ci = ops.lagged_dropout(ci_fwd, ci_bwd, s.ci_lag, t_rec, rate, drop, generator)
            co_noise = None
            if sample:
                co_noise = ops.step_noise((k, rows, t_rec, s.co_dim), gen_init, generator)
            gen_states, con_states, co_raw, co_sample, dropped_states = ops.controlled_generator(
                ci,
                gen_x,
                gen_init,
                self.con_h0.unsqueeze(1).expand(k, rows, s.con_dim),
                self._loop_weights(),
                masks,
                co_noise,
                s.cell_clip,
                samples,
                (self.controller.input_weight, self.controller.bias),
            )
            co_mean, co_var = _gaussian_params(co_raw)
        else:
            gen_states = ops.generator(self.generator, gen_x, gen_init)
            con_states = co_mean = co_var = co_sample = empty
            dropped_states = gen_states * masks[:, :, 1:] if masks is not None else gen_states

        factors_seq = self.factor_readout(dropped_states)  # f_t = d_t W_fac
        n_rec = s.recon_data_dims[session]
        params = self.readout[session](factors_seq).reshape(k, rows, t_rec, n_rec, -1)
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
