"""Where the data lives: one root folder, files named relative to it.

The root is, in order: an explicit path (``data.root`` in the recipe, ``--data-root``),
the ``PROTJEPA_DATA`` environment variable, or ``shared/data`` beside the repository
(the folder holding ``pyproject.toml``) or beside the current working directory.
"""
from __future__ import annotations

import os
from pathlib import Path

from protjepa.errors import UserError
from protjepa.files import check_regular

ENV_VAR = "PROTJEPA_DATA"
# A name that is a folder of its own (an experiment's, a variant's, a task's): letters, digits, _ . -,
# not only dots ('.' and '..' are the folder above it and itself).
FOLDER_NAME = r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


class DataPathError(UserError, FileNotFoundError):
    """A data root or data file that is not there."""


def _repo_root() -> Path | None:
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root folder: explicit > $PROTJEPA_DATA > ``<repo>/../shared/data`` > ``./../shared/data``."""
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise DataPathError(f"data root {root} (data.root / --data-root): no such folder")
        return root
    if os.environ.get(ENV_VAR):
        root = Path(os.environ[ENV_VAR]).expanduser()
        if not root.is_dir():
            raise DataPathError(f"data root {root} (from ${ENV_VAR}): no such folder")
        return root
    repo = _repo_root()
    candidates = ([repo.parent / "shared" / "data"] if repo else []) + [Path.cwd().parent / "shared" / "data"]
    for root in candidates:
        if root.is_dir():
            return root
    raise DataPathError(
        f"no data root found (looked in {', '.join(map(str, candidates))}): "
        f"set data.root in the recipe, pass --data-root, or export {ENV_VAR}"
    )


def resolve(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative`` (an absolute ``relative`` stands alone), which must be a regular file
    (a named pipe would block its readers, a device such as /dev/zero never end)."""
    path = Path(root) / Path(relative).expanduser()
    if not path.exists():
        raise DataPathError(f"{path}: no such data file (data root {root})")
    check_regular(path, DataPathError, "data file")
    return path


class OutputPathError(UserError, OSError):
    """An output folder that cannot be created or written."""


def writable_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` created if needed and checked writable, before any work whose output goes there.
    ``what`` names it in the error (``--out``, ``run directory``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: the {what} is a file, not a folder")
    broken = next((p for p in (*reversed(path.parents), path) if p.is_symlink() and not p.exists()), None)
    if broken is not None:
        where = "is" if broken == path else "would be under"
        raise OutputPathError(f"{broken}: the {what} {where} a symbolic link to {os.readlink(broken)}, which does not "
                              "exist (a link to a missing folder, or a loop)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot write the {what} there: {exc.strerror} ({exc.filename})") from None
    return path


def writable_file(path: str | os.PathLike, what: str) -> Path:
    """Output file ``path``, its folder created if needed and checked writable and ``path`` no folder: before
    the work whose result it holds. ``what`` names it in the error (``--json``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path}: the {what} is a folder, not a file")
    writable_folder(path.parent, f"folder of the {what}")
    return path
