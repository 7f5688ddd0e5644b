"""What protjepa reads from disk: regular files, in lines of bounded length.

A named pipe (FIFO) blocks whoever opens it until a writer comes, and a device such as
``/dev/zero`` never ends: a path to read that exists but is not a regular file (a symbolic
link to one is) is refused in one line, before it is opened. Lines are read at most a limit's
worth of characters at a time, so a file without line breaks is refused at its line instead of
filling the memory. The caller gives the error type, as :mod:`protjepa.yamlio` takes it.
"""
from __future__ import annotations

import filecmp
import os
import stat
from typing import Iterator, TextIO

# The longest protein known (titin) has about 36,000 residues; a record ten times longer than
# any protein's is a damaged or a wrong file.
MAX_RESIDUES = 100_000
WHY_LIMIT = ("longer than any protein: a damaged or wrong file? (a recipe's data.max_residues and a task spec's "
             "max_residues raise the limit)")

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def not_regular(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists and is not a regular file (told without opening it), else None."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None  # missing or unreachable: opening it says so
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def check_regular(path: str | os.PathLike, error: type[Exception], what: str) -> None:
    """Raise ``error`` in one line when ``path`` exists and is not a regular file; ``what``: the file's role."""
    kind = not_regular(path)
    if kind is not None:
        raise error(f"{path}: {kind}, not a regular file: a {what} must be one (a pipe would block its reader, a "
                    "device never end)")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two existing files are one (a link, another spelling) or hold the same bytes (a copy)."""
    return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)


def bounded_lines(handle: TextIO, limit: int, path: str | os.PathLike, error: type[Exception],
                  why: str = WHY_LIMIT) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) of a text handle; a line of more than ``limit`` characters (its line
    break aside) raises ``error`` as ``path:line: ...`` after at most ``limit`` + 2 characters were read."""
    number = 0
    while True:
        line = handle.readline(limit + 2)  # a whole line of ``limit`` characters and its \r\n
        if not line:
            return
        number += 1
        if len(line.rstrip("\r\n")) > limit:
            raise error(f"{path}:{number}: a line of more than {limit:,} characters, {why}")
        yield number, line
