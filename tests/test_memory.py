"""Freed memory is kept by the process (glibc) when training asks for it."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")

_PROBE = textwrap.dedent(
    """
    import os, torch
    from autolfads._memory import keep_freed_memory

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    applied = keep_freed_memory()
    before = rss_mb()
    x = torch.ones(64 * 2**20)  # 256 MB, touched
    del x
    print(applied, round(rss_mb() - before))
    """
)


def _run(env_value: str) -> tuple[str, int]:
    env = {**os.environ, "AUTOLFADS_KEEP_MEMORY": env_value}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True
    )
    applied, kept_mb = out.stdout.split()
    return applied, int(kept_mb)


def test_freed_blocks_stay_in_the_process_when_kept():
    applied, kept_mb = _run("1")
    if applied != "True":
        pytest.skip("not glibc: mallopt unavailable")
    assert kept_mb > 200  # the 256 MB block was freed into the heap, not unmapped


def test_switched_off_the_process_returns_freed_blocks():
    applied, kept_mb = _run("0")
    assert applied == "False"
    assert kept_mb < 50
