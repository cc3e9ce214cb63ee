"""The LFADS objective: warm-up schedule, L2 penalty by hand, masked NLL, KL against
torch.distributions, and the composition of the per-worker loss."""

from __future__ import annotations

import pytest
import torch
from helpers import poisson_counts, tiny_structure, torch_threads
from torch import distributions as D

from autolfads.model.lfads import LFADSNetwork
from autolfads.model.priors import ar1_kl_one_sample
from autolfads.train.augment import prepare_batch
from autolfads.train.objective import l2_penalty, lfads_loss, masked_mean_nll, ramp_factor

K, B = 3, 4


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _network(seed: int = 0, **overrides) -> LFADSNetwork:
    torch.manual_seed(seed)
    net = LFADSNetwork(tiny_structure(**overrides), K).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=_gen(seed), dtype=p.dtype))
    return net.eval()


# ---------------------------------------------------------------- ramp_factor


@pytest.mark.parametrize(
    "epoch, ramp_epochs, ramp_start, expected",
    [
        (0, 4, 0, 0.25),
        (1, 4, 0, 0.5),
        (3, 4, 0, 1.0),
        (50, 4, 0, 1.0),
        (0, 4, 2, 0.0),
        (1, 4, 2, 0.0),
        (2, 4, 2, 0.25),
        (5, 4, 2, 1.0),
        (0, 0, 0, 1.0),
        (2, 0, 3, 0.0),
        (3, 0, 3, 1.0),
        (0, 1, 0, 1.0),
    ],
)
def test_ramp_factor_values(epoch, ramp_epochs, ramp_start, expected):
    assert ramp_factor(epoch, ramp_epochs, ramp_start) == pytest.approx(expected)


