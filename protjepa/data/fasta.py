"""A streaming FASTA reader that refuses malformed input with ``file:line: what``.

Plain or gzip files (told apart by their magic bytes, not their name), one record at a
time, multi-line sequences joined, lowercase letters upper-cased, blank lines ignored, a UTF-8
byte-order mark skipped. Only regular files are opened, and a line or a record of more than
``max_residues`` characters (:data:`protjepa.files.MAX_RESIDUES` unless given) is refused at
its line, so neither a named pipe nor a file without line breaks hangs or fills the memory.
Letters outside the alphabet are an error, or (``unknown_letters="x"``) become ``X``
and are counted per letter in :attr:`FastaReader.replaced`, never skipped silently.
"""
from __future__ import annotations

import gzip
import io
import logging
import os
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Literal, NamedTuple

from protjepa.alphabet import ESM_ALPHABET, Alphabet
from protjepa.errors import UserError
from protjepa.files import MAX_RESIDUES, WHY_LIMIT, bounded_lines, check_regular

log = logging.getLogger(__name__)

UnknownLetters = Literal["error", "x"]
GZIP_MAGIC = b"\x1f\x8b"


class FastaError(UserError, ValueError):
    """Malformed or unreadable FASTA; the message names the file and the line."""


class FastaRecord(NamedTuple):
    id: str  # first word of the header
    description: str  # the rest of the header ("" when there is none)
    sequence: str  # upper-case residue letters, all lines joined
    line: int  # 1-based line number of the header


def residue_pattern(alphabet: Alphabet) -> re.Pattern:
    """Matches one character that is NOT a residue letter of ``alphabet`` (upper case)."""
    letters = "".join(t for t in alphabet.tokens if len(t) == 1)
    return re.compile(f"[^{re.escape(letters)}]")


def clean_letters(text: str, policy: UnknownLetters, where: str, pattern: re.Pattern) -> tuple[str, list[str]]:
    """Upper-case ``text`` and apply the unknown-letter policy.

    Returns the cleaned text and the letters replaced by X (none under ``error``, which
    raises ``FastaError("<where>:<column>: unknown residue letter 'J'")`` instead).
    """
    text = text.upper()
    bad = pattern.search(text)
    if bad is None:
        return text, []
    if policy == "error":
        raise FastaError(
            f"{where}:{bad.start() + 1}: unknown residue letter {bad.group()!r} "
            f"(unknown_letters: x maps such letters to X)"
        )
    return pattern.sub("X", text), pattern.findall(text)


def open_text(path: str | os.PathLike, what: str = "FASTA file") -> io.TextIOBase:
    """Open plain or gzip text by magic bytes, a UTF-8 byte-order mark skipped; a missing file or one
    that is not a regular file (``what``: its role, in the error) is a one-line FastaError."""
    path = Path(path)
    check_regular(path, FastaError, what)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise FastaError(f"{path}: no such FASTA file") from None
    except OSError as exc:
        raise FastaError(f"{path}: cannot read: {exc.strerror}") from None
    if raw.peek(2)[:2] == GZIP_MAGIC:
        raw = gzip.GzipFile(fileobj=raw)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace")


def check_gzip_complete(path: str | os.PathLike) -> None:
    """Read a gzip file to its end, where gzip checks the trailer (CRC-32 and length): a file cut
    short or damaged is a one-line FastaError now, not when a reader reaches the damage. Plain
    files pass. zlib releases the GIL, so this can run in a thread beside other work."""
    with open_text(path) as text:
        raw = text.buffer
        if not isinstance(raw, gzip.GzipFile):
            return
        try:
            while raw.read(1 << 22):
                pass
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise FastaError(f"{path}: corrupt or truncated gzip file ({exc})") from None


