"""Benchmark: the fraction of the fp32 GEMM rate an LFADS training step achieves (not a test).

Issue #8 (speed). In one run, on the CPU, this script measures:

1. The GEMM rate: a fp32 `torch.matmul` of two n x n matrices (n = `--gemm-n`, 2048), best of
   `--gemm-repeats`, in GFLOP/s (2 n^3 FLOPs), at all cores (1 process, `os.cpu_count()` threads), at
   1 thread (the per-process reference of the two-process layout), and in 2 processes x 1 thread at
   once (summed). It is measured before and after the training steps; the table uses the higher of
   the two (the machine's rate when it is not disturbed).
2. The training-step throughput of K workers of the medium model (the chaotic-RNN benchmark size of
   `bench/population.py`: T 100, N 50, ic_enc 64, ci_enc 32, con 32, co 2, ic 64, gen 100, fac 20,
   batch 100 per worker), in the shard layouts the backend can choose:
       (a) one process at 2 threads training one batched shard of K workers;
       (c) two processes x 1 thread, each a batched shard of K/2 workers, at the same time (K even).
   Every configuration runs in fresh 'spawn' processes (as in `bench/population.py`, whose model
   sizes, shard building and process reporting this script imports). Each process counts the FLOPs
   of one step, trains one warm-up step, waits at a barrier, then trains `--steps` timed steps; the
   wall time runs from the barrier to the last process done. s/step = wall / steps; samples/s =
   K x batch x steps / wall; s/worker-epoch = s/step x (1600 / batch) / K, the wall time per worker
   of an epoch of 1600 training trials (16 steps of 100) when K workers train together.
3. The FLOPs of one training step (forward, backward, optimiser), counted by
   `torch.utils.flop_counter.FlopCounterMode` (matmuls only, 2 FLOPs per multiply-add; elementwise
   work, reductions, random numbers and the Adam update are not counted). Achieved GFLOP/s = FLOPs
   per step / s per step (for (c): both processes' FLOPs over the time of one concurrent step), and
   fraction of GEMM rate = achieved / the all-core GEMM rate measured in the same run, for both
   layouts (the JSON also gives (c) against the 2 x 1-thread GEMM rate).

FLOP count check. The count runs the reference operations of `autolfads.model` (plain
autograd: aten `bmm`, `baddbmm` and `mm`, which FlopCounterMode counts); in-place matmuls it
would miss are registered here (`IN_PLACE_GEMMS`). With that,
the counted FLOPs equal `hand_count_flops` (each product of the network counted by hand, its backward
twice its forward except the encoders' input projections of the data, weight gradient only) exactly:
checked for the medium model at K = 1 (batch 20 and 100) and K = 4 (batch 20), and re-checked on every
run (the report lists counted / hand per K). Medium, K = 1, batch 100: 6.16 GFLOP per step (5.31
without `baddbmm_`); the count is linear in K. Since session 6 the counted FLOPs exceed the hand
count by 0.1 % (1.0010): on the PyTorch path, where they are counted, the generator bias's gradient
is one more row of the matmul that gives W_ug's ([u_t, 1]^T d/d(gen_in_t), 2 T B 3G FLOPs per
worker), a sum the hand count (the network's products only) leaves out.

Writes a markdown table to stdout and `bench/out/gemm_fraction.md`, JSON to
`bench/out/gemm_fraction.json`.

    .venv/bin/python bench/gemm_fraction.py              # full run: K 1 4 16 32, layouts a c, 3 steps
    nice -n 10 .venv/bin/python bench/gemm_fraction.py --quick   # smoke run: K 1 4, 1 step
    .venv/bin/python bench/gemm_fraction.py --ks 16 32 --layouts c --steps 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
import population as pop  # noqa: E402

from autolfads.accel import loader  # noqa: E402
from autolfads.data.tensors import SessionTensors  # noqa: E402
from autolfads.model.ops import REFERENCE  # noqa: E402
from autolfads.train.shard import Shard  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
LAYOUTS = ("a", "c")  # the layouts of `bench/population.py` the population backend can choose
EPOCH_TRIALS = 1600  # training trials per worker-epoch (chaotic-RNN benchmark: 16 steps of 100)


def _baddbmm_flops(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
    """FLOPs of self += a @ b, a (K, M, L), b (K, L, P): 2 K M L P (from shapes, as the counter passes)."""
    k, m, inner = a_shape
    return 2 * k * m * inner * b_shape[-1]


def _addmm_flops(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
    """FLOPs of self += a @ b with a (M, L), b (L, P): 2 M L P."""
    m, inner = a_shape
    return 2 * m * inner * b_shape[-1]


# In-place matmuls FlopCounterMode's registry misses (its formulas are per overload packet, and
# `aten.baddbmm_` is a packet of its own); same FLOPs as the out-of-place forms.
IN_PLACE_GEMMS = {torch.ops.aten.baddbmm_: _baddbmm_flops, torch.ops.aten.addmm_: _addmm_flops}
FLOP_CHECK_TOLERANCE = 0.01  # counted vs hand FLOPs: relative difference reported as a mismatch


@dataclass(frozen=True)
class GemmJob:
    """One process of a GEMM measurement: `repeats` n x n fp32 matmuls at `threads` threads."""

    n: int
    threads: int
    repeats: int


@dataclass(frozen=True)
class StepJob:
    """One process of a step measurement: a batched shard of `n_workers` workers of model `size`."""

    size: str
    n_workers: int
    threads: int
    steps: int
    seed: int


# ----------------------------------------------------------------- FLOPs
def forward_macs(size: str) -> dict[str, int]:
    """Multiply-adds of one forward pass of one worker of model `size`, by part (B trials, T bins).

    "data_projections": the encoders' input projections of the data (both directions of both
    encoders); "recurrences": the encoders' recurrences (both directions of both encoders) and
    the controller-generator loop's products, the controller's input projection included (done
    inside the loop since session 8); "other": every other product of the network.
    """
    s = pop.SIZES[size]
    b, t, n = s["batch"], s["T"], s["N"]
    e_ic, e_ci, c, u = s["ic_enc_dim"], s["ci_enc_dim"], s["con_dim"], s["co_dim"]
    ic, g, f = s["ic_dim"], s["gen_dim"], s["fac_dim"]
    loop_step = (
        g * 3 * c + 3 * c * c + c * 2 * u + u * 3 * g + 3 * g * g
    )  # fb, con, co, co->gen, gen
    recurrences = (
        2 * t * b * 3 * e_ic**2  # IC encoder recurrence, both directions
        + 2 * t * b * 3 * e_ci**2  # controller-input encoder recurrence, both directions
        + t * b * loop_step  # controller-generator loop
        + b * t * 2 * e_ci * 3 * c  # controller input projection (inside the loop)
    )
    other = (
        b * 2 * e_ic * 2 * ic  # IC posterior
        + b * ic * g  # IC -> initial generator state
        + g * f * 3 * c  # factors -> controller weights folded into one (G, 3C) map
        + b * t * g * f  # factors
        + b * t * f * n  # read-out
    )
    return {
        "data_projections": 2 * b * t * n * 3 * (e_ic + e_ci),
        "recurrences": recurrences,
        "other": other,
    }


def hand_count_flops(size: str, k: int) -> int:
    """Matmul FLOPs of one training step of K workers of model `size`, by hand (the counter's check).

    2 FLOPs per multiply-add. Forward: every product of the network for B trials and T bins (Poisson
    read-out, one parameter per channel). Backward: each product costs twice its forward (gradient
    wrt its input and wrt its weight), except the encoders' input projections, whose input is data
    (weight gradient only). The optimiser has no matmuls.
    """
    m = forward_macs(size)
    return 2 * k * (2 * m["data_projections"] + 3 * (m["recurrences"] + m["other"]))


def hand_count_loop_flops(size: str, k: int) -> int:
    """Matmul FLOPs of the recurrent loops alone in one training step of K workers of model `size`.

    The products the C++ loops compute inside their time loops: the encoders' recurrences (both
    directions of both encoders) and every product of the controller-generator step (since
    session 8 with the controller's input projection), forward, and
    in the backward their input gradients and (since session 8) their weight gradients, each step's
    share added inside the backward loop (twice the forward FLOPs in all); and (since session 7)
    the encoders' input projections of the data, forward and (since session 8) their weight
    gradients in the backward (counted, as in `hand_count_flops`, without the bias column's
    multiply-adds). Not counted here: the factors, the read-out and the other products outside
    the recurrences.
    """
    m = forward_macs(size)
    return 2 * k * (3 * m["recurrences"] + 2 * m["data_projections"])


LOOP_KERNELS = (
    "gru_sequence_forward",
    "gru_sequence_backward",
    "controlled_forward",
    "controlled_backward",
)


class TimedKernels:
    """The C++ kernels module with the time spent in the recurrent loops' calls added up."""

    def __init__(self, module: Any) -> None:
        self.module, self.seconds = module, 0.0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.module, name)
        if name not in LOOP_KERNELS:
            return target

        def timed(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return target(*args)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def count_step_flops(shards: Sequence[Shard], data: Sequence[SessionTensors]) -> int:
    """Matmul FLOPs of one training step (one batch: `data` holds exactly one batch of trials).

    Counted on the reference operations (each shard's ops swapped for the count): the C++ loops
    of `autolfads.accel` call BLAS directly, out of FlopCounterMode's sight, for the same products.
    """
    saved = [(shard.net.ops, shard.optimizer.ops) for shard in shards]
    for shard in shards:
        shard.net.ops = shard.optimizer.ops = REFERENCE
    try:
        with FlopCounterMode(display=False, custom_mapping=IN_PLACE_GEMMS) as counter:
            pop.train_steps(list(shards), list(data))
    finally:
        for shard, (net_ops, opt_ops) in zip(shards, saved, strict=True):
            shard.net.ops, shard.optimizer.ops = net_ops, opt_ops
    return int(counter.get_total_flops())


# ----------------------------------------------------------------- child processes
def gemm_child(job: GemmJob, barrier: Any, results: Any) -> None:
    """Child process: best wall time of `repeats` n x n matmuls after one warm-up, started together."""
    try:
        torch.set_num_threads(job.threads)
        rng = torch.Generator().manual_seed(0)
        a = torch.randn(job.n, job.n, generator=rng)
        b = torch.randn(job.n, job.n, generator=rng)
        out = torch.empty(job.n, job.n)
        torch.matmul(a, b, out=out)  # warm-up
        barrier.wait(timeout=pop.CHILD_TIMEOUT_S)
        times = []
        for _ in range(job.repeats):
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
        results.put(("ok", {"best_s": min(times), "threads": torch.get_num_threads()}))
    except BaseException:  # noqa: BLE001 - report anything to the parent, then exit
        results.put(("error", traceback.format_exc()))
        barrier.abort()


def step_child(job: StepJob, barrier: Any, results: Any) -> None:
    """Child process: count one step's FLOPs, warm up one step, meet the others, time `steps` steps."""
    try:
        torch.set_num_threads(job.threads)
        batch = pop.SIZES[job.size]["batch"]
        shards = pop.build_shards(
            pop.Job(job.size, job.n_workers, True, job.threads, job.steps, job.seed)
        )
        counted = pop.session_tensors(batch, job.size, job.seed)  # exactly one step each
        warmup = pop.session_tensors(batch, job.size, job.seed + 1)
        timed = pop.session_tensors(batch * job.steps, job.size, job.seed + 2)
        for shard in shards:
            shard.init_readout_biases(timed)
        flops = count_step_flops(shards, counted)
        pop.train_steps(shards, warmup)
        kernels = loader.load_kernels()
        timer = TimedKernels(kernels) if kernels is not None else None
        loader._state["module"] = timer if timer is not None else kernels
        barrier.wait(timeout=pop.CHILD_TIMEOUT_S)
        start = time.monotonic()
        pop.train_steps(shards, timed)
        end = time.monotonic()
        results.put(
            (
                "ok",
                {
                    "start": start,
                    "end": end,
                    "flops_per_step": flops,
                    "loop_flops_per_step": hand_count_loop_flops(job.size, job.n_workers),
                    "loop_s": timer.seconds if timer is not None else None,
                    "threads": torch.get_num_threads(),
                    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                },
            )
        )
    except BaseException:  # noqa: BLE001 - report anything to the parent, then exit
        results.put(("error", traceback.format_exc()))
        barrier.abort()


def run_processes(target: Callable[..., None], jobs: Sequence[Any]) -> list[dict[str, float]]:
    """Run `target(job, barrier, results)` for each job in its own spawned process; their reports."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(job, barrier, results)) for job in jobs]
    for p in procs:
        p.start()
    try:
        return pop.collect(procs, results)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()


# ----------------------------------------------------------------- measurements (parent)
def gemm_rates(n: int, repeats: int) -> dict[str, float]:
    """fp32 GEMM GFLOP/s: all cores in one process, one thread, and 2 processes x 1 thread (summed)."""
    cores = os.cpu_count() or 1

    def rate(processes: int, threads: int) -> float:
        reports = run_processes(gemm_child, [GemmJob(n, threads, repeats)] * processes)
        return sum(2 * n**3 / r["best_s"] / 1e9 for r in reports)

    return {
        "all_cores": round(rate(1, cores), 2),
        "one_thread": round(rate(1, 1), 2),
        "two_procs_one_thread": round(rate(2, 1), 2),
    }


def best_rates(*measurements: dict[str, float]) -> dict[str, float]:
    """The higher value of each rate over several measurements."""
    return {key: max(m[key] for m in measurements) for key in measurements[0]}


def measure_steps(size: str, k: int, layout: str, steps: int, seed: int) -> dict[str, Any]:
    """Step time, throughput and FLOPs of K workers of model `size` trained in `layout`."""
    n_procs, threads, _ = pop.LAYOUTS[layout]
    jobs = [StepJob(size, k // n_procs, threads, steps, seed + 1000 * i) for i in range(n_procs)]
    reports = run_processes(step_child, jobs)
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    batch = pop.SIZES[size]["batch"]
    flops = sum(r["flops_per_step"] for r in reports)  # of one (concurrent) step of all K workers
    s_per_step = wall / steps
    return {
        "K": k,
        "layout": layout,
        "processes": n_procs,
        "threads_per_process": int(reports[0]["threads"]),
        "steps": steps,
        "batch_size": batch,
        "wall_s": round(wall, 3),
        "s_per_step": round(s_per_step, 4),
        "samples_per_s": round(k * batch * steps / wall, 1),
        "s_per_worker_epoch": round(s_per_step * (EPOCH_TRIALS / batch) / k, 4),
        "gflop_per_step": round(flops / 1e9, 3),
        "hand_gflop_per_step": round(hand_count_flops(size, k) / 1e9, 3),
        "flops_counted_over_hand": round(flops / hand_count_flops(size, k), 4),
        "achieved_gflops": round(flops / 1e9 / s_per_step, 2),
        **loop_rates(reports, steps, wall),
        "peak_mb": round(sum(r["peak_mb"] for r in reports), 1),
    }


def loop_rates(reports: Sequence[dict[str, Any]], steps: int, wall: float) -> dict[str, Any]:
    """The recurrent loops' own rate: each process's loop FLOPs over its time inside the loops,
    summed over the processes (they run at once), and the loops' share of the wall time."""
    if any(r["loop_s"] is None or r["loop_s"] <= 0 for r in reports):
        return {"loop_gflops": None, "loop_share_of_wall": None}  # no C++ loops in this run
    return {
        "loop_gflops": round(
            sum(r["loop_flops_per_step"] * steps / r["loop_s"] for r in reports) / 1e9, 2
        ),
        "loop_share_of_wall": round(sum(r["loop_s"] for r in reports) / len(reports) / wall, 3),
    }


def add_fractions(rows: list[dict[str, Any]], gemm: dict[str, float]) -> None:
    """Fraction of the all-core GEMM rate (both layouts), and of the same layout's GEMM rate."""
    same_layout = {"a": gemm["all_cores"], "c": gemm["two_procs_one_thread"]}
    for r in rows:
        if r.get("skipped"):
            continue
        r["fraction_of_gemm"] = round(r["achieved_gflops"] / gemm["all_cores"], 4)
        if r.get("loop_gflops") is not None:
            r["loop_fraction_of_gemm"] = round(r["loop_gflops"] / gemm["all_cores"], 4)
        r["fraction_of_same_layout_gemm"] = round(
            r["achieved_gflops"] / same_layout[r["layout"]], 4
        )


def skipped_row(k: int, layout: str, steps: int, reason: str) -> dict[str, Any]:
    """A row for a configuration not measured (predicted not to fit in memory)."""
    n_procs, threads, _ = pop.LAYOUTS[layout]
    return {
        "K": k,
        "layout": layout,
        "processes": n_procs,
        "threads_per_process": threads,
        "steps": steps,
        "skipped": reason,
    }


# ----------------------------------------------------------------- report
def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, fmt)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (K, layout); skipped configurations say why."""
    lines = [
        "| K | layout | s/step | samples/s | s/worker-epoch | GFLOP/step | achieved GFLOP/s "
        "| fraction of GEMM rate | loops: share of wall, GFLOP/s, fraction of GEMM rate |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        layout = f"({r['layout']}) {r['processes']} x {r['threads_per_process']} thr"
        if r.get("skipped"):
            lines.append(f"| {r['K']} | {layout} | {r['skipped']} | | | | | | |")
            continue
        loops = "-"
        if r.get("loop_gflops") is not None:
            loops = (
                f"{r['loop_share_of_wall']:.0%}, {r['loop_gflops']:.1f}, "
                f"{r['loop_fraction_of_gemm']:.1%}"
            )
        lines.append(
            f"| {r['K']} | {layout} | {_cell(r, 's_per_step', '.3f')} | "
            f"{_cell(r, 'samples_per_s', '.0f')} | {_cell(r, 's_per_worker_epoch', '.3f')} | "
            f"{_cell(r, 'gflop_per_step', '.2f')} | {_cell(r, 'achieved_gflops', '.1f')} | "
            f"{_cell(r, 'fraction_of_gemm', '.1%')} | {loops} |"
        )
    return "\n".join(lines)


def gemm_text(n: int, repeats: int, before: dict, after: dict, best: dict, cores: int) -> str:
    """The GEMM rates as a markdown list."""

    def line(key: str, label: str) -> str:
        return (
            f"- {label}: **{best[key]:.1f} GFLOP/s** "
            f"(before the steps {before[key]:.1f}, after {after[key]:.1f})"
        )

    return "\n".join(
        [
            f"fp32 GEMM rate ({n} x {n} @ {n} x {n} `torch.matmul`, best of {repeats}; "
            "the higher of the measurements before and after the steps is used):",
            line("all_cores", f"all {cores} cores (1 process x {cores} threads)"),
            line("one_thread", "1 thread"),
            line("two_procs_one_thread", "2 processes x 1 thread at once (summed)"),
        ]
    )


def flop_check_text(rows: list[dict[str, Any]]) -> str:
    """Counted vs hand-estimated FLOPs per step for each measured row."""
    measured = [r for r in rows if not r.get("skipped")]
    parts = [
        f"K={r['K']} ({r['layout']}): {r['gflop_per_step']:.3f} vs {r['hand_gflop_per_step']:.3f} "
        f"GFLOP ({r['flops_counted_over_hand']:.4f})"
        for r in measured
    ]
    bad = [r for r in measured if abs(r["flops_counted_over_hand"] - 1.0) > FLOP_CHECK_TOLERANCE]
    verdict = (
        f"**MISMATCH** in {len(bad)} row(s): the counter misses or adds matmuls"
        if bad
        else "They agree"
    )
    return (
        "FLOPs per step, FlopCounterMode vs hand count (counted / hand): "
        + "; ".join(parts)
        + f". {verdict}."
    )


def write_report(
    rows: list[dict[str, Any]], gemm: dict[str, dict[str, float]], args: argparse.Namespace
) -> str:
    """Markdown and JSON into `args.out`; returns the markdown."""
    command = shlex.join([sys.executable, *sys.argv])
    machine = pop.machine_info()
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    s = pop.SIZES[args.size]
    model = ", ".join(f"{k} {v}" for k, v in s.items())
    layouts = "\n".join(f"- ({k}) {pop.LAYOUT_TEXT[k]}" for k in args.layouts)
    text = "\n\n".join(
        [
            "# Training step vs the machine's GEMM rate",
            f"`{command}`\n\n{date}; {machine['platform']}, {machine['cpu_count']} CPUs, "
            f"torch {machine['torch']}, load average {machine['load_average_1_5_15min']} at the end.",
            f"Model: {args.size} ({model}); {args.steps} timed step(s) after 1 warm-up step; "
            f"s/worker-epoch for {EPOCH_TRIALS} training trials per worker.",
            gemm_text(
                args.gemm_n,
                args.gemm_repeats,
                gemm["before"],
                gemm["after"],
                gemm["best"],
                machine["cpu_count"],
            ),
            "Layouts:\n" + layouts,
            markdown_table(rows),
            "Fraction of GEMM rate = achieved GFLOP/s / the all-core GEMM rate above (for (c): both "
            "processes together). FLOPs count matmuls only. Loops: the C++ recurrent loops alone "
            "(encoders' recurrences and the controller-generator step with the controller's "
            "input projection, forward and backward with their weight gradients, and the "
            "encoders' input projections and their weight gradients, all done inside the loops; "
            "hand-counted FLOPs over the time inside those calls, summed over the processes), "
            "their mean share of the wall time, and that rate over the all-core GEMM rate.",
            flop_check_text(rows),
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gemm_fraction.md").write_text(text + "\n")
    payload = {
        "command": command,
        "date": date,
        "machine": machine,
        "size": args.size,
        "model": s,
        "steps": args.steps,
        "epoch_trials": EPOCH_TRIALS,
        "gemm": {"n": args.gemm_n, "repeats": args.gemm_repeats, **gemm},
        "layouts": {k: pop.LAYOUT_TEXT[k] for k in args.layouts},
        "rows": rows,
    }
    (args.out / "gemm_fraction.json").write_text(json.dumps(payload, indent=2) + "\n")
    return text


# ----------------------------------------------------------------- command line
def parse_args() -> argparse.Namespace:
    """Command-line options; `--quick` sets K = 1 4, 1 step and 2 GEMM repeats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--quick", action="store_true", help="smoke run: K = 1 4, 1 step")
    parser.add_argument("--size", choices=list(pop.SIZES), default="medium")
    parser.add_argument("--gemm-n", type=int, default=2048, help="GEMM matrix size")
    parser.add_argument("--gemm-repeats", type=int, default=5, help="GEMM repeats (best of)")
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
        args.ks, args.steps, args.gemm_repeats = [1, 4], 1, 2
    if args.steps < 1 or args.gemm_repeats < 1 or args.gemm_n < 1 or any(k < 1 for k in args.ks):
        parser.error(
            "--steps, --gemm-repeats, --gemm-n and --ks must be >= 1, got "
            f"steps={args.steps}, gemm_repeats={args.gemm_repeats}, gemm_n={args.gemm_n}, "
            f"ks={args.ks}"
        )
    return args


