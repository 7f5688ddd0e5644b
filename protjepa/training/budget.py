"""Budgets in wall-clock seconds, tokens, steps or model FLOPs, and the training clock.

Composer 0.32.1 rejects a wall-clock ``max_duration`` and has no FLOP unit, so such a run
gets an unreachable step limit and :class:`BudgetTracker` stops it. The tracker also tells
the LR schedule, the EMA momentum and the checkpointer what fraction of the budget is spent,
and counts every run's model FLOPs (:mod:`protjepa.flops`), whatever its budget.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Literal

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from protjepa.batch import Batch
from protjepa.errors import UserError
from protjepa.recipe import BudgetConfig
from protjepa.training.parallel import host_total

Unit = Literal["wall_clock", "tokens", "steps", "flops"]
UNREACHABLE_STEPS = 10**12


class FlopCountError(UserError, ValueError):
    """A FLOP budget on a model or checkpoint that cannot count FLOPs."""


@dataclass(frozen=True)
class Budget:
    unit: Unit
    amount: float  # seconds, non-padding residues, optimizer steps, or model FLOPs

    @classmethod
    def from_config(cls, config: BudgetConfig) -> "Budget":
        if config.seconds is not None:
            return cls("wall_clock", config.seconds)
        if config.tokens is not None:
            return cls("tokens", float(config.tokens))
        if config.flops is not None:
            return cls("flops", float(config.flops))
        return cls("steps", float(config.steps))

    @property
    def max_duration(self) -> str:
        """Composer's ``max_duration``: steps and tokens are native units, wall-clock and FLOPs are ours."""
        if self.unit == "steps":
            return f"{int(self.amount)}ba"
        if self.unit == "tokens":
            return f"{int(self.amount)}tok"
        return f"{UNREACHABLE_STEPS}ba"

    def __str__(self) -> str:
        if self.unit == "wall_clock":
            return f"{self.amount:g} s of training clock"
        if self.unit == "flops":
            return f"{self.amount:g} model FLOPs"
        return f"{self.amount:g} {'non-padding tokens' if self.unit == 'tokens' else 'steps'}"


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process, forward and backward graphs
    (torch's own counters; 0 where torch.compile never ran: its module is then not loaded)."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    counters = getattr(dynamo, "cumulative_time_spent_ns", None) or {}
    return (counters.get("entire_frame_compile", 0) + counters.get("entire_backward_compile", 0)) / 1e9


class TrainingClock:
    """Seconds spent in finished training steps (``elapsed``). It runs from each batch's fetch
    to its ``BATCH_END``, so what happens between batches (monitors, checkpoints, evaluation)
    does not count; nor does torch.compile's compiling inside a step (``compiled``: paid once
    per graph, reported apart), so a compiled run and an eager one get the same budget of steps'
    time."""

    def __init__(self, now: Callable[[], float] = time.perf_counter, compiling: Callable[[], float] = compile_seconds):
        self.now = now
        self.compiling = compiling
        self.elapsed = 0.0
        self.compiled = 0.0  # seconds of compiling taken off the clock, this process
        self._started: float | None = None
        self._compiled_at_start = 0.0

    def start(self) -> None:
        # A fetch that starts again restarts the count: the batches a resumed run skips
        # to reach its place in the stream are not training.
        self._started = self.now()
        self._compiled_at_start = self.compiling()

    def stop(self) -> None:
        if self._started is not None:
            compiled = self.compiling() - self._compiled_at_start
            self.compiled += compiled
            self.elapsed += self.now() - self._started - compiled
            self._started = None


class BudgetTracker(Callback):
    """Keeps the training clock and the FLOP count, stops a wall-clock or FLOP run at its
    budget, and reports progress.

    ``step_flops`` gives a batch's training-step FLOPs from host-side sizes; None when the
    model cannot count them (``flops`` then stays None, and a FLOP budget is refused before).
    Its state (training-clock seconds, FLOPs) goes into Composer checkpoints, so a resumed
    run continues the same budget rather than starting a new one.
    """

    def __init__(self, budget: Budget, clock: TrainingClock | None = None,
                 step_flops: Callable[[Batch], float] | None = None):
        self.budget = budget
        self.clock = clock or TrainingClock()
        self.step_flops = step_flops
        self.flops: float | None = None if step_flops is None else 0.0  # summed over ranks

    def spent(self, state: State) -> float:
        """Budget spent by the finished steps: the same number on every rank."""
        if self.budget.unit == "steps":
            return float(state.timestamp.batch.value)
        if self.budget.unit == "tokens":
            return float(state.timestamp.token.value)  # Composer sums it over ranks
        if self.budget.unit == "flops":
            return self.flops
        return self.clock.elapsed

    def fraction(self, state: State) -> float:
        return min(self.spent(state) / self.budget.amount, 1.0)

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self.clock.start()

    def batch_end(self, state: State, logger: Logger) -> None:
        self.clock.stop()
        if self.flops is not None:
            self._count_flops(state)
        if self.budget.unit == "flops" and self.flops >= self.budget.amount:
            state.stop_training()
        if self.budget.unit != "wall_clock":
            return
        if dist.get_world_size() > 1:
            # One clock for all ranks (the slowest), so that they set the same LR and EMA
            # momentum, checkpoint together, and stop after the same step.
            self.clock.elapsed = host_total(self.clock.elapsed, "MAX")
        if self.clock.elapsed >= self.budget.amount:
            state.stop_training()

    def _count_flops(self, state: State) -> None:
        flops = self.step_flops(state.batch)
        if dist.get_world_size() > 1:
            # Every rank ran its own batch: the run's count is their sum, the same on every rank.
            flops = host_total(flops, "SUM")
        self.flops += flops

    def state_dict(self) -> dict:
        return {"train_seconds": self.clock.elapsed, "flops": self.flops}

    def load_state_dict(self, state: dict) -> None:
        self.clock.elapsed = float(state["train_seconds"])
        if self.flops is not None:
            # None: saved by a run that did not count them; its FLOPs are unknown from here on.
            self.flops = state.get("flops")
            if self.flops is None and self.budget.unit == "flops":
                raise FlopCountError("budget.flops: the checkpoint holds no FLOP count (saved by a run that did "
                                     "not count them), so it cannot continue a FLOP budget")
