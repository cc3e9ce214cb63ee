"""Swappable parts: classes defined in this module, named by their dotted paths in the config, are
built, checked before any work, train end to end and come back from the checkpoint."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest
import torch
from helpers import CPP, TINY_DATA, TINY_MODEL, poisson_counts, tiny_structure
from torch import Tensor, nn
from torch import distributions as D

from autolfads.cli import main
from autolfads.data.synthetic import simulate_to_file
from autolfads.errors import ConfigError
from autolfads.model.lfads import LFADSNetwork
from autolfads.model.linear import BatchedLinear
from autolfads.model.priors import CO_PRIORS, ICPrior, InputPrior
from autolfads.outputs.checkpoint import LFADS
from autolfads.parts import resolve_part
from autolfads.train.augment import Augmentation


class LaplaceICPrior(ICPrior):
    """z ~ prod_i Laplace(mu_i, b), b = sqrt(ic_prior_var / 2): the variance of the default prior,
    heavier tails. The KL from a Gaussian posterior in closed form."""

    def __init__(self, n_workers: int, ic_dim: int, ic_prior_var: float = 0.1) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(n_workers, ic_dim))
        self.scale = math.sqrt(ic_prior_var / 2.0)

    def kl(self, post_mean: Tensor, post_var: Tensor) -> Tensor:
        sd, d = post_var.sqrt(), post_mean - self.mean[:, None, :]
        # E|z - mu| for z ~ N(mu + d, sd^2): the mean of a folded normal
        mean_abs = sd * math.sqrt(2 / math.pi) * torch.exp(-(d**2) / (2 * post_var))
        mean_abs = mean_abs + d * torch.erf(d / (sd * math.sqrt(2)))
        neg_entropy = -0.5 * torch.log(2 * math.pi * math.e * post_var)
        return (neg_entropy + math.log(2 * self.scale) + mean_abs / self.scale).sum(-1)


class ZeroFirstChannel(Augmentation):
    """Hides channel 0 from the encoders on training batches; counts its calls and their shapes."""

    shapes: list[tuple[int, ...]] = []

    def __call__(self, encod, recon, sv_mask, generator):
        type(self).shapes.append(tuple(encod.shape))
        encod = encod.clone()
        encod[..., 0] = 0.0
        return encod, recon, sv_mask


class NoBiasReadout(BatchedLinear):
    """A read-out without a bias (the network must not try to start it at the data's mean)."""

    def __init__(self, n_workers: int, in_features: int, out_features: int) -> None:
        super().__init__(n_workers, in_features, out_features, bias=False)


def path_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_laplace_kl_agrees_with_monte_carlo():
    torch.manual_seed(0)
    prior = LaplaceICPrior(2, 3, ic_prior_var=0.2).double()
    with torch.no_grad():
        prior.mean.copy_(torch.randn(2, 3))
    post_mean = torch.randn(2, 4, 3, dtype=torch.float64)
    post_var = torch.rand(2, 4, 3, dtype=torch.float64) * 0.3 + 0.05
    q = D.Normal(post_mean, post_var.sqrt())
    p = D.Laplace(prior.mean.detach()[:, None, :].expand_as(post_mean), prior.scale)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0).sum(-1)
    torch.testing.assert_close(
        prior.kl(post_mean, post_var).detach(), monte_carlo, atol=0.005, rtol=0.005
    )


def test_parts_are_built_from_their_dotted_paths():
    s = tiny_structure(ic_prior=path_of(LaplaceICPrior), readout=path_of(NoBiasReadout))
    net = LFADSNetwork(s, 2)
    assert type(net.ic_prior) is LaplaceICPrior
    assert net.ic_prior.scale == pytest.approx(math.sqrt(s.ic_prior_var / 2))
    assert type(net.readout[0]) is NoBiasReadout and net.readout[0].bias is None
    net.init_readout_bias(0, torch.ones(s.recon_data_dims[0]))  # no bias: nothing to start
    out = net(poisson_counts((2, 3, s.encod_seq_len, s.encod_data_dims[0])).float())
    assert out.params.shape == (2, 3, s.recon_seq_len, s.recon_data_dims[0], 1)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nowhere.Nothing", "names no class: expected one of ar1, or a dotted path"),
        ("math.pi", "names no class"),
        (path_of(LaplaceICPrior), "is not a subclass of autolfads.model.priors.InputPrior"),
    ],
)
def test_a_part_naming_no_class_or_the_wrong_kind_is_refused(spec, words):
    with pytest.raises(ConfigError, match=words):
        resolve_part("model.co_prior", spec, CO_PRIORS, InputPrior)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_file("chaotic-rnn", path, seed=0, overrides=TINY_DATA)
    return path


def test_a_bad_part_is_exit_2_in_one_line_before_any_work(tiny_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["train", str(tiny_file), "-o", str(out), *TINY_MODEL, "model.ic_prior=nowhere.Nothing"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: `model.ic_prior`='nowhere.Nothing' names no class: expected one of gaussian, "
        "or a dotted path pkg.mod.Class"
    ]
    assert not out.exists()


def test_a_prior_and_an_augmentation_defined_here_train_end_to_end(tiny_file, tmp_path, caplog):
    out = tmp_path / "out"
    ZeroFirstChannel.shapes.clear()
    argv = [
        "train",
        str(tiny_file),
        "-o",
        str(out),
        *TINY_MODEL,
        "trainer.max_epochs=3",
        f"model.ic_prior={path_of(LaplaceICPrior)}",
        f"datamodule.augmentations=[{path_of(ZeroFirstChannel)}]",
    ]
    with caplog.at_level(logging.INFO, logger="autolfads"):
        assert main(argv) == 0
    fitlog = pd.read_csv(out / "fitlog.csv")
    assert len(fitlog) == 3 and (fitlog["train/kl/ic"] > 0).all()
    # training batches only: 24 train trials in batches of 8, three epochs; never in validation
    assert ZeroFirstChannel.shapes == [(8, 12, 8)] * 9
    model = LFADS.load_from_checkpoint(out / "model.ckpt")
    assert type(model.network.ic_prior) is LaplaceICPrior
    if CPP is not None:  # the C++ operations step aside for a part they do not know, saying so
        assert (
            "accel: ic_prior is a LaplaceICPrior, not what the C++ kernels implement; "
            "using the reference PyTorch operations"
        ) in caplog.messages
    assert model.network.ops.name == "none"
