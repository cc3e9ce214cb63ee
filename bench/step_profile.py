"""Time (and optionally profile) one training step of the chaotic-RNN-sized model on random counts.

    .venv/bin/python bench/step_profile.py [THREADS] [K] [--prof]

Prints the minimum and median wall time of 6 steps (batch 100, T 100, N 50; ic_enc 64, ci_enc 32,
con 32, co 2, ic 64, gen 100, fac 20) for K workers batched, and the median time of each phase
(forward with the loss, backward, optimiser); `--prof` adds the torch profiler table.
"""

import sys
import time

import numpy as np
import torch

from autolfads.model.structure import LFADSStructure
from autolfads.train.augment import prepare_batch
from autolfads.train.objective import lfads_loss
from autolfads.train.shard import Shard, TrainSettings


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    k = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 1
    torch.set_num_threads(threads)
    structure = LFADSStructure((50,), (50,), 100, 100)
    hps = dict(
        lr_init=4e-3,
        dropout_rate=0.1,
        cd_rate=0.3,
        l2_gen_scale=1e-4,
        l2_con_scale=1e-4,
        l2_ic_enc_scale=0,
        l2_ci_enc_scale=0,
        kl_ic_scale=1e-5,
        kl_co_scale=1e-5,
        l2_gamma_scale=0,
        gamma_prior=1,
    )
    shard = Shard(structure, TrainSettings(), {n: np.full(k, v) for n, v in hps.items()})
    x = torch.poisson(torch.ones(100, 100, 50) * 0.15)

    def step(phases: list[list[float]] | None = None) -> None:
        clock = [time.perf_counter()]
        batch = prepare_batch(x, x, k, cd_rate=shard.hps["cd_rate"], generator=shard.noise)
        out = shard.net(batch.encod_input, 0, None, shard.hps["dropout_rate"], True, shard.noise)
        loss, _ = lfads_loss(shard.net, out, batch, 0, shard.hps, 1.0, 1e4)
        clock.append(time.perf_counter())
        shard.optimizer.zero_grad()
        loss.sum().backward()
        clock.append(time.perf_counter())
        shard.optimizer.step()
        clock.append(time.perf_counter())
        if phases is not None:
            phases.append([b - a for a, b in zip(clock, clock[1:], strict=False)])

    step()
    phases: list[list[float]] = []
    for _ in range(6):
        step(phases)
    totals = sorted(sum(p) for p in phases)
    medians = [sorted(p[i] for p in phases)[3] for i in range(3)]
    print(
        f"threads {threads} K {k}: step wall s min {totals[0]:.3f} median {totals[3]:.3f}; "
        f"median ms: forward + loss {1e3 * medians[0]:.1f}, backward {1e3 * medians[1]:.1f}, "
        f"optimiser {1e3 * medians[2]:.1f}"
    )
    if "--prof" in sys.argv:
        from torch.profiler import profile

        with profile() as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
