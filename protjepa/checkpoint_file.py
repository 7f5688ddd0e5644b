"""Reading a training checkpoint file without running code from it, and checking its bytes.

Beside each checkpoint, ``<name>.sha256`` (``sha256sum -c`` reads it) holds its digest, checked
whenever the checkpoint is read. Reading unpickles with ``weights_only=True``, the few
non-tensor types a Composer checkpoint holds allow-listed, so a booby-trapped file is refused
instead of run. Below Composer and the model: resuming (training/checkpoints.py) and loading an
encoder from a run's checkpoint (export.py) both read through here.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.torch_version import TorchVersion

from protjepa.errors import UserError
from protjepa.files import check_regular

# What a Composer checkpoint pickles besides tensors and plain containers (listed by
# torch.serialization.get_unsafe_globals_in_checkpoint): timedeltas in its timestamp, the torch
# version in its metadata, and numpy's RNG state, an array (rebuilt by the function its
# __reduce__ names, numpy 1 and 2 alike).
SAFE_GLOBALS = [datetime.timedelta, TorchVersion, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                np.zeros(1).__reduce__()[0]]
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", re.S)
NAME = re.compile(r"ckpt-(\d\.\d{3})\.pt")  # ckpt-<fraction of the budget>.pt
DIGEST_CHUNK = 1 << 20
RECIPE_RECORD = "RecipeRecord"  # the callback whose state is the run's recipe (training/checkpoints.py)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be written or resumed from; the message names the file."""


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


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint furthest into the budget in ``folder`` (``ckpt-<fraction>.pt``), or None."""
    found = [(float(m.group(1)), p) for p in folder.glob("ckpt-*.pt") if (m := NAME.fullmatch(p.name))]
    return max(found)[1] if found else None


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu", mmap: bool = False) -> dict:
    """A training checkpoint's contents: digest checked, then unpickled with ``weights_only=True``."""
    path = Path(path)
    check_regular(path, CheckpointError, "checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    verify_digest(path)
    return load_weights_only(path, "protjepa training checkpoint", CheckpointError, SAFE_GLOBALS,
                             map_location=map_location, mmap=mmap)


def load_weights_only(path: Path, what: str, error: type[Exception], safe_globals: Sequence = (),
                      **options: Any) -> Any:
    """``torch.load(path, weights_only=True)`` with ``safe_globals`` allowed: nothing in the file runs.
    A file it cannot read raises ``error`` in one line, ``<path>: not a <what>: <why>`` (PyTorch's own
    message is paragraphs of advice): the global it refused, or what its reader stumbled on."""
    try:
        with torch.serialization.safe_globals(list(safe_globals)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. an unusual pickle protocol: the error below says what matters
            return torch.load(path, weights_only=True, **options)
    except pickle.UnpicklingError as exc:
        found = REFUSED_GLOBAL.search(str(exc))
        if found:
            raise error(f"{path}: not a {what}: it pickles {found.group(1)}, refused (read with weights_only=True: "
                        "no code runs from a checkpoint)") from None
        reason = UNPICKLER_REASON.search(str(exc))
        why = " ".join(reason.group(1).split()) if reason else _first_line(exc)
        raise error(f"{path}: not a {what}: torch.load cannot read it ({why})") from None
    except Exception as exc:  # torch.load raises many types for foreign files
        empty = Path(path).is_file() and Path(path).stat().st_size == 0
        why = "the file is empty" if empty else f"torch.load cannot read it ({_first_line(exc)})"
        raise error(f"{path}: not a {what}: {why}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def recorded_recipe(data: dict) -> str | None:
    """The recipe a checkpoint's run trained with (YAML text, as its ``recipe.yaml`` held it then), from the
    checkpoint's contents; None for a checkpoint written before checkpoints carried it."""
    try:
        text = data["state"]["callbacks"][RECIPE_RECORD]["recipe"]
    except (KeyError, TypeError):
        return None
    return text if isinstance(text, str) else None


def written_world_size(data: dict) -> int | None:
    """How many processes trained the run when it wrote this checkpoint (Composer's metadata), or None."""
    try:
        size = data["state"]["metadata"]["world_size"]
    except (KeyError, TypeError):
        return None
    return size if isinstance(size, int) else None


def model_state(path: Path, model: torch.nn.Module, prefix: str = "", data: dict | None = None) -> dict[str, torch.Tensor]:
    """The weights in training checkpoint ``path`` (``data``: its contents, when already read) whose names
    start with ``prefix`` (``model.``: the ProtJEPA inside Composer's model), without it; refused in one
    line unless they fit ``model``."""
    try:
        saved = (data if data is not None else read_checkpoint(path, mmap=True))["state"]["model"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: not a protjepa training checkpoint (no model state)") from None
    saved = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
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
            f"{path}: saved from a different architecture: {problems[0]}{more}; use it with the recipe that wrote it"
        )
    return saved
