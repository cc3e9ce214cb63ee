"""autolfads from Python: fit LFADS or AutoLFADS to arrays, take posterior outputs, save, load.

    import autolfads
    model = autolfads.fit(train, valid, config={"trainer.max_epochs": 100})  # n x T x N arrays
    out = model.posterior(valid)            # {"output_params": n x T x N rates, "factors": ...}
    model.fitlog                            # pandas DataFrame, one row per worker per epoch
    model.save("model.ckpt"); model = autolfads.load("model.ckpt")

These are the functions `autolfads train` and `autolfads run` call (`commands/workflow.py`,
`train.fit.fit_single_model`, `pbt.population.run_pbt`), on arrays instead of files: each
session's arrays are put under the keys of a session file (docs/data-format.md) and pass the
checks a file passes (`data.read_arrays`), each refusal one line naming the argument. Nothing
is written unless `out` is given; then `out` holds exactly what the command writes.

Shape legend: B trials, T bins, N channels, E external inputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from autolfads.analysis.report import report_at_end
from autolfads.commands.workflow import (
    pbt_summary,
    prepare_out_dir,
    prepare_sessions,
    resolve_config,
    train_summary,
    write_final_outputs,
)
from autolfads.data import ArraySource, read_arrays, validate
from autolfads.data.tensors import SessionTensors
from autolfads.errors import DataError
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.posterior import session_posterior
from autolfads.pbt.population import run_pbt
from autolfads.train.fit import fit_single_model

__all__ = ["FittedModel", "fit", "load", "SESSION_KEYS"]

#: Keys of a session as a whole (no split prefix in a file); give them in `train`'s dict.
SESSION_KEYS = ("conversion_factor", "alignment_matrix_cxf", "alignment_bias_c")

_FORMS = "an array n x T x N, a dict of arrays ({'encod_data': ..., ...}) or a list of those"


def fit(
    train: Any,
    valid: Any,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    pbt: bool = False,
    *,
    test: Any = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> FittedModel:
    """Fit one LFADS model (`autolfads train`) or run AutoLFADS (`pbt=True`, `autolfads run`).

    Args:
        train, valid: each split's trials, in one of three forms:
            - an array (B, T, N) of spike counts (or other data): what the encoders see and what
              the model reconstructs; NaN marks unobserved entries;
            - a dict of a session file's keys without the split prefix, e.g.
              `{"encod_data": ..., "recon_data": ..., "ext_input": ..., "truth": ...,
              "condition": ...}`: `recon_data` (default: `encod_data`) may have more channels
              (held-out neurons, appended last) and more steps (forward prediction);
              `ext_input` (B, T_rec, E) external inputs; `truth` ground-truth rates for R^2;
              `condition` (B,) integer labels. `train`'s dict may also hold the session keys
              `SESSION_KEYS` (`conversion_factor`, `alignment_matrix_cxf`, `alignment_bias_c`);
            - a list of either, one per session (several sessions stitched into one model);
              `valid` (and `test`) then a list of the same length.
        config: settings over the defaults: a dict (nested `{"model": {"gen_dim": 64}}` or
            dotted `{"model.gen_dim": 64}` keys), a YAML file or a packaged name (`"emg"`).
            With `pbt`, shards run one after another in this process (`pbt.backend=inline`)
            unless the config says otherwise.
        out: an output folder; when given, it gets exactly what the command writes
            (`lfads_output_sess{i}.h5`, `model.ckpt`, `fitlog.csv`, `config.yaml`,
            `autolfads.zip`, `report/`; with `pbt`, `pbt_history.csv` and `pbt_state.pt`).
            Without it nothing is written.
        pbt: run AutoLFADS (population-based training) and return its best worker.
        test: optional trials without a target (form of `valid`, dict key `encod_data`): they
            get outputs in `out`'s files too.
        overwrite: replace a non-empty `out`.
        quiet: no progress line, notes or summary.

    Returns:
        The fitted model: `.posterior(encod)`, `.save(path)`, `.fitlog`.

    Raises:
        DataError: the arrays break the layout of a session file (one line naming the argument,
            e.g. `valid['recon_data']`, what was found and what was expected).
        ConfigError, UsageError: a config value breaks its rule; `out` is not empty.
    """
    cfg = resolve_config(config, base={"pbt": {"backend": "inline"}}, base_source="autolfads.fit")
    sessions = read_arrays(
        array_sources(train, valid, test),
        reconstruction=str(cfg.model.reconstruction),
        allow_noninteger=bool(cfg.model.allow_noninteger),
    )
    prepare_sessions(sessions, cfg, quiet=quiet)
    folder = prepare_out_dir(out, overwrite=overwrite) if out is not None else None
    if pbt:
        population = run_pbt(cfg, sessions, folder, quiet=quiet)
        model, fitlog = population.model, population.fitlog
        summary = pbt_summary(population, str(cfg.pbt.metric))
    else:
        single = fit_single_model(cfg, sessions, folder, quiet=quiet)
        model, fitlog, summary = single.model, single.fitlog, train_summary(single)
    if not quiet:
        print(summary)
    if folder is not None:
        written = write_final_outputs(folder, model, sessions, cfg, folder / "fitlog.csv")
        if not quiet:
            print(f"outputs in {folder}: " + ", ".join(p.name for p in written))
        report_at_end(folder, quiet=quiet)
    model.fitlog = fitlog  # after the outputs: OUT/model.ckpt is the command's
    return FittedModel(model)


def load(path: str | os.PathLike, device: str = "cpu") -> FittedModel:
    """A model saved by `FittedModel.save` or written by `autolfads run`/`train` (`model.ckpt`,
    loaded with `torch.load(weights_only=True)`). Its fit log is the one saved with it, else a
    `fitlog.csv` beside the file (an output folder's), else None."""
    model = LFADS.load_from_checkpoint(path, device=device)
    beside = Path(path).parent / "fitlog.csv"
    if model.fitlog is None and beside.is_file():
        model.fitlog = pd.read_csv(beside)
    return FittedModel(model)


class FittedModel:
    """A trained LFADS model with the Python API's view of it.

    Attributes:
        lfads: the `autolfads.LFADS` (network, hyperparameters, config) the commands use.
    """

    def __init__(self, lfads: LFADS) -> None:
        self.lfads = lfads

    @property
    def fitlog(self) -> pd.DataFrame | None:
        """One row per worker per epoch, the columns of `fitlog.csv` (README, Outputs)."""
        return self.lfads.fitlog

    @property
    def config(self) -> dict[str, Any]:
        """The fully resolved configuration that trained the model (as `config.yaml`)."""
        return self.lfads.config

    @property
    def hps(self) -> dict[str, float]:
        """The hyperparameters the model was trained with (after PBT: the best worker's)."""
        return dict(self.lfads.hps)

    @property
    def n_sessions(self) -> int:
        """Sessions the model was fitted to (each with its own read-in and read-out)."""
        return self.lfads.structure.n_sessions

    def __repr__(self) -> str:
        s = self.lfads.structure
        channels = ", ".join(str(n) for n in s.encod_data_dims)
        return (
            f"FittedModel(sessions={s.n_sessions}, channels=[{channels}], "
            f"T={s.encod_seq_len}, gen_dim={s.gen_dim}, fac_dim={s.fac_dim}, co_dim={s.co_dim})"
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as `model.ckpt` (the commands' format, with the fit log), atomically."""
        return self.lfads.save(path)

    def posterior(
        self, encod: Any, n_samples: int = 50, *, session: int | None = None, seed: int = 0
    ) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
        """Posterior-averaged outputs of trials, as `autolfads sample` writes them.

        Args:
            encod: the trials: an array (B, T, N) (NaN = unobserved), or a dict with
                `encod_data` and, for a model with external inputs, `ext_input` (other keys,
                e.g. `recon_data` or `truth`, are ignored: the dicts given to `fit` work as
                they are), or a list of either, one per session of the model.
            n_samples: posterior samples averaged per trial.
            session: which session one array belongs to (a model of several sessions).
            seed: torch's random numbers start from it (as `autolfads sample --seed`): the
                same trials give the same outputs as the split of a sampled file.

        Returns:
            field -> array of the output files' fields without the split prefix
            (`output_params` (B, T_rec, N_rec): the observation model's mean, rates per bin for
            Poisson; `factors`, `gen_states`, `gen_inputs`, `con_states` (B, T_rec, ...);
            `co_means`, `co_stds` (B, T_rec, U); `ic_mean`, `ic_std`, `gen_init` (B, ...));
            a list of those for a list.
        """
        n = self.n_sessions
        if isinstance(encod, (list, tuple)):
            if len(encod) != n or session is not None:
                expected = f"a list of {n} (one per session of the model), without session="
                raise DataError(f"encod: a list of {len(encod)}; expected {expected}")
            return [
                self._posterior(e, i, f"encod[{i}]", n_samples, seed) for i, e in enumerate(encod)
            ]
        if session is None:
            if n > 1:
                raise DataError(
                    f"encod: one session's trials; the model has {n} sessions: give a list of "
                    f"{n} (one per session) or session=i"
                )
            session = 0
        if not 0 <= session < n:
            raise DataError(f"session={session}: expected 0 to {n - 1}")
        return self._posterior(encod, session, "encod", n_samples, seed)

    def _posterior(
        self, value: Any, session: int, where: str, n_samples: int, seed: int
    ) -> dict[str, np.ndarray]:
        """`posterior` of one session's trials: the checks, then `session_posterior`."""
        source = _input_source(value, where, self.lfads.session_names, session)
        self._check_inputs(source, session)
        s, cfg = self.lfads.structure, self.lfads.config.get("model", {})
        arrays = {}
        for key, array in source.arrays.items():
            arrays[key] = np.array(array, dtype=np.float32)
            validate.check_values(
                source,
                key,
                arrays[key],
                reconstruction=s.reconstruction,
                allow_noninteger=bool(cfg.get("allow_noninteger", False)),
            )
        device = next(self.lfads.network.parameters()).device
        tensors = {k: torch.as_tensor(v, device=device) for k, v in arrays.items()}
        ext = {"test": tensors["test_ext_input"]} if "test_ext_input" in tensors else {}
        data = SessionTensors({"test": tensors["test_encod_data"]}, {}, ext)
        return session_posterior(self.lfads.network, data, session, n_samples, seed=seed)["test"]

    def _check_inputs(self, source: ArraySource, session: int) -> None:
        """The trials' layout against the model's dimensions (one line naming the argument)."""
        s = self.lfads.structure
        enc, ext = validate.check_inputs(source, source.arrays, "test")
        want = (s.encod_seq_len, s.encod_data_dims[session])
        if enc[1:] != want:
            raise validate.fail(
                source,
                "test_encod_data",
                f"has shape {enc}",
                f"(n, {want[0]}, {want[1]}): {want[0]} time steps and {want[1]} channels, "
                f"as the model's session {session}",
            )
        if s.ext_input_dim and ext is None:
            raise validate.fail(
                source,
                "test_ext_input",
                "is missing",
                f"external inputs (n, {s.recon_seq_len}, {s.ext_input_dim}), as the model was "
                "trained with: give a dict {'encod_data': ..., 'ext_input': ...}",
            )
        if ext is not None and ext[1:] != (s.recon_seq_len, s.ext_input_dim):
            raise validate.fail(
                source,
                "test_ext_input",
                f"has shape {ext}",
                f"(n, {s.recon_seq_len}, {s.ext_input_dim}), as the model's external inputs"
                + ("" if s.ext_input_dim else " (it has none)"),
            )


# --------------------------------------------------------------------------- arrays -> sessions


def array_sources(train: Any, valid: Any, test: Any = None) -> list[ArraySource]:
    """Each session's arrays under a session file's keys, with the argument each came from.

    Raises:
        DataError: a form neither an array, a dict nor a list of them; lists of other lengths.
    """
    splits = {"train": train, "valid": valid, "test": test}
    several = isinstance(train, (list, tuple))
    if several and not train:
        raise DataError(f"train: an empty list; expected {_FORMS}")
    n = len(train) if several else 1
    for name in ("valid", "test"):
        value = splits[name]
        if value is None and name == "test":
            continue
        if several and (not isinstance(value, (list, tuple)) or len(value) != n):
            found = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else "one session"
            raise DataError(f"{name}: {found}; expected a list of {n} sessions, as train")
        if not several and isinstance(value, (list, tuple)):
            raise DataError(f"{name}: a list (several sessions); expected one session, as train")
    sources = []
    for i in range(n):
        arrays: dict[str, np.ndarray] = {}
        labels: dict[str, str] = {}
        for split, value in splits.items():
            if value is None:
                continue
            prefix = f"{split}[{i}]" if several else split
            part = value[i] if several else value
            _add_split(arrays, labels, split, prefix, part)
        where = f"train[{i}]/valid[{i}]" if several else "train/valid"
        sources.append(ArraySource(f"sess{i}", where, arrays, labels))
    return sources


def _add_split(
    arrays: dict[str, np.ndarray], labels: dict[str, str], split: str, prefix: str, value: Any
) -> None:
    """One split's arrays under their file keys (`{split}_encod_data`, ...)."""
    if not isinstance(value, Mapping):
        arrays[f"{split}_encod_data"] = np.asarray(value)
        labels[f"{split}_encod_data"] = prefix
        if split in validate.TARGET_SPLITS:  # the target is the data itself
            arrays[f"{split}_recon_data"] = arrays[f"{split}_encod_data"]
            labels[f"{split}_recon_data"] = prefix
        return
    items = {str(k): v for k, v in value.items()}
    for key in items:
        if any(key.startswith(f"{s}_") for s in validate.SPLITS):
            bare = key.split("_", 1)[1]
            raise DataError(
                f"{prefix}['{key}']: a file's key; expected it without the prefix: '{bare}'"
            )
        if key in SESSION_KEYS and split != "train":
            raise DataError(f"{prefix}['{key}']: a key of the whole session; expected it in train")
    if "encod_data" not in items:
        given = ", ".join(repr(k) for k in items) or "none"
        raise DataError(
            f"{prefix}: no 'encod_data' (keys given: {given}); expected a dict of a session "
            "file's keys without the split prefix: 'encod_data', and 'recon_data', 'ext_input', "
            "'truth', 'condition'... as needed"
        )
    if "recon_data" not in items and split in validate.TARGET_SPLITS:
        items["recon_data"] = items["encod_data"]
    for key, array in items.items():
        file_key = key if key in SESSION_KEYS else f"{split}_{key}"
        arrays[file_key] = np.asarray(array)
        labels[file_key] = f"{prefix}['{key}']"
    if "recon_data" not in value and split in validate.TARGET_SPLITS:
        labels[f"{split}_recon_data"] = f"{prefix}['encod_data']"


def _input_source(value: Any, where: str, names: Sequence[str], session: int) -> ArraySource:
    """One session's trials given to `posterior`, as the test split of a file."""
    name = names[session] if session < len(names) else f"sess{session}"
    if isinstance(value, Mapping):
        if "encod_data" not in value:
            given = ", ".join(repr(str(k)) for k in value) or "none"
            raise DataError(
                f"{where}: no 'encod_data' (keys given: {given}); expected an array n x T x N or "
                "a dict {'encod_data': ..., 'ext_input': ...}"
            )
        arrays = {"test_encod_data": np.asarray(value["encod_data"])}
        if "ext_input" in value:
            arrays["test_ext_input"] = np.asarray(value["ext_input"])
        labels = {"test_encod_data": f"{where}['encod_data']"}
    else:
        arrays = {"test_encod_data": np.asarray(value)}
        labels = {"test_encod_data": where}
    labels["test_ext_input"] = f"{where}['ext_input']"
    return ArraySource(name, where, arrays, labels)
