"""GPU check (issue 23): correctness and population throughput on one device, in one short command.

    python3 bench/gpu_check.py --device cuda            # the full check, < 8 min on one GPU
    python3 bench/gpu_check.py --device cpu --quick     # the same parts at small sizes, < 1 min

Parts, in order (each stops at its share of `--budget-s` and the table is still written):
  1. tests      `python -m pytest -m device --device DEVICE` on the files holding device-dependent
                tests (model forward/backward, shard training, optimiser, checkpoint load,
                posterior, the reference operations against the CPU): passed / failed / skipped.
  2. train      training throughput of the chaotic-RNN benchmark model (ic_enc 64, ci_enc 32,
                con 32, co 2, ic 64, gen 100, fac 20, batch 100, T 100, N 50; random Poisson counts)
                for K = 1, 4, 16, 64 workers in three layouts:
                  batched     one shard of K workers (one batched loop)
                  sequential  K one-worker shards trained one after another, all K resident
                  two-procs   two processes at once, each training K/2 one-worker shards in turn
                              (the usual two-models-per-GPU layout)
                Each layout trains one warm-up step (of its first shard), then `steps` steps per
                shard, timed between device synchronisations. samples/s = K x batch x steps / wall;
                s per worker-epoch = wall / (K x steps) x 32 (an epoch of the benchmark's 3,200
                training trials); peak = torch.cuda.max_memory_allocated (summed over the two
                processes). A layout predicted to overrun its share trains fewer steps, or is
                skipped and says so.
  3. posterior  50 posterior samples of 2,000 trials of a one-worker model (`session_posterior`):
                with its default chunks, and with 10,000-row chunks.
  4. run        `autolfads run --device DEVICE` end to end on simulated chaotic-RNN data (1,000
                trials): 16 workers, 4 epochs (two generations), inline backend, 50 samples.

Writes OUT/gpu_check.md (one markdown table with a header) and OUT/gpu_check.json after every part
(OUT: `--out`, default bench/out). Needs no Ray and imports none: with the package installed
without dependencies (or `src` on PYTHONPATH) and OmegaConf's wheel (README, "GPU").
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
if not (ROOT / "src" / "autolfads").is_dir():
    raise SystemExit(f"{ROOT}: not an autolfads checkout")
sys.path.insert(1, str(ROOT / "src"))  # run from a checkout without installing it

import numpy as np  # noqa: E402
import torch  # noqa: E402
from population import random_session  # noqa: E402

from autolfads.accel import accel_setting, accelerate  # noqa: E402
from autolfads.config import load_config  # noqa: E402
from autolfads.data.tensors import SessionTensors, to_tensors  # noqa: E402
from autolfads.model.lfads import LFADSNetwork  # noqa: E402
from autolfads.model.structure import LFADSStructure  # noqa: E402
from autolfads.outputs.posterior import session_posterior  # noqa: E402
from autolfads.train.fit import hps_from_config  # noqa: E402
from autolfads.train.shard import Shard, TrainSettings  # noqa: E402

# The chaotic-RNN benchmark model (bench/population.py's "medium") and a tiny one for --quick.
FULL_SIZE = dict(T=100, N=50, ic_enc_dim=64, ci_enc_dim=32, con_dim=32, co_dim=2, ic_dim=64,
                 gen_dim=100, fac_dim=20, batch=100)  # fmt: skip
QUICK_SIZE = dict(T=16, N=10, ic_enc_dim=8, ci_enc_dim=6, con_dim=6, co_dim=2, ic_dim=8,
                  gen_dim=16, fac_dim=4, batch=20)  # fmt: skip
EPOCH_TRIALS = 3200  # the chaotic-RNN benchmark's training trials (400 conditions x 10, 80 %)
LAYOUTS = ("batched", "sequential", "two-procs")
LAYOUT_TEXT = {
    "batched": "one shard of K",
    "sequential": "K shards of 1, in turn",
    "two-procs": "2 processes, K/2 shards of 1 each in turn",
}
# Shares of the budget: each part ends by this fraction of it (time a part leaves goes to the next).
PART_ENDS = {"tests": 0.22, "train": 0.62, "posterior": 0.72, "run": 1.0}
SPAWN_S = 25.0  # starting the two processes of `two-procs` (Python, torch, CUDA), allowed for


@dataclass(frozen=True)
class Plan:
    """What the check runs, for one device (`plan_for`)."""

    device: str
    quick: bool
    size: dict[str, int]
    ks: tuple[int, ...]
    steps: int
    posterior_trials: int
    posterior_samples: int
    posterior_rows: tuple[int | None, ...]  # max_rows of session_posterior; None = its default
    run_data: tuple[str, ...]  # `autolfads simulate chaotic-rnn` overrides
    run_args: tuple[str, ...]  # `autolfads run` overrides
    test_files: tuple[str, ...]
    budget_s: float


def device_test_files() -> tuple[str, ...]:
    """Test files (relative to the checkout) holding a test that takes `device` from
    tests/conftest.py: its signature names `device`, and its decorators do not give it."""
    signature = re.compile(r"^def test_\w+\([^)]*\bdevice\b", re.MULTILINE)

    def has_device_test(text: str) -> bool:
        blocks = text.split("\n\n")  # a test with its decorators, between blank lines
        return any(signature.search(b) and '"device"' not in b for b in blocks)

    files = [
        p for p in sorted((ROOT / "tests").rglob("test_*.py")) if has_device_test(p.read_text())
    ]
    return tuple(str(p.relative_to(ROOT)) for p in files)


def plan_for(device: str, quick: bool, budget_s: float | None) -> Plan:
    """The full check, or `quick`: the same parts at sizes a CPU runs in well under a minute."""
    run_common = ("pbt.backend=inline", "pbt.perturbation_interval=2", "pbt.burn_in_period=2")
    if quick:
        model = [f"model.{k}={v}" for k, v in QUICK_SIZE.items() if k.endswith("_dim")]
        return Plan(
            device, True, QUICK_SIZE, (1, 2, 4), 2, 60, 50, (None, 600),
            ("n_conditions=6", "trials_per_condition=5", "n_steps=12", "n_neurons=8"),
            (*run_common, "pbt.num_workers=4", "trainer.max_epochs=2", "trainer.samples=2",
             "datamodule.batch_size=8", "trainer.ramp_epochs=1", *model),
            ("tests/test_devices.py",), budget_s or 120.0,
        )  # fmt: skip
    return Plan(
        device, False, FULL_SIZE, (1, 4, 16, 64), 5, 2000, 50, (None, 10_000),
        ("n_conditions=100", "trials_per_condition=10"),
        (*run_common, "pbt.num_workers=16", "trainer.max_epochs=4", "trainer.samples=50"),
        device_test_files(), budget_s or 450.0,
    )  # fmt: skip


# ----------------------------------------------------------------- time budget
class TimeUp(Exception):
    """A part ran past its share of the budget."""


class Budget:
    """Absolute end times of the parts, from the script's start."""

    def __init__(self, total_s: float) -> None:
        self.start, self.total_s = time.monotonic(), total_s

    def end_of(self, part: str) -> float:
        return self.start + PART_ENDS[part] * self.total_s

    def left(self, part: str) -> float:
        return max(0.0, self.end_of(part) - time.monotonic())

    @contextmanager
    def alarm(self, part: str) -> Iterator[None]:
        """Raise TimeUp inside the block when the part's time is over (main thread, POSIX)."""

        def ring(signum: int, frame: Any) -> None:
            raise TimeUp(part)

        previous = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(part), 0.01))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------- helpers
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def reset_peak(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: str) -> float | None:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def structure_of(size: dict[str, int]) -> LFADSStructure:
    widths = {k: v for k, v in size.items() if k.endswith("_dim")}
    return LFADSStructure((size["N"],), (size["N"],), size["T"], size["T"], **widths)


