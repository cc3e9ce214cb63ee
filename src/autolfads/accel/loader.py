"""Builds and loads the C++ kernels of csrc/ (float32, CPU) on first use.

They are compiled with `torch.utils.cpp_extension` (about a minute on 2 cores; cached under
$TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions, rebuilt only when a source or a flag
changes). Without a C++ compiler and ninja, `load_kernels` logs why once and returns None.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["load_kernels", "load_failure"]

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = [_CSRC / "gru_loops.cpp", _CSRC / "elementwise.cpp", _CSRC / "optim.cpp"]
_HEADERS = sorted(_CSRC.glob("*.h"))
_state: dict[str, ModuleType | str | None] = {"module": None, "failure": None}
_log = logging.getLogger("autolfads")


def load_failure() -> str | None:
    """Why the kernels could not be built (None if they were, or were not tried yet)."""
    return _state["failure"]  # type: ignore[return-value]


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
    """The compiled kernels, building them once per machine; None (and why, logged once as a
    warning) if they cannot be built."""
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
        _log.warning("C++ kernels unavailable (%s)", reason)
    return _state["module"]  # type: ignore[return-value]
