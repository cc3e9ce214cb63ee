"""From NumPy arrays to denoised rates, notebook style: simulate spikes with autolfads' own
chaotic-RNN simulator, fit LFADS with `autolfads.fit`, take the posterior rates and score them
against the true rates (R^2).

Run it cell by cell (`# %%`: Jupyter, VS Code, Spyder) or whole, from the repository root:

    .venv/bin/python examples/from_arrays.py

Time on a 2-core CPU (2026-12-03, idle machine): 33 s for the whole script, 28 s of it the fit;
R^2 0.74 against the true rates (longer fits on more trials reach about 0.82, bench/RESULTS.md).
A machine busy with other work makes it several times slower (355 s beside a running benchmark).

Nothing is written to disk (no `out=`; with `out="folder"` it gets the files of `autolfads train`).
For AutoLFADS (population-based training of the hyperparameters), pass `pbt=True` and a
`pbt.num_workers`; it takes about that many times longer.
"""

# %% Simulate: 50 neurons of a chaotic RNN, 1 s trials in 10 ms bins, 80/20 train/valid split.
import time

import numpy as np

import autolfads
from autolfads.analysis.metrics import r2_score
from autolfads.data.synthetic import simulate

arrays = simulate("chaotic-rnn", seed=0, n_conditions=400, trials_per_condition=5)
per_bin = 1 / arrays["conversion_factor"]  # the truth is in Hz: spikes per bin = rate x 10 ms


def split(name: str) -> dict[str, np.ndarray]:
    """One split as a dict of the file's keys without the prefix (bare arrays work too)."""
    return {
        "encod_data": arrays[f"{name}_encod_data"],  # (trials, 100 bins, 50 neurons) counts
        "truth": arrays[f"{name}_truth"] * per_bin,  # optional: fitlog gets valid/r2
        "condition": arrays[f"{name}_condition"],  # optional: used by plots and stitching
    }


train, valid = split("train"), split("valid")
print({k: v.shape for k, v in train.items()}, "valid:", valid["encod_data"].shape)

# %% Fit one LFADS model, small and short enough for a CPU (any key of the README's tables works:
# nested or dotted). No inferred inputs (co_dim 0): this network has none.
config = {
    "model": {"gen_dim": 64, "fac_dim": 20, "ic_enc_dim": 32, "ic_dim": 32},
    "model.co_dim": 0,
    "model.ci_enc_dim": 0,
    "model.con_dim": 0,
    "trainer.max_epochs": 50,
    "trainer.ramp_epochs": 15,  # the KL/L2 warm-up, within the 50 epochs
    "datamodule.batch_size": 50,
}
start = time.monotonic()
model = autolfads.fit(train, valid, config=config)
print(f"fitted in {time.monotonic() - start:.0f} s: {model}")

# %% Posterior: rates per bin (averaged over 50 posterior samples) and the other outputs.
post = model.posterior(valid)  # the dict works as it is: only encod_data is read
rates = post["output_params"]  # (trials, 100, 50) spikes per bin
print({k: v.shape for k, v in post.items()})
print(f"R^2 of the inferred rates against the true rates: {r2_score(valid['truth'], rates):.3f}")

# %% The fit log: one row per epoch (per worker with pbt=True).
log = model.fitlog
print(log[["epoch", "train/recon", "valid/recon_smth", "valid/r2"]].tail(3).to_string(index=False))

# %% Plot a few valid trials of one neuron: spikes, true and inferred rates.
import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

neuron = 0
fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
t = np.arange(rates.shape[1]) * 10  # ms
for ax, trial in zip(axes, range(3), strict=True):
    ax.plot(t, valid["encod_data"][trial, :, neuron], "|", color="0.6", label="spikes")
    ax.plot(t, valid["truth"][trial, :, neuron], "k--", label="true rate")
    ax.plot(t, rates[trial, :, neuron], "C3", label="LFADS")
    ax.set_xlabel("time (ms)")
axes[0].set_ylabel("spikes per bin")
axes[0].legend(frameon=False)
fig.tight_layout()
if matplotlib.get_backend().lower() == "agg":
    print("no display here: run the script in a notebook to see the figure")
else:
    plt.show()

# %% Keep the model: the format of `autolfads run`'s model.ckpt; `autolfads sample` reads it too.
# model.save("model.ckpt"); model = autolfads.load("model.ckpt")
