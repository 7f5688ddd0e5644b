"""The learning-rate schedule, advanced by the fraction of the budget spent.

A wall-clock budget makes the schedule a function of training-clock seconds, so two
recipes with different step costs follow the same curve in the same time (the paper
matches MLM-only and MLM+JEPA runs in wall-clock, not steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from composer.core import Callback, State
from composer.loggers import Logger

from protjepa.recipe import OptimConfig
from protjepa.training.budget import BudgetTracker

Shape = Literal["cosine", "linear", "constant"]


@dataclass(frozen=True)
class LRSchedule:
    """Multiplier of the base LR: linear warm-up from 0, then ``shape`` down to ``min_ratio``.

    ``warmup`` below 1 is a fraction of the budget; from 1 up it counts optimizer steps, and
    the decay then runs over the whole budget while the first steps ramp up.
    """

    shape: Shape = "cosine"
    warmup: float = 0.0
    min_ratio: float = 0.0

    @classmethod
    def from_config(cls, optim: OptimConfig) -> "LRSchedule":
        return cls(optim.schedule, float(optim.warmup), optim.min_lr_ratio)

    def __call__(self, fraction: float, step: int) -> float:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.warmup >= 1:
            ramp, progress = min(1.0, step / self.warmup), fraction
        elif fraction < self.warmup:
            return fraction / self.warmup
        else:
            ramp, progress = 1.0, (fraction - self.warmup) / (1.0 - self.warmup)
        return ramp * self.decay(progress)

    def decay(self, progress: float) -> float:
        if self.shape == "constant":
            return 1.0
        if self.shape == "linear":
            falloff = 1.0 - progress
        else:
            falloff = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * falloff


class ScheduledLR(Callback):
    """Sets each param group's LR at ``BATCH_START`` from the budget fraction spent so far.

    The base LR is kept as the group's ``initial_lr`` (torch's convention), which the
    optimizer's state dict carries through a resume.
    """

    def __init__(self, schedule: LRSchedule, tracker: BudgetTracker):
        self.schedule = schedule
        self.tracker = tracker

    def batch_start(self, state: State, logger: Logger) -> None:
        multiplier = self.schedule(self.tracker.fraction(state), int(state.timestamp.batch))
        for optimizer in state.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * multiplier
