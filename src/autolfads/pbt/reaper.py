"""A watchdog that ends the processes of a private local Ray when the driver that started it dies.

A driver killed outright (SIGKILL, the OOM killer, SIGHUP when an SSH session closes) runs no
clean-up, and Ray's own fate-sharing misses some of its processes: the dashboard and runtime-env
agents survive the driver for good, ignoring SIGTERM. The reaper is a small process of its own,
in its own session (a signal to the driver's process group does not reach it):

1. `Reaper.start()` launches it just before `ray.init`. While the driver lives, it looks at the
   process table (/proc) every `POLL_S` seconds and remembers each (pid, start time) below the
   driver that started after the reaper itself (older children of the driver, say in a test
   session, are never touched), and never itself.
2. `ray_started()` tells it Ray is up: from then on only processes below those already seen (Ray's
   own: GCS, raylet, agents, actors) are added, not other children the driver starts later.
3. The driver holds the write end of the reaper's stdin. When it dies the kernel closes that end
   and the reaper reads end-of-file; `close()` after `ray.shutdown()` does the same on purpose.
   Either way the reaper sends SIGTERM to whatever it remembers that is still alive (same pid, same
   start time) and to their descendants, SIGKILL to what is left after `GRACE_S`, then exits.
   After a clean `ray.shutdown()` nothing is left and it kills nothing.

Without /proc (not Linux) `Reaper.start()` starts nothing. The reaper uses the standard library
only and runs with `python -I` from this file's path, so it starts in a few tens of milliseconds
and does not depend on how the driver found the package.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

__all__ = ["Reaper", "descendants", "has_proc", "process_table", "reap", "watch"]

#: Seconds between two looks at the process table while the driver lives.
POLL_S = 0.5
#: Seconds the remembered processes get to end on SIGTERM before SIGKILL.
GRACE_S = 1.0
#: The line `ray_started()` sends.
STARTED = b"started\n"

#: pid -> (parent pid, start time in clock ticks after boot, state letter)
ProcessTable = dict[int, tuple[int, int, str]]


def has_proc() -> bool:
    """Whether this system has a Linux-style /proc (the only process table the reaper reads)."""
    return os.path.exists("/proc/self/stat")


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of `pid`, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2 :].split()  # the command name may hold spaces and ")"
    return int(fields[1]), int(fields[19]), fields[0].decode()


def process_table() -> ProcessTable:
    """Every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            entry = _stat(int(name))
            if entry is not None:
                table[int(name)] = entry
    return table


def descendants(roots: Iterable[int], table: ProcessTable) -> set[int]:
    """Children, grandchildren, ... of `roots` in `table` (the roots themselves excluded)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(seen: dict[int, int], table: ProcessTable) -> set[int]:
    """The remembered processes that still run: same pid, same start time, not a zombie."""
    return {
        pid
        for pid, start in seen.items()
        if pid in table and table[pid][1] == start and table[pid][2] != "Z"
    }


def _remember(
    seen: dict[int, int], roots: Iterable[int], table: ProcessTable, since: int, me: int
) -> None:
    """Add to `seen` every descendant of `roots` started at or after `since`, except `me`."""
    for pid in descendants(roots, table):
        if pid != me and pid not in seen and table[pid][1] >= since:
            seen[pid] = table[pid][1]


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap(seen: dict[int, int], me: int, grace: float = GRACE_S) -> None:
    """SIGTERM the remembered processes still alive and their descendants; SIGKILL what is left
    after `grace` seconds; return once none of them runs (or after `grace` more seconds)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        table = process_table()
        _remember(seen, _alive(seen, table), table, 0, me)
        _signal_all(_alive(seen, table), sig)
        deadline = time.monotonic() + wait
        while _alive(seen, process_table()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(seen, process_table()):
            return


def watch(driver: int, commands: int, poll: float = POLL_S) -> None:
    """Remember the processes `driver` starts until it dies or `commands` (a file descriptor
    whose write end the driver holds) reaches end-of-file; then reap them (see the module notes)."""
    me = os.getpid()
    mine, boss = _stat(me), _stat(driver)
    if mine is None or boss is None:  # no /proc, or the driver is already gone
        return
    since, driver_start = mine[1], boss[1]
    seen: dict[int, int] = {}
    ray_is_up = False
    while True:
        table = process_table()
        driver_now = table.get(driver)
        if driver_now is None or driver_now[1] != driver_start or driver_now[2] == "Z":
            break  # dead even if a forked child still holds the pipe open
        roots = _alive(seen, table) | ({driver} if not ray_is_up else set())
        _remember(seen, roots, table, since, me)
        ready, _, _ = select.select([commands], [], [], poll)
        if ready:
            data = os.read(commands, 4096)
            if not data:
                break
            ray_is_up = ray_is_up or STARTED.strip() in data
    reap(seen, me)


class Reaper:
    """The driver's handle on its reaper process (see the module notes).

    Args:
        process: the reaper process, its stdin a pipe from this driver.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(cls) -> Reaper | None:
        """Start a reaper watching this process; None where there is no /proc or it cannot start
        (the run goes on without one)."""
        if not has_proc():
            return None
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            return None
        return cls(process)

    def ray_started(self) -> None:
        """Ray is up: from now on follow only Ray's processes, not other new children."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(STARTED)
            self.process.stdin.flush()
        except OSError:  # the reaper is gone; nothing to tell
            pass

    def close(self, timeout: float = 2 * GRACE_S + 5) -> None:
        """Ray has been shut down: let the reaper end any leftovers and exit. Safe to call twice."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if has_proc():
        watch(int(sys.argv[1]), sys.stdin.fileno())
