"""Benchmark: training throughput of a PBT population, batched into shards or not (not a test).

K LFADS workers can be trained as one batched shard (a leading worker axis on every weight) or as K
separate one-worker shards, in one process or split over two. This script measures, for three model
sizes and K = 1, 2, 4, 8, 16, the training throughput (trial-samples per second summed over the
workers: K x trials trained / wall seconds) of four layouts:

    (a) one batched shard of K workers, one process at 2 threads;
    (b) K one-worker shards trained one after another, one process at 2 threads;
    (c) two processes x 1 thread, each a batched shard of K/2 workers, running concurrently;
    (d) two processes x 1 thread, each training K/2 one-worker shards one after another.

Every configuration runs in fresh 'spawn' processes, so the peak resident memory
(`ru_maxrss`, summed over the processes of (c)/(d)) is its own. Each process builds its shards, trains
one warm-up step per shard, waits at a barrier, then trains `--steps` steps per shard; the wall time
runs from the barrier to the last process done. Data are random Poisson counts of the right shape
(throughput does not depend on their values). A configuration whose predicted peak memory exceeds
`--max-mb` (default 80% of the memory available when it starts) is skipped and marked in the table:
the large size needs ~1.2 GB per worker in a step, so a batched shard of 16 needs ~20 GB.

Writes a markdown table to stdout and `bench/out/population.md`, JSON to `bench/out/population.json`,
and ends with the fastest layout per size at the largest K (this decides `pbt.workers_per_shard`).

    .venv/bin/python bench/population.py                 # full run, ~15-25 min on 2 idle cores
    .venv/bin/python bench/population.py --quick         # smoke run, < 1 min
    .venv/bin/python bench/population.py --sizes small --ks 4 16 --layouts a b --steps 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolfads.config import load_config
from autolfads.data import SessionData
from autolfads.data.tensors import SessionTensors, to_tensors
from autolfads.model.structure import LFADSStructure
from autolfads.train.fit import hps_from_config
from autolfads.train.shard import Shard, TrainSettings

# Model sizes: T bins, N channels, the LFADS widths, and the training batch size.
SIZES: dict[str, dict[str, int]] = {
    "small": dict(T=50, N=50, ic_enc_dim=32, ci_enc_dim=16, con_dim=16, co_dim=2, ic_dim=32,
                  gen_dim=64, fac_dim=16, batch=100),
    "medium": dict(T=100, N=50, ic_enc_dim=64, ci_enc_dim=32, con_dim=32, co_dim=2, ic_dim=64,
                   gen_dim=100, fac_dim=20, batch=100),  # the chaotic-RNN benchmark model
    "large": dict(T=140, N=100, ic_enc_dim=128, ci_enc_dim=64, con_dim=64, co_dim=4, ic_dim=128,
                  gen_dim=200, fac_dim=40, batch=256),
}  # fmt: skip

# Layout -> (processes, threads per process, batched shard per process?).
LAYOUTS: dict[str, tuple[int, int, bool]] = {
    "a": (1, 2, True),
    "b": (1, 2, False),
    "c": (2, 1, True),
    "d": (2, 1, False),
}
LAYOUT_TEXT = {
    "a": "1 proc x 2 thr, one shard of K",
    "b": "1 proc x 2 thr, K shards of 1 in turn",
    "c": "2 procs x 1 thr, a shard of K/2 each",
    "d": "2 procs x 1 thr, K/2 shards of 1 each in turn",
}
# What the fastest layout means for `pbt.workers_per_shard` (K workers in a population).
LAYOUT_RULE = {
    "a": "workers_per_shard = K (one batched shard), 1 process",
    "b": "workers_per_shard = 1, 1 process",
    "c": "workers_per_shard = K/2, 2 processes",
    "d": "workers_per_shard = 1, 2 processes",
}
OUT_DIR = Path(__file__).resolve().parent / "out"
CHILD_TIMEOUT_S = 3600.0
# Peak-memory model used to skip configurations that would not fit (calibrated on the large size,
# torch 2.13 CPU: ~1.2 GB per worker in a training step, ~0.7 GB per process besides).
PROCESS_MB = 700.0
BYTES_PER_TRIAL_BIN_WIDTH = 44.0


@dataclass(frozen=True)
class Job:
    """What one process of a configuration trains: `n_workers` workers of model `size`."""

    size: str
    n_workers: int
    batched: bool
    threads: int
    steps: int
    seed: int


# ----------------------------------------------------------------- one process (child)
def make_structure(size: str) -> LFADSStructure:
    """The LFADS structure of a named size (one session, encoder and read-out see all channels)."""
    s = SIZES[size]
    widths = {k: v for k, v in s.items() if k.endswith("_dim")}
    return LFADSStructure(
        encod_data_dims=(s["N"],),
        recon_data_dims=(s["N"],),
        encod_seq_len=s["T"],
        recon_seq_len=s["T"],
        **widths,
    )


def random_session(n_trials: int, t: int, n: int, seed: int) -> SessionData:
    """Poisson counts (n_trials, T, N) as the train split; a small valid split for form's sake."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(2.0, 0.1, size=(1, 1, n))

    def counts(b: int) -> np.ndarray:
        return rng.poisson(rates, size=(b, t, n)).astype(np.float32)

    train, valid = counts(n_trials), counts(10)
    return SessionData(
        path=Path(f"random_{t}x{n}.h5"),
        encod={"train": train, "valid": valid},
        recon={"train": train, "valid": valid},
    )