def train_data(size: dict[str, int], n_trials: int, seed: int, device: str) -> list[SessionTensors]:
    """One session whose training split is exactly `n_trials` random-count trials, on `device`."""
    return to_tensors([random_session(n_trials, size["T"], size["N"], seed)], device)


def build_shards(size: dict[str, int], k: int, batched: bool, device: str) -> list[Shard]:
    """One batched shard of k workers, or k one-worker shards (the packaged default HPs)."""
    structure, settings = structure_of(size), TrainSettings(batch_size=size["batch"])
    cfg = load_config()
    if batched:
        return [Shard(structure, settings, hps_from_config(cfg, k), device, seed=0)]
    return [Shard(structure, settings, hps_from_config(cfg, 1), device, seed=i) for i in range(k)]


def time_training(
    size: dict[str, int], n_models: int, k_per_model: int, steps: int, device: str
) -> tuple[float, float | None]:
    """(wall s of `steps` steps of each shard in turn, peak MiB) after one warm-up step."""
    reset_peak(device)
    shards = build_shards(size, n_models * k_per_model, n_models == 1, device)
    warm = train_data(size, size["batch"], 1, device)  # one step
    timed = train_data(size, size["batch"] * steps, 2, device)  # `steps` steps
    for shard in shards:
        shard.init_readout_biases(timed)
    shards[0].train_epoch(warm, 0)
    sync(device)
    start = time.monotonic()
    for shard in shards:
        shard.train_epoch(timed, 0)  # ends by gathering its metrics: one synchronisation
    sync(device)
    wall = time.monotonic() - start
    peak = peak_mib(device)
    del shards
    reset_peak(device)
    return wall, peak


