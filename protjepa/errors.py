"""User-facing errors: the CLI prints their message as one line and exits 2."""
from __future__ import annotations

import signal
from typing import Any


class UserError(Exception):
    """Bad input (a recipe, a file, a checkpoint, a budget); the message names the place."""


class ArgumentError(UserError, TypeError, ValueError):
    """An argument of a library call (``import protjepa``) of the wrong type or out of range; the
    message names the argument."""


def whole_number(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` when it is a whole number at least ``minimum`` (a bool is not one), else an ArgumentError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArgumentError(f"{name} {value!r}: expected a whole number at least {minimum}")
    return value


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal: Ctrl-C (SIGINT), or SIGTERM as schedulers send. The message
    says where it stopped and how to go on; the command exits 128 + the signal's number."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum
