"""Composer checkpoints at fractions of the budget, written whole or not at all.

Each checkpoint is ``checkpoints/ckpt-<fraction>.pt`` (e.g. ``ckpt-0.125.pt`` after an
eighth of the budget), written under a temporary name and renamed, so an error or an
interrupt never leaves a half-written file where a resume would find it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from composer.utils.checkpoint import save_checkpoint

from protjepa.errors import UserError
from protjepa.training.budget import BudgetTracker

NAME = re.compile(r"ckpt-(\d\.\d{3})\.pt")


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be resumed from; the message names the file."""


def checkpoint_path(folder: Path, fraction: float) -> Path:
    return folder / f"ckpt-{fraction:.3f}.pt"


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint furthest into the budget in ``folder``, or None."""
    found = [(float(m.group(1)), p) for p in folder.glob("ckpt-*.pt") if (m := NAME.fullmatch(p.name))]
    return max(found)[1] if found else None


def save_atomic(state: State, path: Path) -> None:
    """Composer's full checkpoint of ``state`` at ``path``: every rank joins, rank 0 writes."""
    tmp = path.with_name(f".partial-{path.name}")  # ends in .pt: Composer picks the writer by suffix
    writer = dist.get_global_rank() == 0
    try:
        save_checkpoint(state, str(tmp))
        if writer:
            os.replace(tmp, path)
    finally:
        if writer:  # only the writer: another rank could remove the file before rank 0 is done with it
            tmp.unlink(missing_ok=True)


class BudgetCheckpointer(Callback):
    """Saves a checkpoint when the budget fraction spent first reaches each of ``fractions``."""

    def __init__(self, folder: Path, fractions: list[float], tracker: BudgetTracker):
        self.folder = folder
        self.fractions = sorted(fractions)
        self.tracker = tracker
        self.pending = list(self.fractions)
        self.saved: list[Path] = []

    def fit_start(self, state: State, logger: Logger) -> None:
        spent = self.tracker.fraction(state)  # a resumed run has passed some already
        self.pending = [f for f in self.fractions if f > spent]
        self.folder.mkdir(parents=True, exist_ok=True)

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        spent = self.tracker.fraction(state)
        due = [f for f in self.pending if spent >= f]
        if not due:
            return
        self.pending = self.pending[len(due):]
        path = checkpoint_path(self.folder, due[-1])
        save_atomic(state, path)
        self.saved.append(path)
        if dist.get_global_rank() == 0:
            for passed in due[:-1]:  # one step crossed several fractions: same weights, every name
                link = checkpoint_path(self.folder, passed)
                link.unlink(missing_ok=True)
                os.link(path, link)
                self.saved.append(link)


def check_compatible(path: Path, model: torch.nn.Module) -> None:
    """Refuse, in one line, a file that is not a training checkpoint of this architecture."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state"]["model"]
    except Exception as exc:  # torch.load raises many types for foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a protjepa training checkpoint ({first})") from None
    current = model.state_dict()
    problems = [f"{k} is missing" for k in current if k not in saved]
    problems += [f"{k} is not in this model" for k in saved if k not in current]
    problems += [
        f"{k} has shape {list(saved[k].shape)} there, {list(v.shape)} here"
        for k, v in current.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(
            f"{path}: saved from a different architecture: {problems[0]}{more}; resume it with the recipe that wrote it"
        )
