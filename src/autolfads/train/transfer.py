"""A new session onto a trained model: `autolfads train NEW.h5 --from CKPT`.

The new model is the checkpoint's model with one session, the new file. Every weight the sessions
share - the encoders, the IC and controller-output posteriors, the priors, the controller, the
generator and the factor read-out - is the checkpoint's and stays frozen (`Shard(frozen=...)`:
no gradient, outside the optimiser, bit-identical at the end). Only the new session's parts are
trained: its read-in (new channels -> the checkpoint's encoder input width, `encoder_input_dim`;
a model trained without read-in gets one of that width), its read-out (the checkpoint's factors ->
the new channels) and its observation model's parameters (e.g. the zero-inflated gamma's
per-channel scales). They start as `train.fit.start_session_maps` starts them: the read-out at the
channel means, the read-in at the session's own principal components.

Settings (`Transfer.config_base`): the checkpoint's config, with its structure keys set from the
checkpoint's structure, its hyperparameters except the learning rate from the checkpoint's `hps`
(the best worker's values
after PBT), its data dimensions left to the new file, and without `device` and `accel` (this
machine's); the command's `-c` file and `key=value` overrides go on top, except that the structure
cannot change (`check_config`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import Tensor

from autolfads.config import DATA_DIM_KEYS
from autolfads.data import SessionData, read_sessions
from autolfads.data.validate import check_values
from autolfads.errors import AutoLFADSError, ConfigError, DataError, UsageError
from autolfads.model.structure import LFADSStructure
from autolfads.outputs.checkpoint import LFADS
from autolfads.train.shard import HP_NAMES

__all__ = ["SESSION_PARTS", "STRUCTURE_KEYS", "Transfer"]

SESSION_PARTS = ("readin", "readout", "observation")
"""The `LFADSNetwork` modules that belong to one session: trained; everything else is frozen."""

_PER_SESSION_DIMS = {"encod_data_dims", "recon_data_dims"}
_SHARED_DIMS = ("encod_seq_len", "recon_seq_len", "ext_input_dim")  # the data must match these
STRUCTURE_KEYS = tuple(
    f.name
    for f in dataclasses.fields(LFADSStructure)
    if f.name not in _PER_SESSION_DIMS | set(_SHARED_DIMS) | {"readin_dim", "gamma_prior"}
)
"""`model.*` keys fixed by the checkpoint's structure, besides `readin_dim` (its encoder input
width). `gamma_prior` is a hyperparameter too: its value starts the new session's zero-inflated
gamma scales, as in a fresh model."""

# Files are read with an observation model without value rules; the values are then checked
# against the checkpoint's observation model, so that a refusal names the checkpoint too.
_NO_VALUE_RULES = "mse"


@dataclass(frozen=True)
class Transfer:
    """A trained model (`model.ckpt`) to fit a new session onto.

    Attributes:
        path: the checkpoint, as given.
        model: the checkpoint's model.
    """

    path: Path
    model: LFADS

    @classmethod
    def load(cls, path: str | Path) -> Transfer:
        """Load `path`; a missing or unusable checkpoint is one line naming it (`DataError`)."""
        path = Path(path)
        try:
            model = LFADS.load_from_checkpoint(path, accel="none")  # weights only: no kernels
        except DataError:
            raise
        except AutoLFADSError as err:
            raise DataError(f"{path}: {err}") from None
        except Exception as err:  # a damaged payload: missing keys, wrong shapes
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise DataError(
                f"{path}: not a usable autolfads checkpoint ({type(err).__name__}"
                f"{': ' + detail[:200] if detail else ''})"
            ) from None
        return cls(path, model)

    @property
    def structure(self) -> LFADSStructure:
        """The checkpoint's structure."""
        return self.model.structure

    # ------------------------------------------------------------------------------ config
    def config_base(self) -> dict[str, Any]:
        """The checkpoint's config as the new fit's base (module docstring): structure keys from
        its structure (`model.readin_dim` = its encoder input width), hyperparameters from its
        `hps` (but `lr_init` from its config: the stored rate has decayed), data dimensions null (read from the new file), no `device` or `accel`."""
        config = copy.deepcopy(dict(self.model.config))
        for key in ("device", "accel"):
            config.pop(key, None)
        model = dict(config.get("model") or {})
        structure = self.structure.to_dict()
        model.update({name: structure[name] for name in STRUCTURE_KEYS})
        model["readin_dim"] = self.structure.encoder_input_dim
        model.update({name: None for name in DATA_DIM_KEYS})
        # the hyperparameters the model was trained with, but the learning rate at its starting
        # value (the checkpoint's config): the stored one has decayed with the training
        model.update(
            {n: float(v) for n, v in self.model.hps.items() if n in HP_NAMES and n != "lr_init"}
        )
        config["model"] = model
        return config

    def check_config(self, cfg: DictConfig) -> None:
        """Refuse a config whose structure keys differ from the checkpoint's (one line)."""
        expected = {name: getattr(self.structure, name) for name in STRUCTURE_KEYS}
        expected["readin_dim"] = self.structure.encoder_input_dim
        for name, want in expected.items():
            got = cfg.model.get(name)
            if not _same(got, want):
                raise ConfigError(
                    f"model.{name}={got}: with --from the structure is the checkpoint's "
                    f"({self.path} has {name}={want}); leave model.{name} out"
                )

    # ------------------------------------------------------------------------------ data
    def read_sessions(self, paths: Sequence[str], cfg: DictConfig) -> list[SessionData]:
        """Read the one new file and check it against the checkpoint (`check_sessions`).

        Raises:
            UsageError: several files (fit them one at a time, each with its own --from).
            DataError: the file's layout, or what `check_sessions` refuses.
        """
        if len(paths) != 1:
            raise UsageError(
                f"--from {self.path} fits one new session: give one data file, got {len(paths)} "
                "(fit each file with its own --from)"
            )
        sessions = read_sessions(list(paths), reconstruction=_NO_VALUE_RULES, allow_noninteger=True)
        self.check_sessions(sessions, allow_noninteger=bool(cfg.model.allow_noninteger))
        return sessions

    def check_sessions(self, sessions: Sequence[SessionData], allow_noninteger: bool) -> None:
        """Refuse data the checkpoint cannot take, in one line naming both files: other time steps
        or external-input width, or values its observation model does not allow."""
        s = self.structure
        for sess in sessions:
            dims = sess.dims.as_dict()
            for key in _SHARED_DIMS:
                if dims[key] != getattr(s, key):
                    raise DataError(
                        f"--from {self.path}: the checkpoint's model has {key}={getattr(s, key)} "
                        f"but {sess.path} has {key}={dims[key]}"
                    )
            arrays = {f"{split}_encod_data": a for split, a in sess.encod.items()}
            arrays.update({f"{split}_recon_data": a for split, a in sess.recon.items()})
            for key, array in arrays.items():
                try:
                    check_values(
                        sess.path,
                        key,
                        array,
                        reconstruction=s.reconstruction,
                        allow_noninteger=allow_noninteger,
                    )
                except DataError as err:
                    raise DataError(
                        f"--from {self.path} (model.reconstruction={s.reconstruction}): {err}"
                    ) from None

    # ------------------------------------------------------------------------------ weights
    def frozen_weights(self) -> dict[str, Tensor]:
        """The checkpoint's weights outside `SESSION_PARTS`, by state-dict name (CPU copies)."""
        state = self.model.network.state_dict()
        return {
            name: t.detach().cpu().clone()
            for name, t in state.items()
            if name.split(".")[0] not in SESSION_PARTS
        }

    def record(self) -> dict[str, Any]:
        """What the new checkpoint records of its origin (`LFADS.fitted_from`): no paths."""
        return {
            "checkpoint": self.path.name,
            "sessions": list(self.model.session_names),
            "trained": list(SESSION_PARTS),
        }


def _same(got: Any, want: Any) -> bool:
    """Config value `got` states structure value `want` (numbers compared as numbers)."""
    if isinstance(want, bool) or want is None or isinstance(got, bool):
        return got == want
    if isinstance(want, (int, float)):
        try:
            return float(got) == float(want)
        except (TypeError, ValueError):
            return False
    return str(got) == str(want)