def session_tensors(n_trials: int, size: str, seed: int) -> list[SessionTensors]:
    """One session whose training split is exactly `n_trials` trials, on the CPU."""
    s = SIZES[size]
    return to_tensors([random_session(n_trials, s["T"], s["N"], seed)], "cpu")


def build_shards(job: Job) -> list[Shard]:
    """One batched shard of `job.n_workers` workers, or that many one-worker shards."""
    structure = make_structure(job.size)
    settings = TrainSettings(batch_size=SIZES[job.size]["batch"])
    cfg = load_config()
    if job.batched:
        return [Shard(structure, settings, hps_from_config(cfg, job.n_workers), "cpu", job.seed)]
    return [
        Shard(structure, settings, hps_from_config(cfg, 1), "cpu", job.seed + i)
        for i in range(job.n_workers)
    ]


def train_steps(shards: list[Shard], data: list[SessionTensors]) -> None:
    """One epoch over `data` for each shard in turn (epoch 0: the size of `data` sets the steps)."""
    for shard in shards:
        shard.train_epoch(data, epoch=0)


def run_job(job: Job, barrier: Any, results: Any) -> None:
    """Child process: build, warm up one step, meet the others at the barrier, time `steps` steps.

    Puts ('ok', dict) or ('error', traceback text) on `results`.
    """
    try:
        torch.set_num_threads(job.threads)
        batch = SIZES[job.size]["batch"]
        shards = build_shards(job)
        warmup = session_tensors(batch, job.size, job.seed)  # exactly one training step
        timed = session_tensors(batch * job.steps, job.size, job.seed + 1)  # exactly `steps` steps
        for shard in shards:
            shard.init_readout_biases(timed)
        train_steps(shards, warmup)
        barrier.wait(timeout=CHILD_TIMEOUT_S)
        start = time.monotonic()
        train_steps(shards, timed)
        end = time.monotonic()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        results.put(
            (
                "ok",
                {
                    "start": start,
                    "end": end,
                    "trials": job.n_workers * batch * job.steps,
                    "peak_mb": peak_kb / 1024.0,
                    "threads": torch.get_num_threads(),
                },
            )
        )
    except BaseException:  # noqa: BLE001 - report anything to the parent, then exit
        results.put(("error", traceback.format_exc()))
        barrier.abort()


# ----------------------------------------------------------------- one configuration (parent)
def collect(procs: list[Any], results: Any) -> list[dict[str, float]]:
    """Wait for one report per process; raise if one failed or died without reporting."""
    reports: list[dict[str, float]] = []
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while len(reports) < len(procs):
        try:
            status, payload = results.get(timeout=2.0)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"benchmark process died (exit codes {[p.exitcode for p in procs]}) "
                    "or timed out without reporting"
                ) from None
            continue
        if status == "error":
            raise RuntimeError(f"benchmark process failed:\n{payload}")
        reports.append(payload)
    return reports


def predicted_peak_mb(size: str, k: int, layout: str) -> float:
    """Rough peak resident memory of a configuration, summed over its processes.

    A training step keeps about 10 floats per trial, bin and unit of width (encoders, controller,
    generator, factors, read-out) for the backward pass, for every worker trained at once: the K/P
    workers of a batched shard, or one worker at a time.
    """
    s = SIZES[size]
    n_procs, _, batched = LAYOUTS[layout]
    width = 2 * s["ic_enc_dim"] + 2 * s["ci_enc_dim"] + s["con_dim"] + s["co_dim"]
    width += s["gen_dim"] + s["fac_dim"] + s["N"]
    worker_mb = BYTES_PER_TRIAL_BIN_WIDTH * s["batch"] * s["T"] * width / 2**20
    live = k // n_procs if batched else 1
    return n_procs * (PROCESS_MB + live * worker_mb)


def available_mb() -> float:
    """MemAvailable of /proc/meminfo in MB (infinite where there is no /proc/meminfo)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")


def skipped_row(size: str, k: int, layout: str, steps: int, reason: str) -> dict[str, Any]:
    """A row for a configuration not measured."""
    n_procs, threads, _ = LAYOUTS[layout]
    return {
        "size": size,
        "K": k,
        "layout": layout,
        "processes": n_procs,
        "threads_per_process": threads,
        "steps": steps,
        "batch_size": SIZES[size]["batch"],
        "wall_s": None,
        "samples_per_s": None,
        "speedup_vs_b": None,
        "peak_mb": None,
        "skipped": reason,
    }


def measure(size: str, k: int, layout: str, steps: int, seed: int) -> dict[str, Any]:
    """Throughput and peak memory of `k` workers of model `size` trained in `layout`."""
    n_procs, threads, batched = LAYOUTS[layout]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n_procs), ctx.Queue()
    jobs = [
        Job(size, k // n_procs, batched, threads, steps, seed + 1000 * i) for i in range(n_procs)
    ]
    procs = [ctx.Process(target=run_job, args=(job, barrier, results)) for job in jobs]
    for p in procs:
        p.start()
    try:
        reports = collect(procs, results)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    trials = sum(r["trials"] for r in reports)
    return {
        "size": size,
        "K": k,
        "layout": layout,
        "processes": n_procs,
        "threads_per_process": int(reports[0]["threads"]),
        "steps": steps,
        "batch_size": SIZES[size]["batch"],
        "wall_s": round(wall, 3),
        "samples_per_s": round(trials / wall, 1),
        "speedup_vs_b": None,
        "peak_mb": round(sum(r["peak_mb"] for r in reports), 1),
        "predicted_peak_mb": round(predicted_peak_mb(size, k, layout)),
    }


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Fill `speedup_vs_b`: samples/s over those of layout (b) at the same size and K."""
    base = {(r["size"], r["K"]): r["samples_per_s"] for r in rows if r["layout"] == "b"}
    for r in rows:
        ref = base.get((r["size"], r["K"]))
        ok = ref and r["samples_per_s"] is not None
        r["speedup_vs_b"] = round(r["samples_per_s"] / ref, 2) if ok else None