def train_row(k: int, layout: str, steps: int, batch: int, wall: float | None, **extra: Any):
    row: dict[str, Any] = {"part": "train", "K": k, "layout": layout, "steps": steps, **extra}
    row["wall_s"] = wall
    if wall:
        row["samples_per_s"] = k * batch * steps / wall
        row["s_per_worker_epoch"] = wall / (k * steps) * EPOCH_TRIALS / batch
    return row


# ----------------------------------------------------------------- part 1: tests
def part_tests(plan: Plan, budget: Budget, out: Path) -> list[dict[str, Any]]:
    junit = out / "gpu_check_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "device", "--device", plan.device, "-q",
           "-p", "no:cacheprovider", "--continue-on-collection-errors",
           f"--junitxml={junit}", *plan.test_files]  # fmt: skip
    start = time.monotonic()
    row: dict[str, Any] = {"part": "tests", "device": plan.device, "files": len(plan.test_files)}
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True,
            timeout=budget.left("tests"),
        )  # fmt: skip
        row["exit"] = proc.returncode
        row["tail"] = (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        row["status"] = "stopped: time"
    row["wall_s"] = time.monotonic() - start
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {n: int(suite.get(n, 0)) for n in ("tests", "failures", "errors", "skipped")}
        row.update(counts)
        row["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        row["failed_names"] = [
            f"{case.get('classname')}::{case.get('name')}"
            for case in suite.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        ]
        row.setdefault("status", "ok" if row["passed"] and not row["failed_names"] else "failed")
    else:
        row.setdefault("status", "no result")
    return [row]


# ----------------------------------------------------------------- part 2: training throughput
def part_train(plan: Plan, budget: Budget, out: Path) -> list[dict[str, Any]]:
    """Every K batched first (the layout this package runs), then every K in turn, then two
    processes: what runs short of time is the comparison, not the headline."""
    size, dev, batch = plan.size, plan.device, plan.size["batch"]
    rows: list[dict[str, Any]] = []
    last: dict[str, tuple[int, float]] = {}  # layout -> (K, s per step) of its last measurement
    first: float | None = None  # s per step of the smallest batched shard (K = 1)
    two_jobs: list[tuple[int, int, float]] = []
    configs = [(k, "batched") for k in plan.ks] + [(k, "sequential") for k in plan.ks if k > 1]
    for k, layout in configs:
        n_models = 1 if layout == "batched" else k
        if layout in last:  # at worst linear in K
            estimate: float | None = last[layout][1] * k / last[layout][0]
        elif first is not None:  # K models in turn: K steps of the smallest batched shard
            estimate = n_models * first
        else:
            estimate = None
        steps = fit_steps(plan.steps, estimate, budget.left("train") - SPAWN_S)
        if steps == 0:
            rows.append(train_row(k, layout, 0, batch, None, status="skipped: time"))
            continue
        try:
            with budget.alarm("train"):
                wall, peak = time_training(size, n_models, 1 if n_models > 1 else k, steps, dev)
        except TimeUp:
            rows.append(train_row(k, layout, steps, batch, None, status="stopped: time"))
            reset_peak(dev)
            continue
        except torch.cuda.OutOfMemoryError:
            rows.append(train_row(k, layout, steps, batch, None, status="out of memory"))
            reset_peak(dev)
            continue
        rows.append(train_row(k, layout, steps, batch, wall, status="ok", peak_mib=peak))
        last[layout] = (k, wall / steps)
        first = first or wall / steps
        if layout == "sequential":
            two_jobs.append((k, steps, wall / steps / k))
    planned = {k for k, _, _ in two_jobs}
    rows += [
        train_row(k, "two-procs", 0, batch, None, status="skipped: no sequential time to plan by")
        for k in plan.ks
        if k > 1 and k not in planned
    ]
    rows.extend(two_process_rows(plan, budget, two_jobs))
    for row in rows:  # speed-up over the K shards trained in turn
        base = "batched" if row["K"] == 1 else "sequential"
        ref = next((r for r in rows if r["K"] == row["K"] and r["layout"] == base), None)
        if ref and ref.get("samples_per_s") and row.get("samples_per_s"):
            row["vs_sequential"] = row["samples_per_s"] / ref["samples_per_s"]
    return sorted(rows, key=lambda r: (r["K"], LAYOUTS.index(r["layout"])))


def fit_steps(steps: int, per_step: float | None, left_s: float) -> int:
    """`steps`, or fewer when `steps` + 1 (the warm-up) steps of `per_step` s each would not fit
    in `left_s` with a margin; 0 when not even one step would. No estimate yet: `steps`."""
    if left_s <= 0:
        return 0
    if per_step is None:
        return steps
    return max(0, min(steps, int(left_s / (1.5 * per_step)) - 1))


def two_process_rows(
    plan: Plan, budget: Budget, jobs: list[tuple[int, int, float]]
) -> list[dict[str, Any]]:
    """Two processes at once, each training k/2 one-worker shards in turn, for each (k, steps,
    s per model-step measured in turn)."""
    batch = plan.size["batch"]
    left = budget.left("train") - SPAWN_S
    chosen, skipped = [], []
    for k, steps, model_step in jobs:
        # pessimistic: the two processes together no faster than the models trained in turn
        fit = fit_steps(steps, k * model_step, left)
        if fit:
            chosen.append((k, fit))
            left -= 1.5 * (fit + 1) * k * model_step
        else:
            skipped.append((k, 0))
    rows = [train_row(k, "two-procs", s, batch, None, status="skipped: time") for k, s in skipped]
    if not chosen:
        return rows
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    deadline = budget.end_of("train")
    procs = [
        ctx.Process(target=two_child, args=(r, chosen, plan.size, plan.device, barrier, results))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    reports: dict[int, list[dict[str, Any]]] = {}
    errors: dict[int, str] = {}
    while time.monotonic() < deadline:
        try:
            kind, _, k, payload = results.get(timeout=1.0)
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                break
            continue
        if kind == "ok":
            reports.setdefault(k, []).append(payload)
        else:
            errors.setdefault(k, payload)
        if sum(map(len, reports.values())) + len(errors) >= 2 * len(chosen):
            break
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
            p.join()
    for k, steps in chosen:
        parts = reports.get(k, [])
        if len(parts) == 2:
            wall = max(r["end"] for r in parts) - min(r["start"] for r in parts)
            peaks = [r["peak_mib"] for r in parts]
            peak = sum(peaks) if all(p is not None for p in peaks) else None
            rows.append(train_row(k, "two-procs", steps, batch, wall, status="ok", peak_mib=peak))
        else:
            status = (
                "error: " + errors[k].strip().splitlines()[-1] if k in errors else "stopped: time"
            )
            rows.append(train_row(k, "two-procs", steps, batch, None, status=status))
    return rows


def two_child(
    rank: int, jobs: list[tuple[int, int]], size: dict[str, int], device: str, barrier, results
) -> None:
    """One of the two processes: for each (k, steps), k/2 one-worker shards trained in turn."""
    torch.set_num_threads(1)
    for k, steps in jobs:
        try:
            n = k // 2 + (k % 2 if rank == 0 else 0)
            reset_peak(device)
            shards = build_shards(size, n, False, device)
            warm = train_data(size, size["batch"], 1, device)
            timed = train_data(size, size["batch"] * steps, 2 + rank, device)
            for shard in shards:
                shard.init_readout_biases(timed)
            shards[0].train_epoch(warm, 0)
            sync(device)
            barrier.wait(timeout=600)
            start = time.monotonic()
            for shard in shards:
                shard.train_epoch(timed, 0)
            sync(device)
            end = time.monotonic()
            report = {"start": start, "end": end, "peak_mib": peak_mib(device)}
            results.put(("ok", rank, k, report))
            del shards, warm, timed
            reset_peak(device)
        except BaseException:  # noqa: BLE001 - report anything to the parent, then stop
            results.put(("error", rank, k, traceback.format_exc()))
            barrier.abort()
            return


# ----------------------------------------------------------------- part 3: posterior
def part_posterior(plan: Plan, budget: Budget, out: Path) -> list[dict[str, Any]]:
    dev, n, s = plan.device, plan.posterior_trials, plan.posterior_samples
    torch.manual_seed(0)
    net = accelerate(LFADSNetwork(structure_of(plan.size), 1).to(dev))  # as a checkpoint loads
    counts = torch.as_tensor(random_session(n, plan.size["T"], plan.size["N"], 3).encod["train"])
    data = SessionTensors({"train": counts.to(dev)}, {"train": counts.to(dev)})
    warm = SessionTensors({"train": counts[:4].to(dev)}, {"train": counts[:4].to(dev)})
    rows = []
    for max_rows in plan.posterior_rows:
        default = 1000 if net.ops.name == "none" else 250
        rows_text = f"{max_rows or default}-row chunks" + (" (default)" if not max_rows else "")
        row: dict[str, Any] = {"part": "posterior", "trials": n, "samples": s, "chunks": rows_text}
        try:
            with budget.alarm("posterior"):
                session_posterior(net, warm, 0, s, max_rows=max_rows)
                reset_peak(dev)
                sync(dev)
                start = time.monotonic()
                result = session_posterior(net, data, 0, s, max_rows=max_rows)
                sync(dev)
                row["wall_s"] = time.monotonic() - start
            row["peak_mib"] = peak_mib(dev)
            finite = all(np.isfinite(v).all() for v in result["train"].values())
            row["status"] = "ok" if finite else "non-finite outputs"
        except TimeUp:
            row["status"] = "stopped: time"
        except torch.cuda.OutOfMemoryError:
            row["status"] = "out of memory"
        reset_peak(dev)
        rows.append(row)
    return rows


# ----------------------------------------------------------------- part 4: autolfads run
def child_env() -> dict[str, str]:
    """The environment of the commands run: this checkout's `src` first on PYTHONPATH."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env


def part_run(plan: Plan, budget: Budget, out: Path) -> list[dict[str, Any]]:
    work = out / "gpu_check_run"
    cli = [sys.executable, "-m", "autolfads.cli"]
    data = work / "data.h5"
    settings = dict(a.split("=", 1) for a in plan.run_args)
    trials = int(np.prod([int(a.split("=")[1]) for a in plan.run_data if "_condition" in a]))
    summary = (
        f"{settings['pbt.num_workers']} workers, {settings['trainer.max_epochs']} epochs, "
        f"inline, {settings['trainer.samples']} samples, {trials} trials"
    )
    row: dict[str, Any] = {"part": "run", "args": summary}
    work.mkdir(parents=True, exist_ok=True)
    try:
        sim = [*cli, "simulate", "chaotic-rnn", str(data), "--seed", "0", *plan.run_data]
        subprocess.run(sim, env=child_env(), capture_output=True, check=True, timeout=120)
        cmd = [*cli, "run", str(data), "-o", str(work / "out"), "--device", plan.device,
               "--overwrite", "--quiet", *plan.run_args]  # fmt: skip
        row["command"] = "autolfads run DATA -o OUT --device {} {}".format(
            plan.device, " ".join(plan.run_args)
        )
        start = time.monotonic()
        proc = subprocess.run(
            cmd, env=child_env(), capture_output=True, text=True, timeout=budget.left("run")
        )
        row["wall_s"] = time.monotonic() - start
        row["exit"] = proc.returncode
        row["tail"] = (proc.stdout + proc.stderr)[-3000:]
        zipped = (work / "out" / "autolfads.zip").is_file()
        row["status"] = "ok" if proc.returncode == 0 and zipped else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        row["status"] = "stopped: time"
    except subprocess.CalledProcessError as err:
        row["status"] = f"simulate failed: {err.stderr.decode()[-300:]}"
    return [row]


# ----------------------------------------------------------------- report
def machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "accel": accel_setting(),  # the CPU's operations (CUDA always runs the reference)
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_row(r: dict[str, Any]) -> str:
    if r["part"] == "tests":
        what = f"`pytest -m device --device {r.get('device')}`, {r['files']} files"
        if "tests" in r:
            result = f"{r['passed']} passed, {r['failures'] + r['errors']} failed, {r['skipped']} skipped"
            if r.get("failed_names"):
                result += ": " + ", ".join(n.split(".")[-1] for n in r["failed_names"][:5])
        else:
            result = r["status"]
        cells = [what, result, _num(r.get("wall_s"), ".1f"), "-", "-", "-", "-"]
    elif r["part"] == "train":
        what = f"K={r['K']} {r['layout']} ({LAYOUT_TEXT[r['layout']]}), {r['steps']} steps"
        cells = [what, r["status"], _num(r.get("wall_s"), ".2f"), _num(r.get("samples_per_s"), ".0f"),
                 _num(r.get("s_per_worker_epoch"), ".3f"), _num(r.get("peak_mib"), ".0f"),
                 _num(r.get("vs_sequential"), ".2f")]  # fmt: skip
    elif r["part"] == "posterior":
        what = f"{r['trials']} trials x {r['samples']} samples, {r['chunks']}"
        cells = [what, r["status"], _num(r.get("wall_s"), ".2f"), "-", "-",
                 _num(r.get("peak_mib"), ".0f"), "-"]  # fmt: skip
    else:
        what = f"`autolfads run` end to end: {r['args']}"
        cells = [what, r["status"], _num(r.get("wall_s"), ".1f"), "-", "-", "-", "-"]
    return "| " + " | ".join([r["part"], *cells]) + " |"


def markdown(report: dict[str, Any]) -> str:
    m, a = report["machine"], report["args"]
    where = ", ".join(f"{k} {v}" for k, v in m.items())
    head = [
        f"GPU check: `python3 bench/gpu_check.py --device {a['device']}"
        + (" --quick" if a["quick"] else "") + f"`, budget {a['budget_s']:.0f} s, "
        f"total {report['total_s']:.0f} s. {where}.",
        "",
        "| part | what | result | wall s | samples/s | s per worker-epoch | peak MiB | vs sequential |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    return "\n".join(head + [table_row(r) for r in report["rows"]]) + "\n"


def write(report: dict[str, Any], out: Path) -> str:
    report["total_s"] = time.monotonic() - report.pop("_start", time.monotonic())
    text = markdown(report)
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    return text


PARTS: dict[str, Callable[[Plan, Budget, Path], list[dict[str, Any]]]] = {
    "tests": part_tests,
    "train": part_train,
    "posterior": part_posterior,
    "run": part_run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU, < 1 min)")
    parser.add_argument("--budget-s", type=float, help="seconds in all (default 450; quick 120)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"), help="output folder")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    plan = plan_for(args.device, args.quick, args.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(plan.budget_s)
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    report: dict[str, Any] = {
        "args": {"device": args.device, "quick": args.quick, "budget_s": plan.budget_s},
        "plan": asdict(plan),
        "machine": machine(args.device),
        "rows": [],
    }
    for name in args.parts:
        start = time.monotonic()
        print(f"[gpu_check] {name} ({budget.left(name):.0f} s left for it)", flush=True)
        try:
            report["rows"].extend(PARTS[name](plan, budget, out))
        except Exception:  # noqa: BLE001 - a broken part is a row, and the rest still run
            report["rows"].append(_broken_row(name, traceback.format_exc()))
        print(f"[gpu_check] {name} done in {time.monotonic() - start:.1f} s", flush=True)
        write({**report, "_start": budget.start}, out)
    text = write({**report, "_start": budget.start}, out)
    print(text)
    print(f"[gpu_check] wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
    return 0


def _broken_row(part: str, trace: str) -> dict[str, Any]:
    status = "error: " + trace.strip().splitlines()[-1][:200]
    base: dict[str, Any] = {"part": part, "status": status, "trace": trace}
    if part == "tests":
        return {**base, "files": 0}
    if part == "train":
        return {**base, "K": 0, "layout": "batched", "steps": 0}
    if part == "posterior":
        return {**base, "trials": 0, "samples": 0, "chunks": "-"}
    return {**base, "args": ""}


if __name__ == "__main__":
    sys.exit(main())
