"""Budgets in wall-clock seconds, tokens or steps, and the training clock.

Composer 0.32.1 rejects a wall-clock ``max_duration``, so a wall-clock run gets an
unreachable step limit and :class:`BudgetTracker` stops it. The tracker also tells the
LR schedule, the EMA momentum and the checkpointer what fraction of the budget is spent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from protjepa.recipe import BudgetConfig

Unit = Literal["wall_clock", "tokens", "steps"]
UNREACHABLE_STEPS = 10**12


@dataclass(frozen=True)
class Budget:
    unit: Unit
    amount: float  # seconds, non-padding residues, or optimizer steps

    @classmethod
    def from_config(cls, config: BudgetConfig) -> "Budget":
        if config.seconds is not None:
            return cls("wall_clock", config.seconds)
        if config.tokens is not None:
            return cls("tokens", float(config.tokens))
        return cls("steps", float(config.steps))

    @property
    def max_duration(self) -> str:
        """Composer's ``max_duration``: steps and tokens are native units, wall-clock is ours."""
        if self.unit == "steps":
            return f"{int(self.amount)}ba"
        if self.unit == "tokens":
            return f"{int(self.amount)}tok"
        return f"{UNREACHABLE_STEPS}ba"

    def __str__(self) -> str:
        if self.unit == "wall_clock":
            return f"{self.amount:g} s of training clock"
        return f"{self.amount:g} {'non-padding tokens' if self.unit == 'tokens' else 'steps'}"


class TrainingClock:
    """Seconds spent in finished training steps (``elapsed``). It runs from each batch's fetch
    to its ``BATCH_END``, so what happens between batches (monitors, checkpoints, evaluation)
    does not count."""

    def __init__(self, now: Callable[[], float] = time.perf_counter):
        self.now = now
        self.elapsed = 0.0
        self._started: float | None = None

    def start(self) -> None:
        # A fetch that starts again restarts the count: the batches a resumed run skips
        # to reach its place in the stream are not training.
        self._started = self.now()

    def stop(self) -> None:
        if self._started is not None:
            self.elapsed += self.now() - self._started
            self._started = None


class BudgetTracker(Callback):
    """Keeps the training clock, stops a wall-clock run at its budget, and reports progress.

    Its state (training-clock seconds) goes into Composer checkpoints, so a resumed run
    continues the same budget rather than starting a new one.
    """

    def __init__(self, budget: Budget, clock: TrainingClock | None = None):
        self.budget = budget
        self.clock = clock or TrainingClock()

    def spent(self, state: State) -> float:
        """Budget spent by the finished steps: the same number on every rank."""
        if self.budget.unit == "steps":
            return float(state.timestamp.batch.value)
        if self.budget.unit == "tokens":
            return float(state.timestamp.token.value)  # Composer sums it over ranks
        return self.clock.elapsed

    def fraction(self, state: State) -> float:
        return min(self.spent(state) / self.budget.amount, 1.0)

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self.clock.start()

    def batch_end(self, state: State, logger: Logger) -> None:
        self.clock.stop()
        if self.budget.unit != "wall_clock":
            return
        if dist.get_world_size() > 1:
            # One clock for all ranks (the slowest), so that they set the same LR and EMA
            # momentum, checkpoint together, and stop after the same step.
            slowest = state.device.tensor_to_device(torch.tensor([self.clock.elapsed], dtype=torch.float64))
            dist.all_reduce(slowest, reduce_operation="MAX")
            self.clock.elapsed = slowest.item()
        if self.clock.elapsed >= self.budget.amount:
            state.stop_training()

    def state_dict(self) -> dict:
        return {"train_seconds": self.clock.elapsed}

    def load_state_dict(self, state: dict) -> None:
        self.clock.elapsed = float(state["train_seconds"])
