"""The EMA teacher update as a Composer algorithm, run after each optimizer step."""
from __future__ import annotations

from composer.core import Algorithm, Event, State
from composer.loggers import Logger

from protjepa.training.budget import BudgetTracker
from protjepa.training.composer_model import unwrap


class EMATeacherUpdate(Algorithm):
    """``teacher <- m * teacher + (1 - m) * student`` with ``m`` on the budget-fraction schedule.

    ``BATCH_END`` is the first event after ``optimizer.step()`` (``AFTER_TRAIN_BATCH``
    comes before it, where gradients are clipped).
    """

    def __init__(self, tracker: BudgetTracker):
        self.tracker = tracker

    def match(self, event: Event, state: State) -> bool:
        return event == Event.BATCH_END

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        model = unwrap(state.model)
        model.ema_update(model.momentum_at(self.tracker.fraction(state)))
