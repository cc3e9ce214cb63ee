"""The order and size of training and evaluation batches (`autolfads.data.tensors`)."""

from __future__ import annotations

import torch

from autolfads.data.tensors import SessionTensors, epoch_batches, split_batches


def _session(n_train: int) -> SessionTensors:
    data = {"train": torch.zeros(n_train, 4, 3), "valid": torch.zeros(2, 4, 3)}
    return SessionTensors(encod=data, recon={k: v.clone() for k, v in data.items()})


def test_a_train_split_smaller_than_a_batch_is_one_batch_of_all_its_trials():
    batches = epoch_batches([_session(24)], 100, torch.Generator().manual_seed(0))
    assert len(batches) == 1
    session, idx = batches[0]
    assert session == 0 and sorted(idx.tolist()) == list(range(24))


def test_full_batches_and_a_trailing_batch_of_at_least_half():
    sizes = [len(idx) for _, idx in epoch_batches([_session(25)], 10, torch.Generator())]
    assert sorted(sizes) == [5, 10, 10]
    sizes = [len(idx) for _, idx in epoch_batches([_session(24)], 10, torch.Generator())]
    assert sorted(sizes) == [10, 10]  # 4 < half a batch: dropped this epoch


def test_each_session_is_cut_on_its_own():
    batches = epoch_batches([_session(24), _session(6)], 10, torch.Generator().manual_seed(1))
    per_session = {s: sorted(len(idx) for t, idx in batches if t == s) for s in (0, 1)}
    assert per_session == {0: [10, 10], 1: [6]}


def test_evaluation_batches_cover_every_trial_once():
    assert [len(b) for b in split_batches(24, 100, "cpu")] == [24]
    assert torch.cat(split_batches(25, 10, "cpu")).tolist() == list(range(25))
