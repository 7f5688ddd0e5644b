"""``provenance.json`` in the run folder: what a run needs to be repeated or traced.

The package versions (protjepa, torch, Composer, transformers, numpy, Python), the git commit
when protjepa runs from a checkout, the machine (CPU and GPU names, torch threads) and the data
files, each by its path relative to the data root (absolute only for a file outside it), with
its size and SHA-256 digest: a record that reads the same on any machine (``data_root`` says where
this machine found them). ``protjepa probe RUN`` reads the pretraining corpus from here for its
leakage check (under its own data root, else the run's, the digest checked), wherever the task
data lie.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from protjepa.checkpoint_file import file_digest
from protjepa.data.corpus import data_files
from protjepa.errors import UserError
from protjepa.paths import data_root as find_data_root
from protjepa.recipe import Recipe
from protjepa.yamlio import read_json

FILE = "provenance.json"
PACKAGES = ("protjepa", "torch", "mosaicml", "transformers", "numpy", "torchtune", "xformers")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(folder: Path) -> dict | None:
    """The commit protjepa runs from, and whether the checkout has uncommitted changes."""
    if not (folder / ".git").exists():
        return None  # an installed wheel
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()), "checkout": str(folder)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": gpus,
            "platform": platform.platform(), "hostname": platform.node()}


def file_record(path: Path, root: Path) -> dict:
    """A data file as records name it: its path relative to the data root ``root`` (absolute when it
    lies outside), size and SHA-256 digest."""
    path, root = path.resolve(), root.resolve()
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return {"path": name, "bytes": path.stat().st_size, "sha256": file_digest(path)}


def recorded_file(record: dict, roots: list[Path], where: str) -> Path:
    """The file a :func:`file_record` names, under the first of the data ``roots`` that holds it, once
    its digest is the record's (a record of an absolute path, as runs wrote before 2026-12-08, is
    taken as it is)."""
    name = Path(record["path"])
    candidates = [name] if name.is_absolute() else [root / name for root in roots]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise UserError(f"{candidates[0]}: the data file {where} records is not there (looked under "
                        f"{', '.join(map(str, roots)) if not name.is_absolute() else 'its absolute path'})")
    if "sha256" in record and file_digest(path) != record["sha256"]:
        raise UserError(f"{path}: not the file {where} records (its SHA-256 differs): another version of the data")
    return path


def provenance(recipe: Recipe, data_root: str | None) -> dict:
    checkout = Path(__file__).resolve().parents[1]
    root = find_data_root(data_root or recipe.data.root)
    return {
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "git": _git(checkout),
        "machine": machine(),
        "data_root": str(root.resolve()),  # this machine's: where the relative paths below were found
        "data": {role: file_record(path, root) for role, path in data_files(recipe.data, data_root).items()},
    }


def write_provenance(run_dir: Path, recipe: Recipe, data_root: str | None) -> Path:
    path = run_dir / FILE
    path.write_text(json.dumps(provenance(recipe, data_root), indent=2) + "\n")
    return path


def recorded_corpus(run_dir: Path, root: Path) -> list[Path] | None:
    """The pretraining files a run recorded (train, then valid), each checked against its digest: under
    the data root ``root``, else under the one the run trained with (on this machine, where it still
    holds them); None for a run without the record."""
    path = run_dir / FILE
    if not path.is_file():
        return None
    record = read_json(path, UserError, "provenance")
    data = record.get("data", {}) if isinstance(record, dict) else None
    try:
        records = [data[role] for role in ("train", "valid") if role in data]
        roots = [root] + ([Path(record["data_root"])] if isinstance(record.get("data_root"), str) else [])
        return [recorded_file(r, roots, str(path)) for r in records]
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: not a provenance record of protjepa train (no data.train.path)") from None
