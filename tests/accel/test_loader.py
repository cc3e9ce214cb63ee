"""The build lock of the C++ kernels: a build that was stopped must not make every later process
wait forever on the `lock` file torch left behind."""

import fcntl
import subprocess
import sys
import threading

import pytest
from helpers import needs_cpp

from autolfads.accel import loader


def test_a_torch_lock_left_by_a_dead_build_is_removed(tmp_path):
    (tmp_path / "lock").touch()
    with loader._build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()


def test_a_live_build_is_waited_for_and_its_lock_kept_until_it_ends(tmp_path):
    (tmp_path / "lock").touch()  # torch's lock of the live build below
    entered, seen_lock = threading.Event(), []
    with open(tmp_path / "autolfads.flock", "a") as live_build:
        fcntl.flock(live_build, fcntl.LOCK_EX)

        def second_process():
            with loader._build_lock(tmp_path):
                entered.set()

        waiter = threading.Thread(target=second_process, daemon=True)
        waiter.start()
        assert not entered.wait(0.5)  # waits while the build runs
        seen_lock.append((tmp_path / "lock").exists())
        (tmp_path / "lock").unlink()  # the build ends: torch removes its lock, then ours goes
        fcntl.flock(live_build, fcntl.LOCK_UN)
    assert entered.wait(10)
    waiter.join(10)
    assert seen_lock == [True]


@needs_cpp
def test_a_new_process_loads_the_kernels_past_a_stale_torch_lock():
    """The hang seen in CI: a build killed mid-way left `lock`, and the next suite waited on it."""
    name, _, _ = loader._flags()
    folder = loader._build_directory(name)
    assert folder is not None and loader._already_built(name)
    stale = folder / "lock"
    stale.touch()
    try:
        code = "from autolfads.accel.loader import load_kernels; assert load_kernels() is not None"
        done = subprocess.run([sys.executable, "-c", code], timeout=300, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert b"left by a build of the C++ kernels that was stopped" in done.stderr
        assert not stale.exists()
    except subprocess.TimeoutExpired:
        pytest.fail(f"a new process waited on {stale} for 300 s")
    finally:
        stale.unlink(missing_ok=True)


def test_each_installed_copy_builds_in_its_own_folder(monkeypatch, tmp_path):
    """Two checkouts sharing ~/.cache/torch_extensions must not rebuild over each other."""
    here, _, _ = loader._flags()
    monkeypatch.setattr(loader, "_CSRC", tmp_path / "csrc")
    elsewhere, _, _ = loader._flags()
    assert here != elsewhere and here.isidentifier() and elsewhere.isidentifier()
    assert here.startswith("autolfads_loops")
