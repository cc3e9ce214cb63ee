"""Temporal-shift augmentation (EMG): the draws, the shift itself, its wiring into Shard training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import default_hps, rotating_poisson_session, tiny_settings, tiny_structure

from autolfads.config import load_config
from autolfads.errors import ConfigError
from autolfads.train.shard import Shard, TrainSettings
from autolfads.train.shift import (
    draw_shifts,
    shift_channels,
    shift_training_batch,
    temporal_shift,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ramp(b: int, t: int, n: int) -> torch.Tensor:
    """(B, T, N) with every value distinct: 1000 b + 100 n + t."""
    bb, tt, nn = torch.meshgrid(torch.arange(b), torch.arange(t), torch.arange(n), indexing="ij")
    return (1000 * bb + 100 * nn + tt).float()


def _shift_oracle(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Loop version: out[b, t, n] = x[b, t - s, n], NaN outside the trial."""
    out = torch.full_like(x, math.nan)
    for b in range(x.shape[0]):
        for n in range(x.shape[2]):
            s = int(shifts[b, n])
            for t in range(x.shape[1]):
                if 0 <= t - s < x.shape[1]:
                    out[b, t, n] = x[b, t - s, n]
    return out


# ---------------------------------------------------------------- draws


def test_draws_are_rounded_normal_clamped_to_max():
    shifts = draw_shifts(400, 50, std=3.0, max_shift=6, generator=_gen(0))
    assert shifts.shape == (400, 50) and shifts.dtype == torch.int64
    assert shifts.abs().max() == 6  # clamped, and the clamp is reached
    z = torch.randn(400, 50, generator=_gen(0))  # the same normal draws
    torch.testing.assert_close(shifts, (3.0 * z).round().clamp(-6, 6).long())
    assert abs(shifts.float().std().item() - 3.0) < 0.15


def test_zero_std_or_zero_max_means_no_shift():
    assert (draw_shifts(5, 4, std=0.0, max_shift=6, generator=_gen(1)) == 0).all()
    assert (draw_shifts(5, 4, std=3.0, max_shift=0, generator=_gen(1)) == 0).all()


@pytest.mark.parametrize(
    ("std", "max_shift", "message"),
    [
        (-1.0, 6, "`std` must be >= 0"),
        (3.0, -2, "`max` must be an integer >= 0"),
        (3.0, 2.5, "`max`"),
    ],
)
def test_bad_settings_name_the_setting(std, max_shift, message):
    with pytest.raises(ConfigError, match=message):
        draw_shifts(2, 2, std, max_shift)


# ---------------------------------------------------------------- the shift


def test_shift_moves_each_value_by_its_integer_and_fills_nan():
    x = _ramp(1, 5, 3)  # channel n holds 100 n + t
    out = shift_channels(x, torch.tensor([[2, -1, 0]]))
    nan = math.nan
    torch.testing.assert_close(
        out[0, :, 0], torch.tensor([nan, nan, 0.0, 1.0, 2.0]), equal_nan=True
    )
    torch.testing.assert_close(
        out[0, :, 1], torch.tensor([101.0, 102.0, 103.0, 104.0, nan]), equal_nan=True
    )
    torch.testing.assert_close(out[0, :, 2], x[0, :, 2])


def test_temporal_shift_draws_one_shift_per_trial_and_channel():
    x = _ramp(6, 12, 5)
    out = temporal_shift(x, std=3.0, max_shift=6, generator=_gen(2))
    shifts = draw_shifts(6, 5, 3.0, 6, generator=_gen(2))
    assert len(torch.unique(shifts)) > 3  # trials and channels really differ
    torch.testing.assert_close(out, _shift_oracle(x, shifts), equal_nan=True)
    # every observed value moved by exactly its channel's shift
    b, t, n = torch.nonzero(~torch.isnan(out), as_tuple=True)
    source_t = out[b, t, n] - 1000 * b - 100 * n
    torch.testing.assert_close(t - source_t.long(), shifts[b, n])


def test_temporal_shift_is_deterministic_for_a_fixed_generator():
    x = torch.rand(4, 10, 3, generator=_gen(3))
    a = temporal_shift(x, 3.0, 6, generator=_gen(4))
    b = temporal_shift(x, 3.0, 6, generator=_gen(4))
    c = temporal_shift(x, 3.0, 6, generator=_gen(5))
    torch.testing.assert_close(a, b, equal_nan=True)
    assert not torch.equal(torch.isnan(a), torch.isnan(c))


