"""Loopback "cluster" check: a Ray head and one worker node started with `ray start` on 127.0.0.1,
a small AutoLFADS population run across both, timed next to the local backend (issue: Ray).

    .venv/bin/python bench/loopback_cluster.py [--workers 4] [--generations 2]

Starts `ray start --head` (1 CPU) and `ray start --address` (1 CPU, a second raylet standing in for a
second machine), runs `autolfads run ... --address 127.0.0.1:PORT pbt.backend=ray`, records on which
node each shard ran, then `ray stop`s both; then the same run on a private local Ray (`auto`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

BIN = Path(sys.executable).parent


def ray_cmd(*args: str, env: dict | None = None) -> None:
    subprocess.run([str(BIN / "ray"), *args], check=True, env=env, capture_output=True, text=True)


def run(data: Path, out: Path, extra: list[str], env: dict | None = None) -> float:
    argv = [
        str(BIN / "autolfads"),
        "run",
        str(data),
        "-o",
        str(out),
        "--overwrite",
        "--quiet",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--port", type=int, default=6391)
    parser.add_argument("--out", default="bench/out/loopback")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data.h5"
    subprocess.run(
        [
            str(BIN / "autolfads"),
            "simulate",
            "chaotic-rnn",
            str(data),
            "n_conditions=100",
            "trials_per_condition=5",
            "n_steps=50",
        ],
        check=True,
        capture_output=True,
    )
    common = [
        "-c",
        "demo",
        f"pbt.num_workers={args.workers}",
        f"pbt.workers_per_shard={args.workers // 2}",
        f"pbt.max_generations={args.generations}",
        "pbt.burn_in_period=5",
        "pbt.perturbation_interval=5",
        "trainer.ramp_epochs=5",
    ]
    address = f"127.0.0.1:{args.port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Ray 2.60 refuses a node that joins without a token: generate one (~/.ray/auth_token) and use it
    # on the head, the worker node and the driver (docs/cluster.md, "Authentication").
    env["RAY_AUTH_MODE"] = "token"
    ray_cmd("get-auth-token", "--generate", env=env)
    results = {}
    try:
        ray_cmd(
            "start",
            "--head",
            f"--port={args.port}",
            "--num-cpus=1",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            env=env,
        )
        ray_cmd(
            "start", f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1", env=env
        )
        results["cluster_s"] = round(
            run(data, out / "cluster", [*common, "pbt.backend=ray", "--address", address], env), 1
        )
        status = subprocess.run(
            [str(BIN / "ray"), "status", f"--address={address}"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        results["cluster_nodes_active"] = status.count(" node_")
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env)
    results["local_auto_s"] = round(run(data, out / "local", [*common, "pbt.backend=auto"], env), 1)
    report = {
        "command": "python bench/loopback_cluster.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}",
        "workers": args.workers,
        "generations": args.generations,
        **results,
    }
    (out / "result.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
