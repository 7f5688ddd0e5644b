"""A file stored as numbered parts of at most a given size, beside a manifest of their sizes and
SHA-256 digests, and read back whole with every part and the whole checked.

Where a file must travel through a channel with a per-file limit (a device machine returns files
of at most 16 MiB), ``write_parts`` writes ``<name>.part-1-of-3`` ... and last, once every part
is on disk, ``<name>.parts.json``::

    {"file": "model.safetensors", "bytes": 33554432, "sha256": "...",
     "parts": [{"file": "model.safetensors.part-1-of-3", "bytes": 15728640, "sha256": "..."}, ...]}

``read_parts`` refuses, in one line naming the file, a missing part, a part of another size
(truncated or grown), a part whose digest differs (altered) and a manifest that is not one.
Reading is data only: JSON and bytes.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path

from protjepa.errors import UserError

MANIFEST_SUFFIX = ".parts.json"
MiB = 1 << 20


class PartsError(UserError, ValueError):
    """A file in parts that cannot be read back whole; the message names the part or the manifest."""


def manifest_path(file: Path) -> Path:
    """``model.safetensors`` -> ``model.safetensors.parts.json`` beside it."""
    return file.with_name(file.name + MANIFEST_SUFFIX)


def in_parts(file: Path) -> bool:
    """Whether ``file`` is stored as parts (its manifest is there) rather than whole."""
    return manifest_path(file).is_file()


def part_names(name: str, count: int) -> list[str]:
    return [f"{name}.part-{i}-of-{count}" for i in range(1, count + 1)]


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(file: Path, data: bytes | memoryview) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parts(data: bytes, file: Path, part_bytes: int) -> dict:
    """Write ``data`` as ``file``'s parts of at most ``part_bytes`` bytes, then its manifest (returned).
    A whole ``file`` or parts of an earlier write beside it are removed: one copy, the one the manifest names."""
    if part_bytes < 1:
        raise ValueError(f"part_bytes must be at least 1, got {part_bytes}")
    view = memoryview(data)
    count = max(1, -(-len(view) // part_bytes))
    names = part_names(file.name, count)
    manifest_file = manifest_path(file)
    manifest_file.unlink(missing_ok=True)  # parts without a manifest are never read
    parts = []
    for i, name in enumerate(names):
        chunk = view[i * part_bytes:(i + 1) * part_bytes]
        _write_atomic(file.with_name(name), chunk)
        parts.append({"file": name, "bytes": len(chunk), "sha256": _sha256(chunk)})
    for stale in file.parent.glob(f"{glob.escape(file.name)}.part-*-of-*"):
        if stale.name not in names:
            stale.unlink()
    file.unlink(missing_ok=True)
    manifest = {"file": file.name, "bytes": len(view), "sha256": _sha256(view), "parts": parts}
    _write_atomic(manifest_file, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_manifest(file: Path) -> dict:
    """``file``'s manifest, its fields checked (a part's name must be one of the file's, in order)."""
    path = manifest_path(file)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PartsError(f"{path}: not a parts manifest ({type(exc).__name__}: {str(exc).splitlines()[0]})") \
            from None
    parts = manifest.get("parts") if isinstance(manifest, dict) else None
    if not (isinstance(parts, list) and parts and all(isinstance(p, dict) for p in parts)
            and isinstance(manifest.get("bytes"), int) and isinstance(manifest.get("sha256"), str)):
        raise PartsError(f"{path}: not a parts manifest (expected bytes, sha256 and a list of parts)")
    expected = part_names(file.name, len(parts))
    for i, part in enumerate(parts):
        if part.get("file") != expected[i] or not isinstance(part.get("bytes"), int) \
                or not isinstance(part.get("sha256"), str):
            raise PartsError(f"{path}: part {i + 1} should be {expected[i]} with its bytes and sha256, "
                             f"found {part!r}")
    return manifest


def read_parts(file: Path) -> bytes:
    """``file``'s bytes joined from its parts; each part's size and digest, then the whole's, checked."""
    manifest = read_manifest(file)
    chunks = []
    for part in manifest["parts"]:
        path = file.with_name(part["file"])
        if not path.is_file():
            raise PartsError(f"{path}: missing: {manifest_path(file).name} lists {len(manifest['parts'])} parts")
        chunk = path.read_bytes()
        if len(chunk) != part["bytes"]:
            raise PartsError(f"{path}: {len(chunk)} bytes, {manifest_path(file).name} says {part['bytes']}: "
                             "the part was truncated or altered")
        if _sha256(chunk) != part["sha256"]:
            raise PartsError(f"{path}: its sha256 differs from the one in {manifest_path(file).name}: "
                             "the part was altered")
        chunks.append(chunk)
    data = b"".join(chunks)
    if len(data) != manifest["bytes"] or _sha256(data) != manifest["sha256"]:
        raise PartsError(f"{manifest_path(file)}: the parts joined ({len(data)} bytes) do not match its size "
                         "and sha256")
    return data
