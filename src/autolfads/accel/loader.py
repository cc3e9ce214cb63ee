"""Builds and loads the C++ kernels of csrc/ (float32, CPU) on first use.

They are compiled with `torch.utils.cpp_extension` (about a minute on 2 cores; cached under
$TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions, rebuilt only when a source or a flag
changes). Without a C++ compiler and ninja, `load_kernels` logs why once and returns None.

A build that was stopped (Ctrl-C, a killed job) leaves torch's `lock` file in the build folder, and
torch then waits on it forever in every later process; the build here runs under an advisory lock
of its own (`flock`, released by the system when its holder dies), and whoever holds that lock
knows a torch `lock` file it finds was left by a dead build and removes it.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
    """Extension name, compiler flags and linker flags.

    The name carries the vector width (one build each) and a digest of where the sources are
    (one build folder per installed copy: two checkouts or environments would otherwise rebuild
    over each other, each one's paths replacing the other's in the build folder).
    On Linux torch's CPU threads are OpenMP (GNU), so the loops are built with -fopenmp to share
    them; elsewhere (e.g. macOS, torch's native thread pool) ATen's parallel_for needs no flag.
    """
    # torch rebuilds when a source or a flag changes, not a header: the headers' digest is a flag
    digest = hashlib.sha1(b"".join(h.read_bytes() for h in _HEADERS)).hexdigest()[:12]
    flags = ["-O3", "-fno-trapping-math", "-fno-math-errno", f"-DAUTOLFADS_HEADERS={digest}"]
    where = hashlib.sha1(str(_CSRC.resolve()).encode()).hexdigest()[:8]
    if not sys.platform.startswith("linux"):
        return f"autolfads_loops_{where}", flags, []
    flags.append("-fopenmp")
    name, capability = "autolfads_loops", torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        name += "_avx512"
        flags += ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma"]
        flags += ["-mprefer-vector-width=512"]
    elif capability == "AVX2":
        name += "_avx2"
        flags += ["-mavx2", "-mfma"]
    return f"{name}_{where}", flags, ["-fopenmp"]


def _build_directory(name: str) -> Path | None:
    """The folder torch builds `name` in (created), or None if torch cannot say."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except Exception:
        return None


def _already_built(name: str) -> bool:
    """True if a build of `name` is in the extensions cache (it is reused if the source is the same)."""
    folder = _build_directory(name)
    return folder is not None and any(folder.glob(f"{name}*.so"))


@contextmanager
def _build_lock(folder: Path | None) -> Iterator[None]:
    """Held while this process builds or loads the kernels in `folder`: other processes wait here
    while one builds; and torch's `lock` file, found while holding it, was left by a build that
    died (a live one would hold this lock), so it is removed instead of waited on forever."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): torch's own lock alone
        fcntl = None
    if fcntl is None or folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "autolfads.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = folder / "lock"
            if stale.exists():
                _log.warning(
                    "removing %s, left by a build of the C++ kernels that was stopped", stale
                )
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
        with _build_lock(_build_directory(name)), warnings.catch_warnings():
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
