"""The torch device a command or a call runs on: ``auto`` (a GPU when torch sees one, else the
CPU), ``cpu``, ``cuda`` or ``cuda:N``. One this machine does not have is refused in one line that
names the setting, before any work."""
from __future__ import annotations

import torch

from protjepa.errors import ArgumentError

CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(requested: str | torch.device | None, what: str = "device") -> torch.device:
    """``requested`` (None: ``auto``) as a device that is here; ``what`` names the setting in errors (``--device``)."""
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested) if isinstance(requested, (str, torch.device)) else None
    except RuntimeError:  # torch's parser: "Expected one of cpu, cuda, ... device type at start of ..."
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ArgumentError(f"{what} {requested!r}: expected {CHOICES}")
    if device.type == "cpu":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ArgumentError(f"{what} {requested}: torch sees no CUDA device here (use auto or cpu)")
    if (device.index or 0) >= count:
        raise ArgumentError(f"{what} {requested}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device
