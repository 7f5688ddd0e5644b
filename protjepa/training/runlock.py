"""One ``protjepa train`` per run directory: an exclusive lock on ``<run>/.lock``.

The lock is a ``flock`` on the file, so the kernel releases it when its process exits,
however it exits; the file holds the owner's pid and start time for the message the next
process prints. A lock file left by a process that is gone is taken over, with a warning.
A run directory that cannot be written (under a file, a file itself, read-only) is reported
here, in one line, before anything is built.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from protjepa.errors import UserError
from protjepa.paths import writable_folder

LOCK_NAME = ".lock"


class RunDirError(UserError, RuntimeError):
    """A run directory that another process is training in."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _owner(text: str) -> tuple[int | None, str]:
    """(pid, description) from a lock file's text ``pid <n> since <time>``."""
    parts = text.split()
    pid = int(parts[1]) if len(parts) >= 2 and parts[0] == "pid" and parts[1].isdigit() else None
    return pid, text.strip() or "an unknown process"


@contextmanager
def locked_run_dir(run_dir: Path, warn=lambda line: print(line, file=sys.stderr, flush=True)) -> Iterator[None]:
    """Create ``run_dir`` if needed and hold its lock for the ``with`` block. A folder it created
    that holds nothing but the lock at the end (a run refused before it wrote anything) is removed."""
    created = not run_dir.exists()
    fd = os.open(writable_folder(run_dir, "run directory") / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, owner = _owner(f.read())
            raise RunDirError(f"{run_dir}: another protjepa train is writing this run ({owner}); "
                              "wait for it to finish, or pass another --run-dir") from None
        pid, owner = _owner(f.read())
        if pid is not None and pid != os.getpid():
            state = "no longer running" if not _alive(pid) else "running, but not holding the lock"
            warn(f"protjepa: warning: {run_dir}: took over the lock of pid {pid} ({state})")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()  # released: an empty file is no one's lock (the flock goes with the close)
            if created and os.listdir(run_dir) == [LOCK_NAME]:
                with suppress(OSError):  # another train may be creating its lock there right now: leave it
                    os.unlink(run_dir / LOCK_NAME)
                    os.rmdir(run_dir)
