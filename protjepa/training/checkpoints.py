"""Composer checkpoints at fractions of the budget, written whole or not at all, read without running code.

Each checkpoint is ``checkpoints/ckpt-<fraction>.pt`` (e.g. ``ckpt-0.125.pt`` after an
eighth of the budget), written under a temporary name and renamed, so an error or an
interrupt never leaves a half-written file where a resume would find it. Beside it,
``ckpt-<fraction>.pt.sha256`` holds its digest; every read goes through
:func:`protjepa.checkpoint_file.read_checkpoint` (digest checked, ``weights_only=True``),
Composer's own restore included.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import checkpoint as composer_checkpoint
from composer.utils import dist
from composer.utils.checkpoint import save_checkpoint

from protjepa.checkpoint_file import (RECIPE_RECORD, CheckpointError, digest_path, file_digest, latest_checkpoint,
                                      read_checkpoint)
from protjepa.training.budget import BudgetTracker
from protjepa.training.finite import FirstNonFinite

PARTIAL = ".partial-"


def checkpoint_path(folder: Path, fraction: float) -> Path:
    return folder / f"ckpt-{fraction:.3f}.pt"


def clean_partials(folder: Path) -> list[Path]:
    """Remove what a killed writer left (``.partial-*``); only while the run directory is locked."""
    stale = sorted(folder.glob(f"{PARTIAL}*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _composer_reader(path: str, map_location: str) -> dict:
    # Composer reads a local checkpoint through a symlink to it in a temporary folder:
    # resolve() follows it back to the file and its digest.
    return read_checkpoint(Path(path).resolve(), map_location)


# Composer 0.32.1 unpickles every checkpoint it restores with weights_only=False, in this one
# function; protjepa/training is the only importer of Composer, so from here on every restore
# (Trainer(load_path=...), autoresume) goes through read_checkpoint. The assert fails loudly if
# an upgrade renames it.
assert callable(composer_checkpoint._torch_load_with_validation)
composer_checkpoint._torch_load_with_validation = _composer_reader


def _write_digest(data: Path, named: Path) -> None:
    """``named``'s sidecar from the bytes of ``data`` (the file about to be renamed to ``named``), written whole."""
    sidecar = digest_path(named)
    tmp = sidecar.with_name(PARTIAL + sidecar.name)
    tmp.write_text(f"{file_digest(data)}  {named.name}\n")
    os.replace(tmp, sidecar)


def save_atomic(state: State, path: Path) -> None:
    """Composer's full checkpoint of ``state`` at ``path`` and its digest: every rank joins, rank 0 writes."""
    tmp = path.with_name(PARTIAL + path.name)  # ends in .pt: Composer picks the writer by suffix
    writer = dist.get_global_rank() == 0
    try:
        save_checkpoint(state, str(tmp))
        if writer:
            _write_digest(tmp, path)  # before the rename: a checkpoint never exists without its digest
            os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the checkpoint: {exc.strerror or exc}") from None
    except RuntimeError as exc:
        if "inline_container" not in str(exc):  # torch's zip writer says so when a write fails (a full disk)
            raise
        raise CheckpointError(f"{path}: cannot write the checkpoint (is the disk full?)") from None
    finally:
        if writer:  # only the writer: another rank could remove the file before rank 0 is done with it
            tmp.unlink(missing_ok=True)


class BudgetCheckpointer(Callback):
    """Saves a checkpoint when the budget fraction spent first reaches each of ``fractions``;
    never one of non-finite weights (``non_finite``: the losses' record, read before each save)."""

    def __init__(self, folder: Path, fractions: list[float], tracker: BudgetTracker, non_finite: FirstNonFinite):
        self.folder = folder
        self.non_finite = non_finite
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
        self.non_finite.check(state.model, int(state.timestamp.batch))
        path = checkpoint_path(self.folder, due[-1])
        save_atomic(state, path)
        self.saved.append(path)
        if dist.get_global_rank() == 0:
            for passed in due[:-1]:  # one step crossed several fractions: same weights, every name
                link = checkpoint_path(self.folder, passed)
                for source, target in ((path, link), (digest_path(path), digest_path(link))):
                    target.unlink(missing_ok=True)
                    os.link(source, target)
                self.saved.append(link)


class RecipeRecord(Callback):
    """Puts the run's recipe, as its ``recipe.yaml`` holds it, into every checkpoint (Composer saves each
    callback's state): a checkpoint says what trained it, whatever later becomes of ``recipe.yaml``
    (:func:`protjepa.checkpoint_file.recorded_recipe` reads it back)."""

    def __init__(self, text: str):
        self.text = text

    def state_dict(self) -> dict:
        return {"recipe": self.text}

    def load_state_dict(self, state: dict) -> None:
        pass  # a resumed run records the recipe it runs now, checked against this one when it started


assert RecipeRecord.__qualname__ == RECIPE_RECORD  # Composer keys a callback's state by its class name
