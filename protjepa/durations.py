"""Budget strings people write: ``90s``, ``30min``, ``8h``, ``24h``, ``1h30m``, ``1.5h``, ``2d``;
and counts: ``2e8tok``, ``1000steps``, ``3e14flop``.

(Composer's own parser rejects ``90s`` and ``24h``, and its ``max_duration`` rejects wall-clock
units, so wall-clock budgets are enforced by our callback; see protjepa/training.)
"""
from __future__ import annotations

import math
import re

from protjepa.errors import UserError

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, "sec": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|sec|s)", re.IGNORECASE)


class BudgetError(UserError, ValueError):
    pass


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration string; a bare number is seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text) if abs(text) < 1e300 else math.inf  # float() of a longer int overflows
    else:
        s = text.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s)
        else:
            pos, seconds = 0, 0.0
            for m in _PART.finditer(s):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(s) or not s:
                raise BudgetError(f"cannot parse duration {text!r} (examples: 90s, 30min, 8h, 1h30m)")
    if not 0 < seconds < math.inf:
        raise BudgetError(f"duration {text!r} must be positive and finite")
    return seconds


_COUNT = re.compile(r"(\d+(?:\.\d+)?(?:e\d+)?)\s*(steps?|ba|tok|tokens?|flops?)", re.IGNORECASE)


def parse_budget(text: str) -> dict[str, str | int | float]:
    """A ``--budget`` argument -> the recipe's ``budget:`` mapping; errors name ``--budget``.

    ``90s`` / ``8h`` / ``1h30m`` -> wall clock; ``2e8tok`` / ``2e8tokens`` -> non-padding
    residues; ``1000steps`` / ``1000ba`` -> optimizer steps; ``3e14flop`` / ``3e14flops`` ->
    model FLOPs.
    """
    m = _COUNT.fullmatch(text.strip().replace(" ", ""))
    if m is None:
        try:
            parse_duration(text)
        except BudgetError as exc:
            raise BudgetError(f"--budget: {exc}; or a count: 2e8tok, 1000steps, 3e14flop") from None
        return {"wall_clock": text.strip()}
    value, unit = float(m.group(1)), m.group(2).lower()
    if not 0 < value < math.inf or (unit in ("ba", "step", "steps") and not value.is_integer()):
        raise BudgetError(f"--budget {text!r}: steps must be a positive whole number, tokens and FLOPs positive "
                          "and finite")
    if unit.startswith("tok"):
        return {"tokens": value}
    if unit.startswith("flop"):
        return {"flops": value}
    return {"steps": int(value)}
