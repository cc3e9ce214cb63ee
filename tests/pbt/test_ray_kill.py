"""A driver killed outright leaves no Ray process behind, and its run resumes to the same result;
the private local Ray has no dashboard; the reaper (autolfads.pbt.reaper) on its own.

`autolfads run` runs here as a child process with its private local Ray (2 shards of 1 worker).
Its processes are found by walking /proc down from its pid, not by name, and matched by
(pid, start time) so that a reused pid never counts as a survivor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import TINY_MODEL

import autolfads
from autolfads.data.synthetic import simulate_to_file
from autolfads.pbt.reaper import descendants, has_proc, process_table

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not has_proc(), reason="needs /proc (Linux)")

#: 3 generations of 2 epochs (6 epochs per worker) whatever epoch count a generation's end means.
RUN = [
    *TINY_MODEL,
    "pbt.backend=ray",
    "pbt.num_workers=2",
    "pbt.workers_per_shard=1",
    "trainer.ramp_epochs=2",
    "pbt.burn_in_period=2",
    "pbt.perturbation_interval=2",
    "pbt.max_generations=3",
    "trainer.max_epochs=6",
    "datamodule.batch_size=25",
]
#: Large enough that a generation takes about a second, so the kill lands between generations.
DATA = ["n_conditions=20", "trials_per_condition=20", "n_steps=40", "n_neurons=30"]
GONE_WITHIN_S = 15.0
DASHBOARD_PORTS = range(8265, 8265 + 51)  # Ray's default dashboard port and its 50 retries

Process = tuple[int, int]  # (pid, start time): one process, never confused with a reused pid


# ----------------------------------------------------------------------------- processes


def tree(root: int) -> set[Process]:
    """Every process below `root` now, with its start time."""
    table = process_table()
    return {(pid, table[pid][1]) for pid in descendants([root], table)}


def running(processes: set[Process]) -> set[Process]:
    """Those of `processes` still running (same pid and start time, not a zombie)."""
    table = process_table()
    return {(p, s) for p, s in processes if p in table and table[p][1] == s and table[p][2] != "Z"}


def wait_gone(processes: set[Process], limit: float = GONE_WITHIN_S) -> tuple[set[Process], float]:
    """Wait up to `limit` seconds for `processes` to end: (survivors, seconds waited)."""
    t0 = time.monotonic()
    while running(processes) and time.monotonic() - t0 < limit:
        time.sleep(0.1)
    return running(processes), time.monotonic() - t0


def describe(processes: set[Process]) -> list[str]:
    out = []
    for pid, _ in sorted(processes):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid}: {command[:100]}")
        except OSError:
            out.append(f"{pid}: ?")
    return out


def child_env() -> dict[str, str]:
    """This environment, with this test's autolfads first on the child's path."""
    source = str(Path(autolfads.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}


def start_run(data: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`autolfads run` as a child in its own process group (signals to it spare pytest)."""
    command = [sys.executable, "-m", "autolfads.cli", "run", str(data), "-o", str(out)]
    return subprocess.Popen(
        [*command, "--quiet", *RUN, *extra],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def finish(*processes: subprocess.Popen[bytes]) -> list[set[Process]]:
    """Wait for runs to exit successfully; the processes seen below each of them meanwhile."""
    seen: list[set[Process]] = [set() for _ in processes]
    deadline = time.monotonic() + 300
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        for process, below in zip(processes, seen, strict=True):
            below |= tree(process.pid)
        time.sleep(0.1)
    for process in processes:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode(errors="replace")
        assert process.returncode == 0, output
    return seen


def listening_ports(pids: set[int]) -> set[int]:
    """TCP ports on which any of `pids` listens."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    ports = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                ports.add(inodes[link[8:-1]])
    return ports


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=DATA)
    return path


def kill_after_first_generation(data: Path, out: Path) -> dict:
    """Start a run, SIGKILL its driver once generation 0 is checkpointed, wait for its processes
    to end: what it had started, the ports they listened on, the survivors, the seconds waited,
    the generations finished."""
    process = start_run(data, out)
    history = out / "pbt_history.csv"  # written right after each generation's checkpoint
    deadline = time.monotonic() + 300
    while not history.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        output = process.communicate()[0].decode(errors="replace")
        pytest.fail(
            f"the run ended (status {process.returncode}) before it could be killed:\n{output}"
        )
    started = tree(process.pid)
    if not history.exists():
        process.kill()
        pytest.fail("generation 0 did not finish within 300 s")
    ports = listening_ports({process.pid, *(pid for pid, _ in started)})
    process.send_signal(signal.SIGKILL)
    survivors, waited = wait_gone(started)
    process.communicate()
    for pid, _ in survivors:  # reported by the test; not left to burden the machine
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return {
        "started": started,
        "ports": ports,
        "survivors": survivors,
        "waited": waited,
        "generations": pd.read_csv(history)["generation"].max() + 1,
        "finished": (out / "autolfads.zip").exists(),
    }


@pytest.fixture(scope="module")
def runs(data_file, tmp_path_factory) -> dict:
    """A run killed after generation 0; then, side by side, its resumption and the same run left
    alone in another folder (with the processes seen below each)."""
    killed_out = tmp_path_factory.mktemp("killed") / "out"
    whole_out = tmp_path_factory.mktemp("whole") / "out"
    killed = kill_after_first_generation(data_file, killed_out)
    whole, resumed = start_run(data_file, whole_out), start_run(data_file, killed_out, "--resume")
    seen = finish(whole, resumed)
    return {"killed": killed, "outs": (whole_out, killed_out), "seen": seen}


def same_outputs(a: Path, b: Path) -> None:
    """Exactly the same fitlog, PBT history and best model (weights and HPs)."""
    for name in ("fitlog.csv", "pbt_history.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(a / name), pd.read_csv(b / name), check_exact=True
        )
    left, right = (torch.load(p / "model.ckpt", weights_only=False) for p in (a, b))
    assert left["hps"] == right["hps"]
    assert left["state_dict"].keys() == right["state_dict"].keys()
    for key, value in left["state_dict"].items():
        assert torch.equal(value, right["state_dict"][key]), key


# ----------------------------------------------------------------------------- tests


def test_a_sigkilled_driver_leaves_no_ray_process_alive(runs):
    killed = runs["killed"]
    assert len(killed["started"]) >= 5, describe(killed["started"])  # GCS, raylet, agents, actors
    assert not killed["survivors"], f"alive {GONE_WITHIN_S:g} s after SIGKILL:\n" + "\n".join(
        describe(killed["survivors"])
    )
    print(f"every process of the killed run ended {killed['waited']:.1f} s after SIGKILL")


def test_a_private_local_ray_has_no_dashboard(runs):
    ports = runs["killed"]["ports"]
    assert ports, "found no listening socket of Ray's at all"
    assert not ports & set(DASHBOARD_PORTS), sorted(ports)


def test_finished_runs_leave_no_process_alive(runs):
    for seen in runs["seen"]:
        assert len(seen) >= 5, describe(seen)
        survivors, _ = wait_gone(seen, limit=5.0)
        assert not survivors, "\n".join(describe(survivors))


def test_resume_after_sigkill_gives_the_uninterrupted_result(runs):
    killed = runs["killed"]
    assert killed["generations"] < 3 and not killed["finished"], (
        "the run had finished its generations when it was killed: make DATA larger"
    )
    same_outputs(*runs["outs"])


# ----------------------------------------------------------------------------- the reaper alone

FAKE_DRIVER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from autolfads.pbt.reaper import Reaper

    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as from a terminal, even when run under nohup

    reaper = Reaper.start()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    sleeper = subprocess.Popen(["sleep", "300"], **quiet)  # out of the driver's group
    time.sleep(1.0)  # two looks at the process table
    reaper.ray_started()
    time.sleep(1.0)  # the reaper takes the news between two looks (a loaded machine is slow)
    later = subprocess.Popen(["sleep", "300"], **quiet)  # started after Ray: not followed
    print(sleeper.pid, later.pid, flush=True)
    time.sleep(300)
    """
)


@pytest.mark.parametrize("how", ["SIGKILL to the driver", "SIGHUP to its process group"])
def test_the_reaper_ends_what_a_dead_driver_started(how):
    driver = subprocess.Popen(
        [sys.executable, "-c", FAKE_DRIVER],
        env=child_env(),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert driver.stdout is not None
    started: set[Process] = set()
    try:
        sleeper_pid, later_pid = map(int, driver.stdout.readline().split())
        started = tree(driver.pid)
        assert {pid for pid, _ in started} >= {sleeper_pid, later_pid}
        assert len(started) == 3, describe(started)  # the reaper, the sleeper, the later one
        later = {p for p in started if p[0] == later_pid}
        if how.startswith("SIGKILL"):
            driver.kill()
        else:
            os.killpg(driver.pid, signal.SIGHUP)
        driver.wait(timeout=30)
        survivors, waited = wait_gone(started - later, limit=5.0)
        assert not survivors, "\n".join(describe(survivors))
        assert waited < 3.0
        assert running(later)  # the driver's own child, started after Ray was up, is left alone
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()
        for pid, _ in running(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


CLEAN_DRIVER = textwrap.dedent(
    """
    import subprocess, time
    from autolfads.pbt.reaper import Reaper

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    reaper = Reaper.start()
    leftover = subprocess.Popen(["sleep", "300"], **quiet)  # "Ray's"
    time.sleep(1.0)
    reaper.ray_started()
    other = subprocess.Popen(["sleep", "300"], **quiet)
    t0 = time.monotonic()
    reaper.close()
    took = time.monotonic() - t0
    print(leftover.poll(), other.poll(), reaper.process.returncode, took)
    leftover.kill()
    other.kill()
    """
)


def test_closing_the_reaper_ends_ray_leftovers_only_and_returns():
    result = subprocess.run(
        [sys.executable, "-c", CLEAN_DRIVER],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    leftover, other, reaper_status, took = result.stdout.split()
    assert leftover == str(-signal.SIGTERM)  # the reaper ended it ...
    assert other == "None"  # ... and left the driver's later child alone
    assert reaper_status == "0"
    assert float(took) < 3.0
