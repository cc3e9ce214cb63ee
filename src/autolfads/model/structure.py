"""The structure of an LFADS model: dimensions and fixed settings, saved in every checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autolfads.config import packaged_defaults
from autolfads.config.rules import RULES, check_controller_sizes
from autolfads.errors import ConfigError

__all__ = ["LFADSStructure"]

_REQUIRED = ("encod_seq_len", "recon_seq_len", "ext_input_dim")  # never null in a structure
_DEFAULTS = packaged_defaults().model  # the one source of the defaults (defaults.yaml)


@dataclass(frozen=True)
class LFADSStructure:
    """What an LFADS model is made of (not its searchable hyperparameters, not its weights).

    Per-session tuples have one entry per session (multi-session stitching). The defaults are
    those of `defaults.yaml`.
    """

    encod_data_dims: tuple[int, ...]
    recon_data_dims: tuple[int, ...]
    encod_seq_len: int
    recon_seq_len: int
    ext_input_dim: int = 0
    readin_dim: int | None = None
    ic_enc_dim: int = _DEFAULTS.ic_enc_dim
    ci_enc_dim: int = _DEFAULTS.ci_enc_dim
    con_dim: int = _DEFAULTS.con_dim
    co_dim: int = _DEFAULTS.co_dim
    ic_dim: int = _DEFAULTS.ic_dim
    gen_dim: int = _DEFAULTS.gen_dim
    fac_dim: int = _DEFAULTS.fac_dim
    cell_clip: float = _DEFAULTS.cell_clip
    ci_lag: int = _DEFAULTS.ci_lag
    co_prior_tau: float = _DEFAULTS.co_prior_tau
    co_prior_nvar: float = _DEFAULTS.co_prior_nvar
    ic_prior_var: float = _DEFAULTS.ic_prior_var
    ic_post_var_min: float = _DEFAULTS.ic_post_var_min
    reconstruction: str = _DEFAULTS.reconstruction
    ic_prior: str = _DEFAULTS.ic_prior
    co_prior: str = _DEFAULTS.co_prior
    readin: str = _DEFAULTS.readin
    readout: str = _DEFAULTS.readout
    s_min: float = _DEFAULTS.s_min
    gamma_prior: float = _DEFAULTS.gamma_prior
    gamma_scale_from_data: bool = _DEFAULTS.gamma_scale_from_data
    log_input: bool = _DEFAULTS.log_input

    def __post_init__(self) -> None:
        if len(self.encod_data_dims) != len(self.recon_data_dims) or not self.encod_data_dims:
            raise ConfigError(
                "LFADS structure: one encod and one recon dimension per session needed"
            )
        for name in _FIELDS_WITH_RULES:  # the rules of the config table, values in normal form
            rule = RULES[f"model.{name}"]
            if name in _REQUIRED:
                rule = dataclasses.replace(rule, nullable=False, note="")
            object.__setattr__(self, name, rule.check(f"model.{name}", getattr(self, name)))
        for dims in ("encod_data_dims", "recon_data_dims"):
            key = f"model.{dims[:-1]}"
            values = tuple(RULES[key].check(key, d) for d in getattr(self, dims))
            object.__setattr__(self, dims, values)
        check_controller_sizes(self.co_dim, self.ci_enc_dim, self.con_dim)
        if self.recon_seq_len < self.encod_seq_len:
            raise ConfigError(
                f"recon_seq_len ({self.recon_seq_len}) must be >= encod_seq_len ({self.encod_seq_len})"
            )
        if self.ci_lag >= self.encod_seq_len:
            raise ConfigError(
                f"model.ci_lag ({self.ci_lag}) must be smaller than encod_seq_len ({self.encod_seq_len})"
            )
        if len(self.encod_data_dims) > 1 and self.readin_dim is None:
            object.__setattr__(self, "readin_dim", int(self.encod_data_dims[0]))

    def part_settings(self) -> dict[str, Any]:
        """The settings a swappable part may take by keyword (`autolfads.parts`)."""
        names = (
            "cell_clip",
            "co_prior_tau",
            "co_prior_nvar",
            "ic_prior_var",
            "s_min",
            "gamma_prior",
            "gamma_scale_from_data",
        )
        return {name: getattr(self, name) for name in names}

    @property
    def n_sessions(self) -> int:
        """Number of sessions (read-in/read-out pairs)."""
        return len(self.encod_data_dims)

    @property
    def encoder_input_dim(self) -> int:
        """Width of the encoders' input: the read-in width, or the channel count without read-in."""
        return int(self.readin_dim) if self.readin_dim is not None else int(self.encod_data_dims[0])

    @property
    def use_controller(self) -> bool:
        """True when the model infers inputs (co_dim > 0)."""
        return self.co_dim > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, for checkpoints and YAML."""
        out = dataclasses.asdict(self)
        out["encod_data_dims"] = list(self.encod_data_dims)
        out["recon_data_dims"] = list(self.recon_data_dims)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LFADSStructure:
        """Inverse of `to_dict`."""
        d = dict(d)
        d["encod_data_dims"] = tuple(int(x) for x in d["encod_data_dims"])
        d["recon_data_dims"] = tuple(int(x) for x in d["recon_data_dims"])
        return cls(**d)

    @classmethod
    def from_config(
        cls, model_cfg: Mapping[str, Any], session_dims: Sequence[Mapping[str, int]]
    ) -> LFADSStructure:
        """Structure from the `model` config group and each session's data dimensions."""
        first = session_dims[0]
        for i, dims in enumerate(session_dims[1:], start=1):
            for key in ("encod_seq_len", "recon_seq_len", "ext_input_dim"):
                if dims[key] != first[key]:
                    raise ConfigError(
                        f"session {i} has {key}={dims[key]} but session 0 has {first[key]}; "
                        "sessions must share time steps and external inputs"
                    )
        names = {f.name for f in dataclasses.fields(cls)}
        skip = {"encod_data_dims", "recon_data_dims", "encod_seq_len", "recon_seq_len"}
        kwargs = {k: model_cfg[k] for k in names - skip if model_cfg.get(k) is not None}
        kwargs["ext_input_dim"] = int(first["ext_input_dim"])
        return cls(
            encod_data_dims=tuple(int(d["encod_data_dim"]) for d in session_dims),
            recon_data_dims=tuple(int(d["recon_data_dim"]) for d in session_dims),
            encod_seq_len=int(first["encod_seq_len"]),
            recon_seq_len=int(first["recon_seq_len"]),
            **kwargs,
        )


_FIELDS_WITH_RULES = tuple(
    f.name for f in dataclasses.fields(LFADSStructure) if f"model.{f.name}" in RULES
)