def test_input_and_target_get_independent_shifts_and_target_extra_channels_too():
    encod = _ramp(8, 10, 4)
    recon = torch.cat([encod, _ramp(8, 10, 6)[..., 4:]], dim=-1)  # 2 held-out neurons
    new_encod, new_recon, sv = shift_training_batch(encod, recon, 3.0, 6, generator=_gen(6))
    assert sv is None and new_recon.shape == recon.shape
    g = _gen(6)  # draws in order: the input's, then the target's
    enc_shifts, rec_shifts = (
        draw_shifts(8, 4, 3.0, 6, generator=g),
        draw_shifts(8, 6, 3.0, 6, generator=g),
    )
    assert not torch.equal(enc_shifts, rec_shifts[:, :4])
    torch.testing.assert_close(new_encod, _shift_oracle(encod, enc_shifts), equal_nan=True)
    torch.testing.assert_close(new_recon, _shift_oracle(recon, rec_shifts), equal_nan=True)


def test_sample_validation_values_never_reach_the_input_and_stay_scored_in_the_target():
    g = _gen(7)
    encod = _ramp(6, 10, 4)
    recon = _ramp(6, 12, 5)  # forward-prediction steps and a held-out neuron
    sv = torch.rand(6, 10, 4, generator=g) < 0.3
    held_values = set(encod[sv].tolist())
    new_encod, new_recon, new_sv = shift_training_batch(
        encod, recon, 3.0, 6, sv_mask=sv, generator=g
    )
    assert new_sv.shape == sv.shape and new_sv.dtype == torch.bool
    seen = set(new_encod[~torch.isnan(new_encod)].tolist())
    assert not seen & held_values
    # positions marked held out in the new target are exactly where held-out values now sit
    in_region = new_recon[:, :10, :4]
    is_held = torch.tensor([v in held_values for v in in_region.flatten().tolist()]).view_as(
        in_region
    )
    torch.testing.assert_close(new_sv, is_held)
    # a held-out value pushed into the forward-prediction steps is dropped from the loss
    outside = new_recon.clone()
    outside[:, :10, :4] = math.nan
    assert not set(outside[~torch.isnan(outside)].tolist()) & held_values


# ---------------------------------------------------------------- settings and Shard wiring


def test_settings_from_the_packaged_defaults_and_overrides():
    off = TrainSettings.from_config(load_config())
    assert (off.temporal_shift, off.temporal_shift_std, off.temporal_shift_max) == (False, 3.0, 6)
    cfg = load_config(
        overrides=["datamodule.temporal_shift.enabled=true", "datamodule.temporal_shift.max=4"]
    )
    on = TrainSettings.from_config(cfg)
    assert (on.temporal_shift, on.temporal_shift_max) == (True, 4)
    with pytest.raises(ConfigError, match=r"datamodule.temporal_shift.max .*2.5"):
        load_config(overrides=["datamodule.temporal_shift.max=2.5"])
    with pytest.raises(ConfigError, match="datamodule.temporal_shift.std"):
        TrainSettings(temporal_shift_std=-1.0)


@pytest.fixture(scope="module")
def data():
    session, _ = rotating_poisson_session(n_train=32, n_valid=16, T=8, N=6, seed=0)
    return [session]


def _shard(shift: bool, seed: int = 0) -> Shard:
    settings = tiny_settings(temporal_shift=shift, temporal_shift_std=2.0, temporal_shift_max=3)
    return Shard(tiny_structure(), settings, default_hps(2, cd_rate=0.2), seed=seed)


def test_training_with_shift_gives_finite_loss_and_differs_from_without(data):
    shifted = _shard(True).train_epoch(data, 0)
    plain = _shard(False).train_epoch(data, 0)
    assert all(np.isfinite(v).all() for v in shifted.values())
    assert not np.array_equal(shifted["train/recon"], plain["train/recon"])


def test_training_with_shift_is_deterministic(data):
    a, b = _shard(True), _shard(True)
    for epoch in range(2):
        ma, mb = a.train_epoch(data, epoch), b.train_epoch(data, epoch)
        for name in ma:
            np.testing.assert_array_equal(ma[name], mb[name], err_msg=name)


def test_shift_is_never_applied_at_evaluation(data):
    trained = _shard(True)
    trained.train_epoch(data, 0)
    state = trained.state_dict()
    off = _shard(False)
    off.load_state_dict(state)
    metrics_on, means_on = trained.evaluate(data, 1, return_means=True)
    metrics_off, means_off = off.evaluate(data, 1, return_means=True)
    for name in metrics_on:
        np.testing.assert_array_equal(metrics_on[name], metrics_off[name], err_msg=name)
    np.testing.assert_array_equal(means_on[0], means_off[0])
