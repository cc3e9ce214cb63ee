"""Optional C++ loops for the recurrences (float32 on CPU), built on first use.

csrc/gru_loops.cpp runs whole recurrences in C++, forward and backward: the encoders' GRU
sequences (`gru_sequence_forward/backward`, used by `GRUTape.run_sequence` and by
`bidirectional_sequence`, whose forward also projects each step's input inside the loop) and the
controller-generator loop (`controlled_forward/backward`, used by `controlled_generator`). Rows
never interact inside a recurrence, so each call splits (worker, block of rows) items across the
OpenMP threads and each item runs all T steps alone (BLAS sgemm for the products, fused gate
arithmetic). csrc/elementwise.cpp fuses elementwise passes of a step: the dropout masks
(`dropout_mask`, used by `worker_dropout` and `dropout_mask_like`; `uniform_fill` for plain random
numbers), the controller's lagged, dropped-out input and its chain rule
(`lag_dropout_forward/backward`, used by `lagged_dropout`), coordinated dropout (`cd_masks`, used
by `prepare_batch`) and the Poisson reconstruction loss with its gradient (`poisson_nll`, used by
`lfads_loss` through `fused_poisson_recon`).
csrc/optim.cpp is the population's Adam step on one parameter in one pass (`adam_step`, used by
`PopulationAdam.step`).
They are compiled with `torch.utils.cpp_extension` the first time they are needed (about a minute
on 2 cores; cached under $TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions, and rebuilt
only when the source or the flags change). Without a C++ compiler and ninja, or with
AUTOLFADS_FUSED=0, nothing is built and the PyTorch path runs: the same computation to float32
rounding (mask random numbers come from torch's generator instead), slower.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["kernels_for", "load_kernels", "fused_enabled"]

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = [_CSRC / "gru_loops.cpp", _CSRC / "elementwise.cpp", _CSRC / "optim.cpp"]
_HEADERS = sorted(_CSRC.glob("*.h"))
_state: dict[str, ModuleType | str | None] = {"module": None, "failure": None}
_log = logging.getLogger("autolfads")


def fused_enabled() -> bool:
    """False when the environment says AUTOLFADS_FUSED=0 (use the PyTorch path only)."""
    return os.environ.get("AUTOLFADS_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def _flags() -> tuple[str, list[str], list[str]]:
    """Extension name (vector width in it: one build each), compiler flags and linker flags.

    On Linux torch's CPU threads are OpenMP (GNU), so the loops are built with -fopenmp to share
    them; elsewhere (e.g. macOS, torch's native thread pool) ATen's parallel_for needs no flag.
    """
    # torch rebuilds when a source or a flag changes, not a header: the headers' digest is a flag
    digest = hashlib.sha1(b"".join(h.read_bytes() for h in _HEADERS)).hexdigest()[:12]
    flags = ["-O3", "-fno-trapping-math", "-fno-math-errno", f"-DAUTOLFADS_HEADERS={digest}"]
    if not sys.platform.startswith("linux"):
        return "autolfads_loops", flags, []
    flags.append("-fopenmp")
    name, capability = "autolfads_loops", torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        name += "_avx512"
        flags += ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma"]
        flags += ["-mprefer-vector-width=512"]
    elif capability == "AVX2":
        name += "_avx2"
        flags += ["-mavx2", "-mfma"]
    return name, flags, ["-fopenmp"]


def _already_built(name: str) -> bool:
    """True if a build of `name` is in the extensions cache (it is reused if the source is the same)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return any(Path(_get_build_directory(name, verbose=False)).glob(f"{name}*.so"))
    except Exception:
        return False


def load_kernels() -> ModuleType | None:
    """The compiled kernels, building them once per machine; None if AUTOLFADS_FUSED=0 or (and why,
    logged once as a warning) if they cannot be built."""
    if not fused_enabled():
        return None
    if _state["module"] is not None or _state["failure"] is not None:
        return _state["module"]  # type: ignore[return-value]
    try:
        from torch.utils.cpp_extension import load

        name, flags, ldflags = _flags()
        if not _already_built(name):
            _log.warning("compiling the C++ GRU kernels for this machine (once, about a minute)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _state["module"] = load(
                name,
                [str(p) for p in _SOURCES],
                extra_cflags=flags,
                extra_ldflags=ldflags,
                verbose=False,
            )
    except Exception as err:  # no compiler, no ninja, a failed build: the PyTorch path runs
        reason = " ".join(str(err).split())[:300]
        _state["failure"] = reason
        _log.warning("C++ GRU kernels unavailable, using the PyTorch path (%s)", reason)
    return _state["module"]  # type: ignore[return-value]


def kernels_for(example: Tensor) -> ModuleType | None:
    """The kernels if they apply to tensors like `example` (float32 on CPU) and can be loaded."""
    if example.dtype != torch.float32 or example.device.type != "cpu":
        return None
    return load_kernels()
