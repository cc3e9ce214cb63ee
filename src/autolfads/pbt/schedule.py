"""How a population's epochs are cut into generations: pure arithmetic on the configuration.

Every worker trains `trainer.max_epochs` epochs in all. The first generation lasts
`pbt.burn_in_period` epochs (a `perturbation_interval` when the burn-in is 0), every later one
`pbt.perturbation_interval` epochs, and the last is cut short so that the run ends exactly at
`trainer.max_epochs`. Workers are compared, copied and perturbed between generations; the stop rule
(`pbt.patience`) or `pbt.max_generations` may end the run earlier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autolfads.train.objective import short_warmup_note

__all__ = ["GenerationSchedule"]


@dataclass(frozen=True)
class GenerationSchedule:
    """The epochs of each generation.

    Args:
        max_epochs: epochs each worker trains in all (`trainer.max_epochs`).
        burn_in: epochs before the first comparison (`pbt.burn_in_period`); 0 = one interval.
        interval: epochs between comparisons (`pbt.perturbation_interval`).
        warmup_end: the epoch at which the KL and L2 warm-up is complete
            (`trainer.ramp_start + trainer.ramp_epochs`); used only for the notes.
        max_generations: an optional cap on the number of generations (`pbt.max_generations`).
    """

    max_epochs: int
    burn_in: int
    interval: int
    warmup_end: int = 0
    max_generations: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_epochs", "interval"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.burn_in) < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in!r}")

    @property
    def first_length(self) -> int:
        """Epochs of generation 0 before the cut at `max_epochs`."""
        return int(self.burn_in) if self.burn_in > 0 else int(self.interval)

    def span(self, generation: int, start_epoch: int) -> tuple[int, int]:
        """Epochs [start, stop) of `generation`, which begins at `start_epoch`."""
        length = self.first_length if generation == 0 else int(self.interval)
        return start_epoch, min(start_epoch + length, int(self.max_epochs))

    def n_generations(self) -> int:
        """Generations in a run that the stop rule does not end early."""
        rest = max(0, int(self.max_epochs) - self.first_length)
        n = 1 + math.ceil(rest / int(self.interval))
        return n if self.max_generations is None else min(n, int(self.max_generations))

    def finished(self, generations_done: int, epochs_done: int) -> str:
        """Why the run is over by its length alone ("" while it is not)."""
        if epochs_done >= self.max_epochs:
            return f"reached trainer.max_epochs={self.max_epochs}"
        if self.max_generations is not None and generations_done >= self.max_generations:
            return f"reached pbt.max_generations={self.max_generations}"
        return ""

    def notes(self) -> list[str]:
        """One line for each way the settings work against each other (printed at the start)."""
        lines = []
        if self.max_epochs <= self.first_length:
            lines.append(
                f"note: trainer.max_epochs={self.max_epochs} ends within the first generation "
                f"(pbt.burn_in_period={self.burn_in}): one generation of {self.max_epochs} epochs, "
                "workers are never copied or perturbed"
            )
        elif self.first_length < self.warmup_end:
            lines.append(
                f"note: the first comparison of workers (epoch {self.first_length}, "
                f"pbt.burn_in_period={self.burn_in}) comes before the KL/L2 warm-up ends "
                f"(epoch {self.warmup_end} = trainer.ramp_start + trainer.ramp_epochs): "
                "workers are compared while their penalties are still ramping up"
            )
        warmup = short_warmup_note(self.max_epochs, self.warmup_end)
        return [*lines, warmup] if warmup else lines
