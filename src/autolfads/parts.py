"""Swappable parts: a config names a built-in part (`poisson`, `gaussian`...) or a class by its
dotted path (`_target_`-style, `mylab.priors.LaplaceICPrior`), and `build_part` makes it.

A part's class is called with the positional sizes its kind fixes (e.g. K and ic_dim for an IC prior)
and, by keyword, those of the model's settings its `__init__` names (all of them if it takes
`**kwargs`). docs/architecture.md shows how to write one.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from autolfads.errors import ConfigError

__all__ = ["build_part", "resolve_part"]


def resolve_part(key: str, spec: str, builtins: Mapping[str, type], base: type) -> type:
    """The class `spec` names for config key `key`: a key of `builtins` or a dotted path to a
    subclass of `base`.

    Raises:
        ConfigError: `spec` names no class, or one that is not a `base`.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"`{key}` must be a string, got {spec!r}")
    if spec in builtins:
        return builtins[spec]
    module_name, _, class_name = spec.rpartition(".")
    cls = None
    if module_name:
        try:
            cls = getattr(importlib.import_module(module_name), class_name, None)
        except ImportError:
            cls = None
    if not inspect.isclass(cls):
        raise ConfigError(
            f"`{key}`={spec!r} names no class: expected one of {', '.join(builtins)}, "
            "or a dotted path pkg.mod.Class"
        )
    if not issubclass(cls, base):
        raise ConfigError(
            f"`{key}`={spec!r} is not a subclass of {base.__module__}.{base.__qualname__}"
        )
    return cls


def build_part(
    key: str,
    spec: str,
    builtins: Mapping[str, type],
    base: type,
    *sizes: int,
    **settings: Any,
) -> Any:
    """`cls(*sizes, **accepted settings)` for the class `spec` names (see `resolve_part`)."""
    cls = resolve_part(key, spec, builtins, base)
    return cls(*sizes, **accepted_settings(cls, settings))


def accepted_settings(cls: type, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of `settings` that `cls.__init__` accepts (all of them if it takes **kwargs)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(settings)
    names = {p.name for p in params}
    return {k: v for k, v in settings.items() if k in names}