def fasta_entries(path: str | os.PathLike,
                  max_residues: int = MAX_RESIDUES) -> Iterator[tuple[str, list[tuple[int, str]], int]]:
    """(header after '>', its body lines as (line number, text without whitespace), header line)
    per record; a line or a record body of more than ``max_residues`` characters is refused. Letters
    are not checked: FastaReader checks residues, and probe tasks read label files (digits, class
    letters) in FASTA form through here too."""
    path = Path(path)
    lineno = 0
    try:
        with open_text(path) as lines:
            header: str | None = None
            start, body, length = 0, [], 0
            for lineno, line in bounded_lines(lines, max_residues, path, FastaError):
                if line.startswith(">"):
                    if header is not None:
                        yield header, body, start
                    header, start, body, length = line[1:].strip(), lineno, [], 0
                    continue
                text = "".join(line.split())
                if not text:
                    continue
                if header is None:
                    raise FastaError(f"{path}:{lineno}: sequence data before the first '>' header")
                length += len(text)
                if length > max_residues:
                    raise FastaError(f"{path}:{start}: a record of more than {max_residues:,} residues, {WHY_LIMIT}")
                body.append((lineno, text))
            if header is not None:
                yield header, body, start
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise FastaError(f"{path}:{lineno + 1}: corrupt or truncated gzip data ({exc})") from None


class FastaReader:
    """Iterate ``FastaRecord``s from ``path``; each iteration re-reads the file from the start.

    After (or during) an iteration, ``records`` and ``residues`` count what was read and
    ``replaced`` counts, per letter, the unknown letters mapped to X (``unknown_letters="x"``);
    a summary of those is logged as a warning when the file ends.
    """

    def __init__(self, path: str | os.PathLike, unknown_letters: UnknownLetters = "error",
                 alphabet: Alphabet = ESM_ALPHABET, max_residues: int = MAX_RESIDUES):
        if unknown_letters not in ("error", "x"):
            raise ValueError(f"unknown_letters must be 'error' or 'x', got {unknown_letters!r}")
        self.path = Path(path)
        self.unknown_letters = unknown_letters
        self.max_residues = max_residues
        self._pattern = residue_pattern(alphabet)
        self.records = 0
        self.residues = 0
        self.replaced: Counter = Counter()

    def __iter__(self) -> Iterator[FastaRecord]:
        self.records, self.residues, self.replaced = 0, 0, Counter()
        for header, body, lineno in fasta_entries(self.path, self.max_residues):
            words = header.split(maxsplit=1)
            if not words:
                raise FastaError(f"{self.path}:{lineno}: header with no id")
            parts = []
            for line, text in body:
                text, replaced = clean_letters(text, self.unknown_letters, f"{self.path}:{line}", self._pattern)
                self.replaced.update(replaced)
                parts.append(text)
            yield self._record((words[0], words[1].strip() if len(words) > 1 else "", lineno), parts)
        if not self.records:
            raise FastaError(f"{self.path}: no FASTA records (empty file)")
        if self.replaced:
            total = sum(self.replaced.values())
            letters = ", ".join(f"{k!r} x{v}" for k, v in self.replaced.most_common())
            log.warning("%s: %d unknown residue letters mapped to X (%s)", self.path, total, letters)

    def _record(self, header: tuple[str, str, int], parts: list[str]) -> FastaRecord:
        seq_id, description, lineno = header
        sequence = "".join(parts)
        if not sequence:
            raise FastaError(f"{self.path}:{lineno}: record {seq_id!r} has no sequence")
        self.records += 1
        self.residues += len(sequence)
        return FastaRecord(seq_id, description, sequence, lineno)


def write_fasta(path: str | os.PathLike, records: Iterable[tuple[str, str]], width: int = 0) -> Path:
    """Write ``(header, sequence)`` pairs; gzip when the name ends in ``.gz``; ``width`` > 0 wraps lines."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as out:
        for header, sequence in records:
            out.write(f">{header}\n")
            step = width or max(len(sequence), 1)
            for start in range(0, len(sequence), step):
                out.write(sequence[start:start + step] + "\n")
    return path
