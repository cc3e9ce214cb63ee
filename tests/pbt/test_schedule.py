"""Tests of the generations' epochs: `trainer.max_epochs` is the whole run, the last generation cut."""

from __future__ import annotations

import pytest

from autolfads.config import load_config
from autolfads.pbt.schedule import GenerationSchedule


def spans(schedule: GenerationSchedule) -> list[tuple[int, int]]:
    """Every generation's [start, stop) until the run's length ends it."""
    out, epoch, generation = [], 0, 0
    while not schedule.finished(generation, epoch):
        start, stop = schedule.span(generation, epoch)
        out.append((start, stop))
        epoch, generation = stop, generation + 1
    return out


def test_burn_in_then_intervals_and_the_last_generation_cut_at_max_epochs():
    schedule = GenerationSchedule(max_epochs=7, burn_in=3, interval=2)
    assert spans(schedule) == [(0, 3), (3, 5), (5, 7)]
    assert schedule.n_generations() == 3
    cut = GenerationSchedule(max_epochs=8, burn_in=3, interval=2)
    assert spans(cut) == [(0, 3), (3, 5), (5, 7), (7, 8)]
    assert cut.n_generations() == 4


def test_packaged_defaults_make_nineteen_generations_of_500_epochs():
    cfg = load_config()
    warmup_end = cfg.trainer.ramp_start + cfg.trainer.ramp_epochs
    schedule = GenerationSchedule(
        max_epochs=cfg.trainer.max_epochs,
        burn_in=cfg.pbt.burn_in_period,
        interval=cfg.pbt.perturbation_interval,
        warmup_end=warmup_end,
    )
    assert spans(schedule)[0] == (0, 50) and spans(schedule)[-1] == (475, 500)
    assert len(spans(schedule)) == 19
    assert schedule.notes() == []


def test_a_zero_burn_in_starts_with_one_interval():
    assert spans(GenerationSchedule(max_epochs=5, burn_in=0, interval=2)) == [
        (0, 2),
        (2, 4),
        (4, 5),
    ]


def test_max_generations_can_end_the_run_earlier():
    schedule = GenerationSchedule(max_epochs=100, burn_in=3, interval=2, max_generations=2)
    assert spans(schedule) == [(0, 3), (3, 5)]
    assert "max_generations=2" in schedule.finished(2, 5)
    assert "max_epochs=100" in schedule.finished(2, 100)


def test_notes_say_when_settings_work_against_each_other():
    short = GenerationSchedule(max_epochs=3, burn_in=50, interval=25, warmup_end=50)
    notes = short.notes()
    assert any("trainer.max_epochs=3" in n and "one generation" in n for n in notes)
    assert any("never reach their full weight" in n for n in notes)
    early = GenerationSchedule(max_epochs=200, burn_in=10, interval=25, warmup_end=50)
    (note,) = early.notes()
    assert "pbt.burn_in_period=10" in note and "epoch 50" in note
    assert all("\n" not in n for n in [*notes, note])


@pytest.mark.parametrize("kwargs", [{"max_epochs": 0}, {"interval": 0}, {"burn_in": -1}])
def test_impossible_lengths_are_refused(kwargs):
    with pytest.raises(ValueError):
        GenerationSchedule(**{"max_epochs": 5, "burn_in": 1, "interval": 1, **kwargs})
