"""Probe sequences that the encoder may have seen in pretraining.

Exact matches against the pretraining corpus (digests of its sequences, held in memory),
and, when Debian's ``mmseqs`` (package mmseqs2) is on PATH, sequences above an identity
threshold to any corpus sequence (``mmseqs easy-search``, at least 80% of the probe
sequence aligned). Without mmseqs the identity check is skipped with a note.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from protjepa.data.corpus import data_files
from protjepa.data.fasta import FastaReader, write_fasta
from protjepa.errors import UserError
from protjepa.provenance import recorded_corpus
from protjepa.recipe import DataConfig
from protjepa.yamlio import YamlLines, located_first_error, read_yaml

MMSEQS_COVERAGE = 0.8


class LeakageError(UserError, RuntimeError):
    """The corpus or the identity search failed."""


def run_corpus(run_dir: Path, data_root: Path) -> list[Path]:
    """The pretraining FASTA files of a run (train, and valid when given): as the run recorded them
    (relative to the data root, digests checked), or for a run without that record, its recipe's
    files under ``data_root``."""
    try:
        recorded = recorded_corpus(run_dir, data_root)
    except UserError as exc:
        raise LeakageError(f"{exc}: pass --corpus FASTA") from None
    if recorded is not None:
        return recorded
    raw, text = read_yaml(run_dir / "recipe.yaml", LeakageError, "run recipe")
    try:
        data = DataConfig.model_validate((raw.get("data") if isinstance(raw, dict) else None) or {})
    except ValidationError as exc:
        raise LeakageError(located_first_error(exc, str(run_dir / "recipe.yaml"), YamlLines(text), ("data",))) \
            from None
    return list(data_files(data, data.root or data_root).values())  # the recipe's root, if it names one


def _digest(sequence: str) -> bytes:
    return hashlib.blake2b(sequence.encode(), digest_size=16).digest()


class Corpus:
    """The pretraining FASTA files; their sequence digests are read on first use."""

    def __init__(self, paths: list[str | Path]):
        self.paths = [Path(p) for p in paths]
        self._digests: set[bytes] | None = None

    @property
    def digests(self) -> set[bytes]:
        if self._digests is None:
            self._digests = {_digest(r.sequence) for p in self.paths for r in FastaReader(p, unknown_letters="x")}
        return self._digests

    def exact(self, sequences: list[str]) -> np.ndarray:
        """True where a probe sequence occurs verbatim in the corpus."""
        return np.array([_digest(s) in self.digests for s in sequences], dtype=bool)

    def similar(self, sequences: list[str], min_identity: float, threads: int = 2) -> np.ndarray | None:
        """True where mmseqs finds a corpus hit of ``min_identity`` or more; None without mmseqs."""
        mmseqs = shutil.which("mmseqs")
        if mmseqs is None:
            return None
        found = np.zeros(len(sequences), dtype=bool)
        with tempfile.TemporaryDirectory(prefix="protjepa-mmseqs-") as tmp:
            query = write_fasta(Path(tmp) / "probe.fasta", ((str(i), s) for i, s in enumerate(sequences)))
            hits = Path(tmp) / "hits.m8"
            for target in self.paths:  # easy-search takes one target file
                command = [mmseqs, "easy-search", str(query), str(target), str(hits), str(Path(tmp) / "work"),
                           "--min-seq-id", str(min_identity), "-c", str(MMSEQS_COVERAGE), "--cov-mode", "2",
                           "--format-output", "query,target,fident", "--threads", str(threads), "-v", "1"]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise LeakageError(f"mmseqs easy-search on {target} failed (exit {done.returncode}): {tail[0]}")
                for line in hits.read_text().splitlines():
                    query_id, _, identity = line.split("\t")[:3]
                    if float(identity) >= min_identity:
                        found[int(query_id)] = True
        return found
