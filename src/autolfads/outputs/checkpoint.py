"""`model.ckpt`: one trained LFADS model (the best worker), loadable with `weights_only=True`.

The file is a dict of plain Python values and tensors: format tag, structure, resolved config, data
dimensions and session names, hyperparameter values, the K = 1 network weights, for a model
fitted onto another one (`autolfads train --from`) where it came from (`fitted_from`), and for a
model saved from Python (`autolfads.fit(...).save`) its fit log (`fitlog`: column -> tensor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from autolfads._atomic import atomic_path
from autolfads.accel import accelerate
from autolfads.data import SessionData
from autolfads.data.tensors import to_tensors
from autolfads.errors import DataError
from autolfads.model.lfads import LFADSNetwork
from autolfads.model.structure import LFADSStructure
from autolfads.outputs.posterior import all_sessions_posterior

__all__ = ["LFADS", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "autolfads-model-1"


class LFADS:
    """A trained LFADS model: structure, weights (one worker) and the hyperparameters it was trained with.

    Args:
        network: a K = 1 `LFADSNetwork`.
        hps: hyperparameter name -> value.
        config: the resolved configuration (plain dict) that trained it.
        session_names: the data files' names, one per session.
        fitted_from: for a new session fitted onto a trained model (`autolfads train --from`):
            that model's checkpoint file name, its sessions and the parts trained here; else None.
        fitlog: the fit log (one row per worker per epoch), saved with the model when given.
    """

    def __init__(
        self,
        network: LFADSNetwork,
        hps: Mapping[str, float],
        config: Mapping[str, Any] | None = None,
        session_names: Sequence[str] = (),
        fitted_from: Mapping[str, Any] | None = None,
        fitlog: pd.DataFrame | None = None,
    ) -> None:
        if network.n_workers != 1:
            raise ValueError(f"LFADS holds one worker, got a network with K={network.n_workers}")
        self.network = network
        self.hps = dict(hps)
        self.config = dict(config or {})
        self.session_names = list(session_names)
        self.fitted_from = dict(fitted_from) if fitted_from is not None else None
        self.fitlog = fitlog

    @property
    def structure(self) -> LFADSStructure:
        """The model's structure (dimensions and fixed settings)."""
        return self.network.structure

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "structure": self.structure.to_dict(),
            "config": self.config,
            "session_names": self.session_names,
            "hps": {k: float(v) for k, v in self.hps.items()},
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }
        if self.fitted_from is not None:
            payload["fitted_from"] = self.fitted_from
        if self.fitlog is not None:
            payload["fitlog"] = _columns(self.fitlog)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)

    @classmethod
    def load_from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", accel: str | None = None
    ) -> LFADS:
        """Load a `model.ckpt` (safely: `torch.load(weights_only=True)`); `accel` picks its
        operations (`autolfads.accel.accelerate`; None: $AUTOLFADS_ACCEL, else auto)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: checkpoint not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DataError(f"{path}: not an autolfads checkpoint ({type(err).__name__})") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise DataError(f"{path}: not an autolfads checkpoint (format tag missing)")
        structure = LFADSStructure.from_dict(payload["structure"])
        network = LFADSNetwork(structure, n_workers=1)
        network.load_state_dict(payload["state_dict"])
        accelerate(network.to(device), accel)  # on its device first: no CPU kernels for a GPU
        return cls(
            network,
            payload["hps"],
            payload["config"],
            payload["session_names"],
            payload.get("fitted_from"),
            _frame(payload["fitlog"]) if "fitlog" in payload else None,
        )

    def check_sessions(self, sessions: Sequence[SessionData]) -> None:
        """Refuse data whose dimensions disagree with the model (one line naming file and key)."""
        s = self.structure
        if len(sessions) != s.n_sessions:
            raise DataError(
                f"the model was trained on {s.n_sessions} session(s), got {len(sessions)} data file(s)"
            )
        for i, sess in enumerate(sessions):
            d = sess.dims
            expected = {
                "encod_data_dim": s.encod_data_dims[i],
                "recon_data_dim": s.recon_data_dims[i],
                "encod_seq_len": s.encod_seq_len,
                "recon_seq_len": s.recon_seq_len,
                "ext_input_dim": s.ext_input_dim,
            }
            for key, want in expected.items():
                found = getattr(d, key)
                if found != want:
                    raise DataError(
                        f"{sess.path}: {key} is {found} but the model expects {want} (session {i})"
                    )

    def posterior(
        self, sessions: Sequence[SessionData], n_samples: int = 50, seed: int = 0
    ) -> list[dict[str, dict[str, np.ndarray]]]:
        """Posterior-averaged outputs: per session, split -> field -> (n, ...) array; each split's
        random numbers start from `seed` (`outputs.posterior.session_posterior`)."""
        self.check_sessions(sessions)
        device = next(self.network.parameters()).device
        data = to_tensors(sessions, device)
        return all_sessions_posterior(self.network, data, n_samples, seed=seed)


def _columns(frame: pd.DataFrame) -> dict[str, torch.Tensor]:
    """A numeric table as column -> tensor (int64 or float64), which `weights_only` loads."""
    return {
        str(name): torch.from_numpy(
            frame[name].to_numpy(
                dtype=np.int64 if frame[name].dtype.kind in "iub" else np.float64, copy=True
            )
        )
        for name in frame.columns
    }


def _frame(columns: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """The table of `_columns`, back."""
    return pd.DataFrame({name: value.numpy() for name, value in columns.items()})
