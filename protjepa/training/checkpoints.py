"""Composer checkpoints at fractions of the budget, written whole or not at all, read without running code.

Each checkpoint is ``checkpoints/ckpt-<fraction>.pt`` (e.g. ``ckpt-0.125.pt`` after an
eighth of the budget), written under a temporary name and renamed, so an error or an
interrupt never leaves a half-written file where a resume would find it. Beside it,
``ckpt-<fraction>.pt.sha256`` (``sha256sum -c`` reads it) holds its digest, checked
whenever the checkpoint is read. Reading unpickles with ``weights_only=True``, the few
non-tensor types a Composer checkpoint holds allow-listed, so a booby-trapped file is
refused instead of run; Composer's own restore is routed through the same reader.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import checkpoint as composer_checkpoint
from composer.utils import dist
from composer.utils.checkpoint import save_checkpoint
from torch.torch_version import TorchVersion

from protjepa.errors import UserError
from protjepa.training.budget import BudgetTracker
from protjepa.training.finite import FirstNonFinite

NAME = re.compile(r"ckpt-(\d\.\d{3})\.pt")
PARTIAL = ".partial-"
# What a Composer checkpoint pickles besides tensors and plain containers (listed by
# torch.serialization.get_unsafe_globals_in_checkpoint): timedeltas in its timestamp, the torch
# version in its metadata, and numpy's RNG state, an array (rebuilt by the function its
# __reduce__ names, numpy 1 and 2 alike).
SAFE_GLOBALS = [datetime.timedelta, TorchVersion, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                np.zeros(1).__reduce__()[0]]
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
DIGEST_CHUNK = 1 << 20


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be written or resumed from; the message names the file."""


def checkpoint_path(folder: Path, fraction: float) -> Path:
    return folder / f"ckpt-{fraction:.3f}.pt"


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint furthest into the budget in ``folder``, or None."""
    found = [(float(m.group(1)), p) for p in folder.glob("ckpt-*.pt") if (m := NAME.fullmatch(p.name))]
    return max(found)[1] if found else None


def clean_partials(folder: Path) -> list[Path]:
    """Remove what a killed writer left (``.partial-*``); only while the run directory is locked."""
    stale = sorted(folder.glob(f"{PARTIAL}*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(DIGEST_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def verify_digest(path: Path) -> None:
    """Refuse a checkpoint whose bytes differ from the digest written beside it. A checkpoint
    without one (written before digests were) is read unverified."""
    sidecar = digest_path(path)
    if not sidecar.is_file():
        return
    expected = sidecar.read_text().split(maxsplit=1)[0] if sidecar.read_text().strip() else ""
    if file_digest(path) != expected:
        raise CheckpointError(f"{path}: its bytes do not match the sha256 in {sidecar.name}: the file is corrupt "
                              "or was changed after it was written; resume from another checkpoint")


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu", mmap: bool = False) -> dict:
    """A training checkpoint's contents: digest checked, then unpickled with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    verify_digest(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = REFUSED_GLOBAL.search(str(exc))
        what = found.group(1) if found else str(exc).strip().splitlines()[-1]
        raise CheckpointError(f"{path}: refused: it pickles {what}, which no protjepa checkpoint holds "
                              "(checkpoints are read with weights_only=True: no code runs from them)") from None
    except Exception as exc:  # torch.load raises many types for foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a protjepa training checkpoint ({first})") from None


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


def check_compatible(path: Path, model: torch.nn.Module) -> None:
    """Refuse, in one line, a file that is not a training checkpoint of this architecture."""
    try:
        saved = read_checkpoint(path, mmap=True)["state"]["model"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: not a protjepa training checkpoint (no model state)") from None
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
