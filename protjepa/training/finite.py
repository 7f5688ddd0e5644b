"""Non-finite training stops with one line, before a checkpoint or an export holds its weights.

The training step never syncs for it: :class:`FirstNonFinite` keeps, on the device, the first
step at which each loss term was not finite (a ``torch.where`` on the values ``MetricsLog``
stacks anyway), and is read by ``MetricsLog`` in the one sync of its logging interval; before
each checkpoint and collapse monitor (which sync anyway) it is read and the weights are checked.
So a run stops at most ``train.log_every`` steps after the bad one, naming it, and never
writes its weights.
"""
from __future__ import annotations

import torch
from torch import Tensor

from protjepa.errors import UserError
from protjepa.training.parallel import every_rank, local_shard, over_ranks

NEVER = float("inf")


class NonFiniteError(UserError, RuntimeError):
    """A loss term or the weights went NaN or infinite."""


def is_loss(key: str) -> bool:
    return key == "loss" or key.endswith("/loss")


class FirstNonFinite:
    """Per loss key (``loss``, ``<objective id>/loss``), the first step whose value was not finite."""

    def __init__(self):
        self.keys: list[str] = []
        self._rows: Tensor | None = None
        self.first: Tensor | None = None  # on the device; NEVER where the key stayed finite

    def update(self, keys: list[str], values: Tensor, step: int) -> None:
        """``values``: the step's metrics stacked in ``keys`` order, on the device (no sync here)."""
        if self.first is None:
            self.keys = [k for k in keys if is_loss(k)]
            self._rows = torch.tensor([i for i, k in enumerate(keys) if is_loss(k)], device=values.device)
            self.first = torch.full((len(self.keys),), NEVER, dtype=torch.float64, device=values.device)
        bad = ~torch.isfinite(values.index_select(0, self._rows))
        self.first = torch.where(bad, self.first.clamp(max=float(step)), self.first)

    def raise_if_seen(self, first: list[float] | None = None) -> None:
        """Raise :class:`NonFiniteError` if a loss went non-finite; ``first``: ``self.first`` already
        read to the host (by the caller's own sync), else it is read here."""
        if self.first is None:
            return
        first = self.first.tolist() if first is None else first
        step = min(first)
        if step == NEVER:
            return
        terms = [k.removesuffix("/loss") for k, s in zip(self.keys, first) if s == step and k != "loss"]
        what = (f"the {', '.join(terms)} loss term{'s' if len(terms) > 1 else ''} went non-finite" if terms
                else "the weighted sum of the loss terms went non-finite (each term was finite)")
        raise NonFiniteError(f"step {int(step)}: {what}")

    def check(self, model: torch.nn.Module, step: int) -> None:
        """Where the host reads the device anyway: the losses so far, then the weights after ``step``.
        On several ranks what any rank saw (its own losses, its shard of the weights), so that they stop together."""
        if self.first is not None:
            self.raise_if_seen(over_ranks(self.first.clone(), "MIN").tolist())
        finite = torch.stack([torch.isfinite(local_shard(p)).all() for p in model.parameters()]).all()
        if not every_rank(finite):
            raise NonFiniteError(f"step {step}: the weights went non-finite in the optimizer step "
                                 "(the losses were finite)")