# ----------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    """Platform, CPU count and torch's build and thread settings (of this parent process)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": mp.cpu_count(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (size, K, layout); skipped configurations say why."""
    lines = [
        "| size | K | layout | procs x threads | samples/s | speed-up vs (b) | peak MB |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        rate = r.get("skipped") or _cell(r["samples_per_s"], ".0f")
        lines.append(
            f"| {r['size']} | {r['K']} | ({r['layout']}) | {r['processes']} x "
            f"{r['threads_per_process']} | {rate} | {_cell(r['speedup_vs_b'], '.2f')} | "
            f"{_cell(r['peak_mb'], '.0f')} |"
        )
    return "\n".join(lines)


def suggested_rule(rows: list[dict[str, Any]]) -> list[str]:
    """Per size, the fastest layout at the largest K measured."""
    lines = []
    measured = [r for r in rows if r["samples_per_s"] is not None]
    for size in dict.fromkeys(r["size"] for r in measured):
        mine = [r for r in measured if r["size"] == size]
        k = max(r["K"] for r in mine)
        best = max((r for r in mine if r["K"] == k), key=lambda r: r["samples_per_s"])
        skipped = [
            f"({r['layout']})"
            for r in rows
            if r["size"] == size and r["K"] == k and r["samples_per_s"] is None
        ]
        note = f" (not measured: {', '.join(skipped)}, too much memory)" if skipped else ""
        lines.append(
            f"- {size}: at K = {k} layout ({best['layout']}) is fastest "
            f"({best['samples_per_s']:.0f} samples/s, {best['peak_mb']:.0f} MB){note}: "
            f"{LAYOUT_RULE[best['layout']]}"
        )
    return lines


def write_report(rows: list[dict[str, Any]], args: argparse.Namespace, out_dir: Path) -> str:
    """Markdown and JSON into `out_dir`; returns the markdown."""
    command = shlex.join([sys.executable, *sys.argv])
    machine = machine_info()
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    layouts = "\n".join(f"- ({k}) {v}" for k, v in LAYOUT_TEXT.items() if k in args.layouts)
    text = "\n\n".join(
        [
            "# Population batching: training throughput",
            f"`{command}`\n\n{date}; {machine['platform']}, {machine['cpu_count']} CPUs, "
            f"torch {machine['torch']}; {args.steps} timed steps per shard after 1 warm-up step.",
            "Layouts:\n" + layouts,
            markdown_table(rows),
            "Suggested rule (fastest layout at the largest K):\n" + "\n".join(suggested_rule(rows)),
        ]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "population.md").write_text(text + "\n")
    payload = {
        "command": command,
        "date": date,
        "machine": machine,
        "steps": args.steps,
        "sizes": {name: SIZES[name] for name in args.sizes},
        "layouts": {k: LAYOUT_TEXT[k] for k in args.layouts},
        "rows": rows,
        "suggested_rule": suggested_rule(rows),
    }
    (out_dir / "population.json").write_text(json.dumps(payload, indent=2) + "\n")
    return text


# ----------------------------------------------------------------- command line
def parse_args() -> argparse.Namespace:
    """Command-line options; `--quick` overrides sizes, Ks and steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per shard")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--quick", action="store_true", help="smoke run: small, K = 1 2, 1 step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory of the results")
    parser.add_argument(
        "--max-mb",
        type=float,
        default=None,
        help="skip configurations predicted to need more (default: 80%% of MemAvailable)",
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.ks, args.steps = ["small"], [1, 2], 1
    if args.steps < 1 or any(k < 1 for k in args.ks):
        parser.error(f"--steps and --ks must be >= 1, got steps={args.steps}, ks={args.ks}")
    return args


def configurations(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(size, K, layout) to measure; the two-process layouts need an even K >= 2."""
    return [
        (size, k, layout)
        for size in args.sizes
        for k in args.ks
        for layout in args.layouts
        if LAYOUTS[layout][0] == 1 or (k >= 2 and k % 2 == 0)
    ]


def main() -> None:
    args = parse_args()
    configs = configurations(args)
    rows = []
    start = time.monotonic()
    for i, (size, k, layout) in enumerate(configs, start=1):
        limit = args.max_mb if args.max_mb is not None else 0.8 * available_mb()
        need = predicted_peak_mb(size, k, layout)
        if need > limit:
            reason = f"skipped: needs ~{need / 1024:.1f} GB > {limit / 1024:.1f} GB"
            row = skipped_row(size, k, layout, args.steps, reason)
            note = reason
        else:
            row = measure(size, k, layout, args.steps, args.seed)
            note = f"{row['samples_per_s']:.0f} samples/s, {row['peak_mb']:.0f} MB"
        rows.append(row)
        elapsed = time.monotonic() - start
        print(
            f"[{i}/{len(configs)} {elapsed:5.0f} s] {size} K={k} ({layout}): {note}",
            file=sys.stderr,
            flush=True,
        )
    add_speedups(rows)
    print(write_report(rows, args, args.out), flush=True)


if __name__ == "__main__":
    main()
