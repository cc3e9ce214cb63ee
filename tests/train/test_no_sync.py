"""A training step never waits for the device.

On CUDA a step is queued kernels; any read of a tensor's value on the host (`.item()`, `bool(t)`,
`float(t)`, `.cpu()`, `.numpy()`, `.tolist()`, a boolean-mask index, `nonzero`) or any tensor made
from host data inside the step (`torch.tensor(x)`, a host-to-device copy) makes the host wait for
every kernel queued so far. `Shard.train_epoch` makes its host decisions before the batch loop and
gathers the metrics once after it. These tests watch every PyTorch operation and those tensor
methods while an epoch trains on the CPU (the same code as on CUDA, on the reference operations),
and fail on any such call between the first batch read and the last optimiser step. On CUDA
(`--device cuda`) a further test asks CUDA itself (`torch.cuda.set_sync_debug_mode`).
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from helpers import (
    default_hps,
    rotating_poisson_session,
    session_on,
    tiny_settings,
    tiny_structure,
)
from torch.utils._python_dispatch import TorchDispatchMode

import autolfads.train.shard as shard_module
from autolfads.data.tensors import SessionTensors
from autolfads.train.optim import PopulationAdam
from autolfads.train.shard import Shard

aten = torch.ops.aten
# Operations that read a value on the host, have a shape that depends on values, or make a tensor
# from host data (a copy to the device on CUDA).
_HOST_OPS = {
    aten._local_scalar_dense.default,  # .item(), bool(t), float(t), int(t)
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
}
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}
_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__")
_FROM_HOST = ("tensor", "as_tensor", "asarray", "from_numpy")  # torch.<name>(host data)


def _where() -> str:
    """The innermost autolfads frame of the current call stack."""
    frames = [f for f in traceback.extract_stack() if "autolfads" in f.filename]
    frames = [f for f in frames if "test_no_sync" not in f.filename]
    return f"{frames[-1].filename.split('src/')[-1]}:{frames[-1].lineno}" if frames else "?"


class _Recorder(TorchDispatchMode):
    """Log of ('op' | 'mark', name, where) in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _HOST_OPS:
            self.log.append(("sync", str(func), _where()))
        elif func in _INDEX_OPS:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(i is not None and i.dtype == torch.bool for i in indices):
                self.log.append(("sync", f"{func} with a boolean mask", _where()))
        return func(*args, **kwargs)


@contextmanager
def _recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Recorder]:
    """Record host reads, batch reads ('batch') and finished optimiser steps ('step')."""
    recorder = _Recorder()

    def watch(name: str):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            recorder.log.append(("sync", f"Tensor.{name}", _where()))
            return original(self, *args, **kwargs)

        return wrapper

    def from_host(name: str):
        original = getattr(torch, name)

        def wrapper(data, *args, **kwargs):
            if not isinstance(data, torch.Tensor):
                recorder.log.append(("sync", f"torch.{name}(host data)", _where()))
            return original(data, *args, **kwargs)

        return wrapper

    for name in _METHODS:
        monkeypatch.setattr(torch.Tensor, name, watch(name))
    for name in _FROM_HOST:
        monkeypatch.setattr(torch, name, from_host(name))
    batch, step = SessionTensors.batch, PopulationAdam.step

    def marked_batch(self, *args, **kwargs):
        recorder.log.append(("mark", "batch", ""))
        return batch(self, *args, **kwargs)

    def marked_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        recorder.log.append(("mark", "step", ""))
        return out

    monkeypatch.setattr(SessionTensors, "batch", marked_batch)
    monkeypatch.setattr(PopulationAdam, "step", marked_step)
    with recorder:
        yield recorder
    monkeypatch.undo()


def _syncs_inside_steps(log: list[tuple[str, str, str]]) -> list[str]:
    """Host reads between the first batch read and the last optimiser step."""
    marks = [i for i, (kind, _, _) in enumerate(log) if kind == "mark"]
    first = next(i for i in marks if log[i][1] == "batch")
    last = max(i for i in marks if log[i][1] == "step")
    return [f"{name} at {where}" for kind, name, where in log[first:last] if kind == "sync"]


