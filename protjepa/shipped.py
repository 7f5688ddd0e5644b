"""The recipes and experiment files that ship with protjepa, and the names that resolve to them.

They are the repository's ``recipes/`` folder, installed as the package ``protjepa.recipes``
(pyproject's package-dir), so a wheel install has them too. A recipe argument is a file when
one exists at that path; otherwise a shipped file's name: ``mlm_jepa_masked`` or
``experiments/smoke`` (``.yaml`` optional). ``protjepa recipes`` lists them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from protjepa.errors import UserError

EXPERIMENTS = "experiments"


class ShippedError(UserError, FileNotFoundError):
    """An unknown shipped name, or a copy that would overwrite a file."""


@dataclass(frozen=True)
class Shipped:
    name: str  # what commands accept: mlm, experiments/smoke
    path: Path
    description: str


def folder() -> Path:
    """Where the shipped recipes are installed (``recipes/`` itself in an editable install)."""
    return Path(str(resources.files("protjepa.recipes")))


def shipped() -> list[Shipped]:
    """Every shipped recipe, then every experiment file, by name."""
    root = folder()
    files = sorted(root.glob("*.yaml")) + sorted((root / EXPERIMENTS).glob("*.yaml"))
    return [Shipped(path.relative_to(root).with_suffix("").as_posix(), path, _description(path)) for path in files]


def _description(path: Path) -> str:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return ""
    return str(raw.get("description", "")) if isinstance(raw, dict) else ""


def find(name: str | os.PathLike, base: Path | None = None) -> Path:
    """``name`` as a file (relative to ``base`` when given) when it exists, else the shipped file of
    that name, else the path unchanged for the reader to report as missing."""
    path = base / name if base is not None else Path(name)
    if path.exists() or Path(name).is_absolute():
        return path
    root = folder()
    for candidate in (root / name, root / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return path


def copy(name: str, dest: str | os.PathLike | None = None) -> Path:
    """Copy the shipped file ``name`` to ``dest`` (a file, or a folder to copy into; default: here)."""
    by_name = {s.name: s for s in shipped()}
    entry = by_name.get(str(name).removesuffix(".yaml"))
    if entry is None:
        raise ShippedError(f"{name}: no shipped recipe or experiment of that name "
                           f"(shipped: {', '.join(by_name)})")
    target = Path(dest) if dest is not None else Path(entry.path.name)
    if target.is_dir():
        target = target / entry.path.name
    if target.exists():
        raise ShippedError(f"{target}: already exists; give another destination")
    target.write_text(entry.path.read_text())
    return target