def test_ramp_factor_is_monotone_in_unit_interval():
    values = [ramp_factor(e, 7, 3) for e in range(20)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert values[0] == 0.0 and values[-1] == 1.0


# ---------------------------------------------------------------- l2_penalty


def _hand_l2(net: LFADSNetwork, hps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per worker: sum over groups of scale * (sum of squares / count) of the recurrent weights."""
    s = net.structure
    cells = {  # group -> (cell, rows per worker)
        "gen": (net.generator, 1),
        "ic_enc": (net.ic_encoder.cell, 2),
        "con": (net.controller, 1),
        "ci_enc": (net.ci_encoder.cell, 2),
    }
    sizes = {"gen": s.gen_dim, "ic_enc": s.ic_enc_dim, "con": s.con_dim, "ci_enc": s.ci_enc_dim}
    out = []
    for k in range(K):
        total = 0.0
        for group, (cell, m) in cells.items():
            if f"l2_{group}_scale" not in hps:
                continue
            rows = slice(k * m, (k + 1) * m)
            ssq = 0.0
            for w in (cell.gate_weight.detach()[rows], cell.candidate_weight.detach()[rows]):
                ssq += sum(float(v) ** 2 for v in w.flatten())
            h = sizes[group]
            count = m * (h * 2 * h + h * h)
            total += float(hps[f"l2_{group}_scale"][k]) * ssq / count
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def test_l2_penalty_equals_hand_computed_mean_square_per_group_and_worker():
    net = _network(1)
    hps = {
        "l2_gen_scale": torch.tensor([1.0, 2.0, 0.0]),
        "l2_con_scale": torch.tensor([0.5, 0.0, 3.0]),
        "l2_ic_enc_scale": torch.tensor([0.1, 0.2, 0.3]),
        "l2_ci_enc_scale": torch.tensor([4.0, 0.0, 1.0]),
    }
    torch.testing.assert_close(l2_penalty(net, hps).double(), _hand_l2(net, hps))


def test_l2_penalty_skips_groups_without_a_scale():
    net = _network(2)
    hps = {"l2_gen_scale": torch.tensor([1.0, 1.0, 1.0])}
    torch.testing.assert_close(l2_penalty(net, hps).double(), _hand_l2(net, hps))
    assert torch.equal(l2_penalty(net, {}), torch.zeros(K))


def test_l2_penalty_without_controller_ignores_controller_scales():
    net = _network(3, co_dim=0)
    hps = {name: torch.ones(K) for name in ("l2_gen_scale", "l2_ic_enc_scale", "l2_con_scale")}
    gen = torch.cat(
        [net.generator.gate_weight.flatten(1), net.generator.candidate_weight.flatten(1)], 1
    )
    enc = net.ic_encoder.cell
    enc_w = torch.cat([enc.gate_weight.reshape(K, -1), enc.candidate_weight.reshape(K, -1)], 1)
    expected = gen.pow(2).mean(1) + enc_w.pow(2).mean(1)
    torch.testing.assert_close(l2_penalty(net, hps).double(), expected.detach())


def test_l2_penalty_gradient_reaches_only_recurrent_weights():
    net = _network(4)
    hps = {f"l2_{g}_scale": torch.ones(K) for g in ("gen", "con", "ic_enc", "ci_enc")}
    l2_penalty(net, hps).sum().backward()
    G, H = net.structure.gen_dim, net.structure.ic_enc_dim
    w = net.generator.gate_weight
    torch.testing.assert_close(w.grad, 2 * w.detach() / (3 * G * G))
    w = net.ic_encoder.cell.candidate_weight
    torch.testing.assert_close(w.grad, 2 * w.detach() / (2 * 3 * H * H))
    recurrent = {id(w) for ws in net.l2_groups().values() for w in ws}
    for name, p in net.named_parameters():
        if id(p) in recurrent:
            assert (p.grad != 0).any(), name
        else:
            assert p.grad is None, name


# ---------------------------------------------------------------- masked_mean_nll


def test_masked_mean_nll_is_per_worker_mean_over_counted_entries():
    nll = torch.rand(2, B, 5, 3, generator=_gen(5))
    recon = torch.ones(B, 5, 3)
    recon[0, 0, 0] = recon[1, 2] = float("nan")
    batch = prepare_batch(recon, recon, 2)
    observed = ~torch.isnan(recon)
    expected = torch.stack([nll[k][observed].mean() for k in range(2)])
    torch.testing.assert_close(masked_mean_nll(nll, batch), expected)


def test_masked_mean_nll_with_nothing_observed_is_zero_not_nan():
    recon = torch.full((B, 5, 3), float("nan"))
    batch = prepare_batch(recon, recon, 2)
    out = masked_mean_nll(torch.rand(2, B, 5, 3), batch)
    assert torch.equal(out, torch.zeros(2))


# ---------------------------------------------------------------- lfads_loss


def _loss_inputs(net: LFADSNetwork, seed: int, sv: torch.Tensor | None = None):
    s = net.structure
    recon = poisson_counts((B, s.recon_seq_len, s.recon_data_dims[0]), seed=seed).double()
    recon[1, 2, 3] = float("nan")
    encod = recon[:, : s.encod_seq_len, : s.encod_data_dims[0]]
    batch = prepare_batch(encod, recon, K, sv_mask=sv)
    out = net(batch.encod_input, sample=True)
    observed = ~torch.isnan(recon)
    hps = {
        "kl_ic_scale": torch.tensor([0.1, 1.0, 2.0]),
        "kl_co_scale": torch.tensor([0.3, 0.0, 1.5]),
        "l2_gen_scale": torch.tensor([1.0, 2.0, 3.0]),
        "l2_ic_enc_scale": torch.tensor([0.5, 0.5, 0.5]),
    }
    return batch, out, hps, observed


@pytest.mark.parametrize("co_dim", [0, 2])
def test_lfads_loss_composes_its_parts(co_dim):
    net = _network(6, co_dim=co_dim)
    batch, out, hps, observed = _loss_inputs(net, seed=6)
    loss, parts = lfads_loss(net, out, batch, 0, hps, ramp=0.4, loss_scale=7.0)
    assert loss.shape == (K,)
    assert all(v.shape == (K,) and not v.requires_grad for v in parts.values())

    log_rate = out.params[..., 0].detach()
    nll = -D.Poisson(log_rate.exp()).log_prob(batch.target)
    torch.testing.assert_close(
        parts["recon"], torch.stack([nll[k][observed].mean() for k in range(K)])
    )

    prior = D.Normal(net.ic_prior.mean.detach()[:, None], net.ic_prior.ic_prior_var.sqrt())
    post = D.Normal(out.ic_mean.detach(), out.ic_var.detach().sqrt())
    torch.testing.assert_close(parts["kl/ic"], D.kl_divergence(post, prior).sum(-1).mean(1))
    if co_dim:
        kl_co = ar1_kl_one_sample(out.co_sample, out.co_mean, out.co_var, net.co_prior).mean(1)
        torch.testing.assert_close(parts["kl/co"], kl_co.detach())
    else:
        assert torch.equal(parts["kl/co"], torch.zeros(K, dtype=parts["kl/co"].dtype))
    torch.testing.assert_close(parts["l2"], l2_penalty(net, hps).detach())

    kl = hps["kl_ic_scale"] * parts["kl/ic"] + hps["kl_co_scale"] * parts["kl/co"]
    expected = parts["recon"] + 0.4 * (kl + parts["l2"])
    torch.testing.assert_close(parts["loss"], expected)
    torch.testing.assert_close(loss.detach(), 7.0 * expected)


def test_lfads_loss_observation_regulariser_is_not_ramped():
    net = _network(7, reconstruction="zig")
    with torch.no_grad():
        net.observation[0].log_scale.add_(0.5)  # move the scales away from their prior
    s = net.structure
    data = torch.rand(B, 8, 6, generator=_gen(7), dtype=torch.float64) * 2
    batch = prepare_batch(data, data, K)
    out = net(batch.encod_input, sample=False)
    hps = {
        "kl_ic_scale": torch.ones(K),
        "kl_co_scale": torch.ones(K),
        "l2_gamma_scale": torch.tensor([0.0, 1.0, 10.0]),
    }
    _, parts = lfads_loss(net, out, batch, 0, hps, ramp=0.0, loss_scale=1.0)
    reg = net.observation[0].regularizer().detach()
    assert (reg > 0).all() and s.reconstruction == "zig"
    torch.testing.assert_close(parts["loss"], parts["recon"] + hps["l2_gamma_scale"] * reg)


def test_lfads_loss_reports_sample_validation_nll_separately():
    net = _network(8)
    sv = torch.rand(B, 8, 6, generator=_gen(8)) < 0.25
    batch, out, hps, observed = _loss_inputs(net, seed=8, sv=sv)
    _, parts = lfads_loss(net, out, batch, 0, hps, ramp=1.0, loss_scale=1.0)
    nll = -D.Poisson(out.params[..., 0].detach().exp()).log_prob(batch.target)
    sv_counted = sv & observed
    train_counted = ~sv & observed
    assert sv_counted.any() and not observed[1, 2, 3]
    torch.testing.assert_close(
        parts["recon_sv"], torch.stack([nll[k][sv_counted].mean() for k in range(K)])
    )
    torch.testing.assert_close(
        parts["recon"], torch.stack([nll[k][train_counted].mean() for k in range(K)])
    )


def test_lfads_loss_without_sample_validation_has_no_sv_part():
    net = _network(9)
    batch, out, hps, _ = _loss_inputs(net, seed=9)
    _, parts = lfads_loss(net, out, batch, 0, hps, ramp=1.0, loss_scale=1.0)
    assert set(parts) == {"loss", "recon", "kl/ic", "kl/co", "l2"}
