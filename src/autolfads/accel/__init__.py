"""Accelerated implementations of the model's and the training step's hot operations.

`autolfads.model.ops.Ops` is the reference (plain PyTorch, any device). `CppOps` (cpp.py) runs the
encoders, the controller-generator loop, the dropout and coordinated-dropout masks, the Poisson
loss and the Adam step in C++ (csrc/, built on first use by loader.py), float32 on the CPU.

The model never imports this package. Whoever builds a network for training or sampling (the
shard, the checkpoint loader) hands it to `accelerate`, which picks its operations once with
`choose_ops` (and again if the network moves to another dtype or device); the loss, the optimiser and
posterior sampling use the network's choice. The setting:

    accel: auto | cpp | none     config key (top level); $AUTOLFADS_ACCEL overrides it
                                 ($AUTOLFADS_FUSED=0, the old switch, means none)

    auto   cpp for float32 on the CPU when the extension builds, else the reference
    cpp    the same, but where it cannot apply (another dtype or device, no compiler) one warning
           line says why and the reference runs
    none   the reference

A network whose parts are not the ones the C++ kernels implement (another cell, encoder, read-out
or prior, a subclass: checked by exact type) runs on the reference, with one line saying so.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from torch import nn

from autolfads.model.lfads import LFADSNetwork
from autolfads.model.ops import REFERENCE, Ops

__all__ = ["SETTINGS", "accel_setting", "accelerate", "choose_ops", "cpp_ops"]

SETTINGS = ("auto", "cpp", "none")
_log = logging.getLogger("autolfads")
_said: set[str] = set()
_REF = "using the reference PyTorch operations"


def _say_once(level: int, message: str) -> None:
    if message not in _said:
        _said.add(message)
        _log.log(level, message)


def accel_setting(configured: str | None = None) -> str:
    """The setting in force: $AUTOLFADS_ACCEL, else none if $AUTOLFADS_FUSED=0, else `configured`,
    else auto."""
    value = os.environ.get("AUTOLFADS_ACCEL", "").strip().lower()
    if not value:
        fused = os.environ.get("AUTOLFADS_FUSED", "").strip().lower()
        value = "none" if fused in ("0", "false", "no", "off") else (configured or "auto")
    if value not in SETTINGS:
        from autolfads.errors import ConfigError

        raise ConfigError(f"accel must be one of {', '.join(SETTINGS)}, got {value!r}")
    return value


def cpp_ops() -> Ops | None:
    """The C++ operations, building the extension if needed; None if it cannot be built."""
    from autolfads.accel.loader import load_kernels

    if load_kernels() is None:
        return None
    from autolfads.accel.cpp import CppOps

    return CppOps()


def _unsupported_part(net: nn.Module) -> str | None:
    """The first part of `net` the C++ kernels do not implement, or None."""
    from autolfads.model.factors import FactorReadout
    from autolfads.model.gru import BidirectionalGRU, ClippedGRUCell
    from autolfads.model.lfads import LFADSNetwork
    from autolfads.model.linear import BatchedLinear
    from autolfads.model.priors import AR1Prior, GaussianICPrior

    expected = {
        "": LFADSNetwork,
        "ic_encoder": BidirectionalGRU,
        "ic_encoder.cell": ClippedGRUCell,
        "ci_encoder": BidirectionalGRU,
        "ci_encoder.cell": ClippedGRUCell,
        "controller": ClippedGRUCell,
        "generator": ClippedGRUCell,
        "factor_readout": FactorReadout,
        "factors_to_con": BatchedLinear,
        "co_posterior": BatchedLinear,
        "co_to_gen": BatchedLinear,
        "ic_prior": GaussianICPrior,
        "co_prior": AR1Prior,
    }
    parts = dict(net.named_modules())
    for name, kind in expected.items():
        if name in parts and type(parts[name]) is not kind:
            return f"{name or 'the network'} is a {type(parts[name]).__name__}"
    return None


def choose_ops(accel: str | Ops | None, net: nn.Module) -> Ops:
    """The operations `net` (an `LFADSNetwork`) runs with, for its parameters' dtype and device.

    accel: an `Ops` object (used as it is), or a setting (see the module docstring); None: the
    environment's, else auto.
    """
    if isinstance(accel, Ops):
        return accel
    setting = accel_setting(accel)
    if setting == "none":
        return REFERENCE
    param = next(net.parameters())
    if param.dtype != torch.float32 or param.device.type != "cpu":
        if setting == "cpp":
            where = f"{param.dtype} on {param.device}"
            _say_once(logging.WARNING, f"accel=cpp: {where}, not float32 on the CPU; {_REF}")
        return REFERENCE
    part = _unsupported_part(net)
    if part is not None:
        _say_once(logging.INFO, f"accel: {part}, not what the C++ kernels implement; {_REF}")
        return REFERENCE
    ops = cpp_ops()
    if ops is None:
        if setting == "cpp":
            _say_once(logging.WARNING, f"accel=cpp: the C++ kernels could not be built; {_REF}")
        return REFERENCE
    return ops


def accelerate(net: LFADSNetwork, accel: str | Ops | None = None) -> LFADSNetwork:
    """Give `net` the operations chosen for it by `choose_ops(accel, net)`, now and whenever it
    moves to another dtype or device; returns `net`."""
    net.choose_ops = functools.partial(choose_ops, accel)
    net.ops = net.choose_ops(net)
    return net
