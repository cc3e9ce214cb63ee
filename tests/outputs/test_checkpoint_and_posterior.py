"""model.ckpt round trip and batched posterior sample-and-average."""

import numpy as np
import pytest
import torch
from helpers import default_hps, tiny_structure

from autolfads.accel import accelerate
from autolfads.data import SessionData
from autolfads.data.tensors import encoder_input
from autolfads.errors import DataError
from autolfads.model.lfads import LFADSNetwork
from autolfads.outputs.checkpoint import LFADS
from autolfads.outputs.posterior import OUTPUT_FIELDS, posterior_average


def _session(tmp_path, n=5, t=8, n_ch=6, seed=0):
    rng = np.random.default_rng(seed)

    def counts(k):
        return rng.poisson(1.0, size=(k, t, n_ch)).astype(np.float32)

    tr, va = counts(n), counts(n)
    return SessionData(tmp_path / "s.h5", {"train": tr, "valid": va}, {"train": tr, "valid": va})


def _model(seed=0):
    torch.manual_seed(seed)
    hps = {k: v[0] for k, v in default_hps(1).items()}
    net = accelerate(LFADSNetwork(tiny_structure(), 1))  # as training and loading build it
    return LFADS(net, hps, {"model": {"gen_dim": 10}}, ["s"])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, device):
    model = _model()
    model.network.to(device)
    sess = [_session(tmp_path)]
    path = model.save(tmp_path / "model.ckpt")
    loaded = LFADS.load_from_checkpoint(path, device=device)
    assert next(loaded.network.parameters()).device.type == torch.device(device).type
    a = model.posterior(sess, n_samples=4, seed=3)
    b = loaded.posterior(sess, n_samples=4, seed=3)
    for split in ("train", "valid"):
        for name in OUTPUT_FIELDS:
            assert np.array_equal(a[0][split][name], b[0][split][name]), (split, name)
            assert np.isfinite(b[0][split][name]).all(), (split, name)
    assert loaded.hps == model.hps and loaded.config == model.config
    payload = torch.load(path, weights_only=True)
    assert payload["structure"]["gen_dim"] == 10


def test_checkpoint_refuses_data_of_other_dimensions(tmp_path):
    model = _model()
    with pytest.raises(DataError, match="encod_data_dim is 7 but the model expects 6"):
        model.check_sessions([_session(tmp_path, n_ch=7)])


def test_not_a_checkpoint_is_a_data_error(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not an autolfads checkpoint"):
        LFADS.load_from_checkpoint(bad)
    with pytest.raises(DataError, match="not found"):
        LFADS.load_from_checkpoint(tmp_path / "missing.ckpt")


def test_posterior_average_is_the_mean_of_the_same_samples_drawn_one_by_one(device):
    torch.manual_seed(0)
    net = LFADSNetwork(tiny_structure(), 1).double().to(device)
    data = torch.poisson(torch.ones(3, 8, 6, dtype=torch.float64)).to(device)
    s = 5
    torch.manual_seed(7)
    avg = posterior_average(net, data, 0, None, n_samples=s)
    # the batched call draws all samples of all trials at once; replay the same draws per sample
    torch.manual_seed(7)
    rep = data.repeat_interleave(s, dim=0)
    out = net(encoder_input(rep, 1), 0, None, None, sample=True)
    rates = net.observation_model(0).mean(out.params)[0].reshape(3, s, 8, 6).mean(1)
    assert torch.allclose(avg["output_params"], rates)
    assert avg["factors"].shape == (3, 8, 4) and avg["ic_std"].shape == (3, 4)


def test_more_samples_shrink_the_spread_of_the_average():
    torch.manual_seed(0)
    net = LFADSNetwork(tiny_structure(), 1).double()
    with torch.no_grad():
        net.ic_posterior.bias[:, 4:] = 0.0  # unit posterior variance: visible sampling noise
    data = torch.poisson(torch.ones(2, 8, 6, dtype=torch.float64))

    def spread(n):
        draws = [posterior_average(net, data, 0, None, n)["output_params"] for _ in range(20)]
        return torch.stack(draws).std(0).mean()

    assert spread(16) < 0.5 * spread(1)
