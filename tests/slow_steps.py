"""A Composer callback that makes every training step of a run slower, as other work on a shared
machine would: the experiment tests' slowed arm (``train.callbacks``)."""
from __future__ import annotations

import time

from composer.core import Callback, State
from composer.loggers import Logger


class SlowSteps(Callback):
    """Sleeps ``seconds`` inside every training step, on the training clock (before the forward)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def before_forward(self, state: State, logger: Logger) -> None:
        time.sleep(self.seconds)
