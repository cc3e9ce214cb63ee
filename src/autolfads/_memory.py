"""Keep freed memory in the process for reuse instead of handing it back to the kernel (glibc).

A training step allocates and frees the same large buffers every step (for 8 workers, tapes of
up to ~64 MB each, ~1 GB in all). glibc's malloc serves every block above its mmap threshold
(at most 32 MB) with a fresh `mmap` and unmaps it on free, so every step pays page faults and
the kernel's zeroing of each page again: 12 % of a K = 8 training step here (perf, 2026-11-22).
Serving all blocks from the heap and never trimming it makes the second step onwards reuse the
same pages; the process keeps its peak footprint until it exits (a training process reaches its
peak in the first step anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest it can say (2 GiB of free top)
_TOP_PAD = 64 * 2**20  # grow the heap in 64 MiB steps
_state: dict[str, bool] = {}
_log = logging.getLogger("autolfads")


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every block from its heap and keep freed memory (once per
    process). Returns True if the settings are in force; False on other C libraries or platforms,
    or when the environment says AUTOLFADS_KEEP_MEMORY=0."""
    if "applied" in _state:
        return _state["applied"]
    _state["applied"] = False
    if os.environ.get("AUTOLFADS_KEEP_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, _NEVER_TRIM),
            (_M_TOP_PAD, _TOP_PAD),
        )
    )
    if not ok:
        _log.debug("glibc mallopt refused a setting; freed memory may go back to the kernel")
    _state["applied"] = ok
    return ok
