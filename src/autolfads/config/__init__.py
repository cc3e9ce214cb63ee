"""Configuration: packaged YAML defaults, merged with a user file and `key.sub=value` overrides.

The tree has four groups, `model`, `datamodule`, `trainer` and `pbt` (README, Configuration). Unknown keys
are refused by OmegaConf's struct mode; every value is then checked for type and range against the
table of `autolfads.config.rules`. Each refusal is a one-line `ConfigError` naming the key.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from autolfads.config.hps import hp_specs_from_config
from autolfads.config.rules import check_config, check_searched
from autolfads.errors import ConfigError, UsageError

__all__ = [
    "load_config",
    "packaged_config_names",
    "packaged_defaults",
    "check_data_dims",
    "check_config",
    "check_device",
    "nested_keys",
    "split_overrides",
]

DATA_DIM_KEYS = (
    "encod_data_dim",
    "encod_seq_len",
    "recon_data_dim",
    "recon_seq_len",
    "ext_input_dim",
)


def _packaged(name: str) -> DictConfig:
    text = resources.files("autolfads.config").joinpath(f"{name}.yaml").read_text()
    return OmegaConf.create(text)


@functools.cache
def packaged_defaults() -> DictConfig:
    """The packaged `defaults.yaml`, read-only: the one source of every setting's default."""
    defaults = _packaged("defaults")
    OmegaConf.set_readonly(defaults, True)
    return defaults


def packaged_config_names() -> list[str]:
    """Names accepted by `-c NAME` besides a YAML path (e.g. `emg`, `radical`)."""
    files = resources.files("autolfads.config").iterdir()
    return sorted(
        p.name[:-5] for p in files if p.name.endswith(".yaml") and p.name != "defaults.yaml"
    )


def load_config(
    config: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
    base_source: str = "base",
) -> DictConfig:
    """Resolved configuration: defaults <- `base` <- `config` (path or packaged name) <- `overrides`.

    Args:
        config: a YAML file, a packaged config name, a config tree (a mapping, from Python;
            nested or dotted keys: `{"model": {"gen_dim": 64}}`, `{"model.gen_dim": 64}`), or
            None for the defaults alone.
        overrides: `key.sub=value` strings, applied last.
        base: a config tree merged over the defaults first (e.g. a checkpoint's config).
        base_source: where `base` came from, for the message of a refusal.

    Raises:
        ConfigError: the file is missing, a key is unknown, or a value breaks its rule
            (`autolfads.config.rules.check_config`).
    """
    cfg = _packaged("defaults")
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.pbt.hps, False)  # any HP may be searched: pbt.hps.NAME is open
    if base is not None:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(dict(base)))
        except OmegaConfBaseException as err:
            raise ConfigError(f"config of {base_source}: {_one_line(err)}") from None
    layers = []
    if config is not None:
        layers.append(_read_user_config(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, _, value = item.partition("=")
        layers.append(OmegaConf.from_dotlist([f"{key.strip()}={value}"]))
    for layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            raise ConfigError(f"config: {_one_line(err)}") from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config: {_one_line(err)}") from None
    check_config(cfg)
    for spec in hp_specs_from_config(cfg.pbt.hps):  # each searched range within its key's rule
        check_searched(spec.name, spec.min, spec.max, spec.init)
    return cfg


def _read_user_config(config: str | Path | Mapping[str, Any]) -> DictConfig:
    if isinstance(config, Mapping):
        try:
            return OmegaConf.create(nested_keys(config))
        except OmegaConfBaseException as err:
            raise ConfigError(f"config: {_one_line(err)}") from None
    path = Path(config)
    if not path.exists():
        if str(config) in packaged_config_names():
            return _packaged(str(config))
        raise ConfigError(
            f"config {config!r}: no such file and not a packaged config "
            f"(packaged: {', '.join(packaged_config_names()) or 'none'})"
        )
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml errors come in several types
        raise ConfigError(f"config {path}: not valid YAML ({_one_line(err)})") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    return loaded


def nested_keys(tree: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """A config tree whose dotted keys are spelled out: `{"model.gen_dim": 8}` becomes
    `{"model": {"gen_dim": 8}}`, at any depth, merged with nested keys of the same groups.

    Raises:
        ConfigError: a key is both a value and a group (`{"model": 1, "model.gen_dim": 8}`).
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        parts = str(key).split(".")
        item = nested_keys(value, f"{where}{key}.") if isinstance(value, Mapping) else value
        for name in reversed(parts[1:]):
            item = {name: item}
        _merge_into(out, {parts[0]: item}, where)
    return out


def _merge_into(node: dict[str, Any], tree: dict[str, Any], where: str) -> None:
    for key, value in tree.items():
        old = node.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            _merge_into(old, value, f"{where}{key}.")
        elif key in node and isinstance(value, dict) != isinstance(old, dict):
            raise ConfigError(
                f"config key {where}{key}: given both a value and a group of settings"
            )
        else:
            node[key] = value


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split("\n")[0:1]).strip() or type(err).__name__


def check_data_dims(
    cfg: DictConfig, dims: dict[str, int], source: str = "the data", fill: bool = True
) -> None:
    """Raise if the config states a data dimension other than `dims`; then (if `fill`) fill them in.

    Args:
        source: what `dims` were read from, for the message (e.g. the file name).
        fill: write the dimensions into `cfg.model` (one session; several sessions differ).

    Raises:
        ConfigError: naming the key, the configured value and the value found in `source`.
    """
    for key in DATA_DIM_KEYS:
        stated = cfg.model.get(key)
        found = int(dims[key])
        if stated is not None and int(stated) != found:
            raise ConfigError(
                f"config model.{key}={stated} disagrees with {source}, which has {key}={found}"
            )
    if fill:
        for key in DATA_DIM_KEYS:
            cfg.model[key] = int(dims[key])


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split a command's positional words into (data paths, `key=value` overrides)."""
    paths = [s for s in items if "=" not in s]
    overrides = [s for s in items if "=" in s]
    return paths, overrides


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work.

    Raises:
        UsageError: `device` is not cpu, cuda or cuda:N, or CUDA is not available here.
    """
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