def _shard_and_data(**settings):
    """A shard using every part of a step: controller, dropout, coordinated dropout, sample
    validation, and (optionally) the temporal shift; 3 batches per epoch."""
    session, _ = rotating_poisson_session(n_train=48, n_valid=8, T=8, N=6, seed=0)
    g = torch.Generator().manual_seed(1)
    session.sv_mask = torch.rand(session.encod["train"].shape, generator=g) < 0.1
    hps = default_hps(2, dropout_rate=0.1, cd_rate=[0.3, 0.0])
    shard = Shard(tiny_structure(), tiny_settings(**settings), hps, seed=0, accel="none")
    shard.init_readout_biases([session])
    return shard, [session]


@pytest.mark.parametrize("shift", [False, True], ids=["plain", "temporal_shift"])
def test_a_training_epoch_reads_nothing_from_the_device_inside_its_steps(monkeypatch, shift):
    shard, data = _shard_and_data(temporal_shift=shift)
    with _recording(monkeypatch) as rec:
        metrics = shard.train_epoch(data, 0)
    assert sum(1 for kind, name, _ in rec.log if name == "step") == 3
    assert _syncs_inside_steps(rec.log) == []
    assert metrics["train/loss"].shape == (2,)


def test_the_guard_catches_a_host_read_inside_a_step(monkeypatch):
    """Put back the per-step check of the coordinated-dropout rates, and read the loss: both seen."""
    shard, data = _shard_and_data()
    prepare, loss = shard_module.prepare_batch, shard_module.lfads_loss

    def per_step_check(*args, cd_any=None, **kwargs):
        return prepare(*args, **kwargs)  # cd_any None: prepare_batch reads cd_rate itself

    def read_loss(*args, **kwargs):
        value, parts = loss(*args, **kwargs)
        float(value.detach().sum())
        return value, parts

    monkeypatch.setattr(shard_module, "prepare_batch", per_step_check)
    monkeypatch.setattr(shard_module, "lfads_loss", read_loss)
    with _recording(monkeypatch) as rec:
        shard.train_epoch(data, 0)
    found = _syncs_inside_steps(rec.log)
    assert any("augment.py" in f and "_local_scalar_dense" in f for f in found), found
    assert any("Tensor.__float__" in f for f in found), found


def test_a_cuda_training_epoch_never_synchronises(monkeypatch, device):
    """CUDA's own account: every synchronising call warns (sync debug mode); none may fall between
    the first batch read and the last optimiser step."""
    if not device.startswith("cuda"):
        pytest.skip("CUDA's synchronisation warnings need a CUDA device")
    shard, data = _shard_and_data(temporal_shift=True)
    shard = Shard(shard.structure, shard.settings, shard.hp_table(), device, seed=0, accel="none")
    data = [session_on(d, device) for d in data]
    shard.init_readout_biases(data)
    batch, step = SessionTensors.batch, PopulationAdam.step

    def marked_batch(self, *args, **kwargs):
        warnings.warn("MARK batch", stacklevel=1)
        return batch(self, *args, **kwargs)

    def marked_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        warnings.warn("MARK step", stacklevel=1)
        return out

    monkeypatch.setattr(SessionTensors, "batch", marked_batch)
    monkeypatch.setattr(PopulationAdam, "step", marked_step)
    shard.train_epoch(data, 0)  # warm-up: first-use allocations and library start-up
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            shard.train_epoch(data, 1)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    log = [("mark", str(w.message)[5:], "") if str(w.message).startswith("MARK ") else
           ("sync", str(w.message).splitlines()[0], f"{w.filename}:{w.lineno}") for w in caught]  # fmt: skip
    assert sum(1 for kind, name, _ in log if name == "step") == 3
    assert _syncs_inside_steps(log) == []