def configurations(args: argparse.Namespace) -> list[tuple[int, str]]:
    """(K, layout) to measure; the two-process layout needs an even K >= 2."""
    return [
        (k, layout)
        for k in args.ks
        for layout in args.layouts
        if pop.LAYOUTS[layout][0] == 1 or (k >= 2 and k % 2 == 0)
    ]


def log(message: str, start: float) -> None:
    """A progress line on stderr with the elapsed time."""
    print(f"[{time.monotonic() - start:5.0f} s] {message}", file=sys.stderr, flush=True)


def main() -> None:
    args = parse_args()
    start = time.monotonic()
    before = gemm_rates(args.gemm_n, args.gemm_repeats)
    log(f"GEMM GFLOP/s before: {before}", start)
    rows = []
    configs = configurations(args)
    for i, (k, layout) in enumerate(configs, start=1):
        limit = args.max_mb if args.max_mb is not None else 0.8 * pop.available_mb()
        need = pop.predicted_peak_mb(args.size, k, layout)
        if need > limit:
            reason = f"skipped: needs ~{need / 1024:.1f} GB > {limit / 1024:.1f} GB"
            rows.append(skipped_row(k, layout, args.steps, reason))
            note = reason
        else:
            row = measure_steps(args.size, k, layout, args.steps, args.seed)
            rows.append(row)
            note = (
                f"{row['s_per_step']:.3f} s/step, {row['gflop_per_step']:.2f} GFLOP/step, "
                f"{row['achieved_gflops']:.1f} GFLOP/s"
            )
        log(f"[{i}/{len(configs)}] K={k} ({layout}): {note}", start)
    after = gemm_rates(args.gemm_n, args.gemm_repeats)
    log(f"GEMM GFLOP/s after: {after}", start)
    best = best_rates(before, after)
    add_fractions(rows, best)
    gemm = {"before": before, "after": after, "best": best}
    print(write_report(rows, gemm, args), flush=True)


if __name__ == "__main__":
    main()
