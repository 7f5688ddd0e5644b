"""Argument types the subcommands share: a flag's value is checked when it is parsed, and a bad one
is refused in one line naming the flag (``argument --max-train: expected a whole number at least 1,
got '0'``), before any work starts or any file is written."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number at least {minimum}, got {text!r}")
        return value

    return parse


def number(minimum: float, *, above: bool = False, maximum: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a finite number at least ``minimum`` (more than it with ``above``), at most ``maximum``."""
    wanted = f"a finite number {'above' if above else 'at least'} {minimum:g}"
    wanted += f" and at most {maximum:g}" if maximum < math.inf else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > minimum if above else value >= minimum) and value <= maximum):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse
