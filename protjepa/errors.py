"""User-facing errors: the CLI prints their message as one line and exits 2."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

# After SIGTERM a command has this long to unwind (say where it stopped, release its run's lock) before
# the process ends regardless: a thread blocked in a read would otherwise keep it alive at exit.
STOP_GRACE_SECONDS = 10.0


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


@contextmanager
def sigterm_interrupts() -> Iterator[list[int]]:
    """SIGTERM (what schedulers and ``kill`` send) stops the command as Ctrl-C does, raising
    :class:`Interrupted` in the main thread, so that it too says where it stopped and how to go on;
    yields the list of the signals received. A process still there ``STOP_GRACE_SECONDS`` after the
    signal (a thread stuck in a read holds the interpreter's exit) ends then with 128 + the signal."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers belong to the main thread
        return

    def stop(signum, frame):
        received.append(signum)
        threading.Thread(target=_end_after_grace, args=(signum,), name="stop-grace", daemon=True).start()
        raise Interrupted("", signum)  # a command turns it into where it stopped, as it does Ctrl-C

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield received
    finally:
        if signal.getsignal(signal.SIGTERM) is stop:  # else the run chose to ignore it while it ends (a lost rank)
            signal.signal(signal.SIGTERM, previous)


def _end_after_grace(signum: int) -> None:
    time.sleep(STOP_GRACE_SECONDS)
    try:
        sys.stderr.write(f"protjepa: stopped by {signal.Signals(signum).name}: still not ended {STOP_GRACE_SECONDS:g} s "
                         "after the signal (a thread blocked in a read?): ended now\n")
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        os._exit(128 + signum)
